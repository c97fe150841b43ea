"""Decode and prompt speed of grok-edge vs llama.cpp (llama-cpp-python) on the same Grok-shaped GGUF.

    python bench/decode.py [--threads 2] [--presets q4_k_m,q8_0] [--workdir /tmp/grok-edge-bench]

Builds (once, cached in --workdir) a synthetic Grok-shaped checkpoint with ``grok-edge make-synthetic``
(``--size medium`` with --layers layers: d_model 2048, 8 experts top-2, vocab 131072) and converts it
with ``grok-edge convert --preset P`` for each preset. Then, per file, with the same thread count:
prompt processing of a --prompt-token prompt and --decode single-token steps, median of --reps runs,
for grok-edge (edge.Model) and llama.cpp. Prints tok/s, the ratio to llama.cpp, the bytes of weights
one decoded token touches (dense tensors + n_expert_used/n_expert of the expert tensors), the
implied GB/s, and its fraction of the machine's read bandwidth measured here (numpy, same threads).
Without edge.Model (engine not built yet) it reports the kernels' matvec GB/s over the file instead.
"""

from __future__ import annotations

import os

# One BLAS thread per Python thread: OpenBLAS's own workers (used by the read-bandwidth probe's dot)
# would otherwise keep spinning on the cores the engines are then measured on.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from gguf import GGUFReader
from membw import read_bandwidth  # bench/membw.py (the script directory is on sys.path)

TOKENIZER = Path("/work/shared/grok-1/tokenizer.model")


def grok_edge(*args: str) -> None:
    cmd = [sys.executable, "-m", "edge.cli", *args]
    print("$", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True)


def build_files(workdir: Path, presets: list[str], layers: int, tokenizer: Path) -> dict[str, Path]:
    workdir.mkdir(parents=True, exist_ok=True)
    ckpt = workdir / f"medium-{layers}l" / "ckpt-0"
    done = ckpt.parent / "ckpt.done"
    if not done.exists():
        grok_edge("make-synthetic", "--size", "medium", "--n-layers", str(layers), "--quiet", str(ckpt))
        done.touch()
    files = {}
    for preset in presets:
        out = ckpt.parent / f"grok-medium-{layers}l-{preset}.gguf"
        if not out.exists():
            grok_edge("convert", str(ckpt), "--tokenizer", str(tokenizer), "--preset", preset, "-o", str(out))
        files[preset] = out
    return files


def bytes_per_token(path: Path) -> tuple[int, int]:
    """(bytes of weights one decoded token reads, file size)."""
    reader = GGUFReader(str(path))
    names = {t.name for t in reader.tensors}
    n_expert = int(reader.fields["grok.expert_count"].parts[-1][0])
    n_used = int(reader.fields["grok.expert_used_count"].parts[-1][0])
    total = 0
    for t in reader.tensors:
        nbytes = int(t.n_bytes)
        if "_exps" in t.name:
            total += nbytes * n_used // n_expert
        elif t.name == "token_embd.weight":
            # one row for the lookup; the whole matrix when it is also the output projection
            total += nbytes if "output.weight" not in names else nbytes // int(t.shape[-1])
        else:
            total += nbytes
    return total, path.stat().st_size


def cpu_seconds() -> float:
    """CPU time of this process (all threads): with other jobs on the machine, tokens per CPU-second
    compare engines where wall time cannot (with 1 thread; with more, spin-waiting counts too)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


Timing = tuple[float, float, float, float]  # prompt tok/s, decode tok/s, prompt tok/cpu-s, decode tok/cpu-s


def time_edge(path: Path, threads: int, prompt: list[int], n_decode: int, reps: int) -> Timing:
    from edge.model import Model

    pp, tg, ppc, tgc = [], [], [], []
    with Model(path, n_threads=threads, n_ctx=len(prompt) + n_decode + 8, n_batch=len(prompt)) as m:
        for _ in range(reps):
            m.reset()
            t0, c0 = time.perf_counter(), cpu_seconds()
            logits = m.eval(prompt)
            pp.append(len(prompt) / (time.perf_counter() - t0))
            ppc.append(len(prompt) / (cpu_seconds() - c0))
            tok = int(np.argmax(logits))
            t0, c0 = time.perf_counter(), cpu_seconds()
            for _ in range(n_decode):
                tok = int(np.argmax(m.eval([tok])))
            tg.append(n_decode / (time.perf_counter() - t0))
            tgc.append(n_decode / (cpu_seconds() - c0))
    return statistics.median(pp), statistics.median(tg), statistics.median(ppc), statistics.median(tgc)


def time_llama(path: Path, threads: int, prompt: list[int], n_decode: int, reps: int) -> Timing:
    from llama_cpp import Llama

    llm = Llama(
        model_path=str(path),
        n_threads=threads,
        n_threads_batch=threads,
        n_ctx=len(prompt) + n_decode + 8,
        n_batch=len(prompt) + n_decode + 8,  # llama-cpp-python keeps n_batch rows of scores
        verbose=False,
    )
    pp, tg, ppc, tgc = [], [], [], []
    try:
        for _ in range(reps):
            llm.reset()
            t0, c0 = time.perf_counter(), cpu_seconds()
            llm.eval(prompt)
            pp.append(len(prompt) / (time.perf_counter() - t0))
            ppc.append(len(prompt) / (cpu_seconds() - c0))
            tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            t0, c0 = time.perf_counter(), cpu_seconds()
            for _ in range(n_decode):
                llm.eval([tok])
                tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            tg.append(n_decode / (time.perf_counter() - t0))
            tgc.append(n_decode / (cpu_seconds() - c0))
    finally:
        llm.close()
    return statistics.median(pp), statistics.median(tg), statistics.median(ppc), statistics.median(tgc)


def kernel_matvec_gbs(path: Path, threads: int, reps: int) -> float:
    """Fallback without edge.Model: matvec over every 2-D/3-D matrix of the file, GB/s."""
    from edge.kernels import ThreadPool, matmul

    reader = GGUFReader(str(path))
    mats = [t for t in reader.tensors if len(t.shape) >= 2 and t.name != "token_embd.weight"]
    total = sum(int(t.n_bytes) for t in mats)
    with ThreadPool(threads) as pool:
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            for t in mats:
                n_cols = int(t.shape[0])
                n_rows = int(np.prod(t.shape[1:]))
                x = np.ones(n_cols, np.float32)
                matmul(t.data, int(t.tensor_type), n_rows, n_cols, x, pool=pool)
            best = min(best, time.perf_counter() - t0)
    return total / best / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--presets", default="q4_k_m,q8_0")
    ap.add_argument("--layers", type=int, default=6, help="layers of the medium synthetic model (6: ~2.6 B)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/grok-edge-bench"))
    ap.add_argument("--tokenizer", type=Path, default=TOKENIZER)
    ap.add_argument("--prompt", type=int, default=64, help="prompt tokens")
    ap.add_argument("--decode", type=int, default=32, help="decoded tokens")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--skip-llama", action="store_true")
    args = ap.parse_args()

    files = build_files(args.workdir, args.presets.split(","), args.layers, args.tokenizer)
    bw = read_bandwidth(args.threads)
    print(f"read bandwidth, {args.threads} threads (numpy dot over 1 GiB): {bw:.1f} GB/s")
    rng = np.random.default_rng(0)
    prompt = [int(t) for t in rng.integers(1000, 100000, size=args.prompt)]
    try:
        import edge.model  # noqa: F401

        have_engine = True
    except ImportError:
        have_engine = False

    for path in files.values():
        per_tok, size = bytes_per_token(path)
        print(
            f"\n{path.name}: {size / 2**30:.2f} GiB, {per_tok / 2**20:.0f} MiB of weights per decoded token"
        )
        if not have_engine:
            gbs = kernel_matvec_gbs(path, args.threads, args.reps)
            print(
                f"  grok-edge kernels matvec over the file: {gbs:.1f} GB/s ({gbs / bw:.0%} of read bandwidth)"
            )
            continue
        print(
            f"  {'':10} {'prompt tok/s':>12} {'decode tok/s':>12} {'decode GB/s':>11} {'of bw':>6}"
            f" {'prompt tok/cpu-s':>16} {'decode tok/cpu-s':>16}"
        )
        runners = {"grok-edge": time_edge} | ({} if args.skip_llama else {"llama.cpp": time_llama})
        results = {}
        for name, runner in runners.items():
            pp, tg, ppc, tgc = results[name] = runner(path, args.threads, prompt, args.decode, args.reps)
            gbs = tg * per_tok / 1e9
            print(
                f"  {name:10} {pp:12.1f} {tg:12.2f} {gbs:11.1f} {gbs / bw:6.0%} {ppc:16.1f} {tgc:16.2f}",
                flush=True,
            )
        if "llama.cpp" in results:
            (pp_e, tg_e, ppc_e, tgc_e), (pp_l, tg_l, ppc_l, tgc_l) = (
                results["grok-edge"],
                results["llama.cpp"],
            )
            print(
                f"  ratio grok-edge / llama.cpp: prompt {pp_e / pp_l:.2f}x, decode {tg_e / tg_l:.2f}x"
                f" (per CPU-second: prompt {ppc_e / ppc_l:.2f}x, decode {tgc_e / tgc_l:.2f}x)"
            )


if __name__ == "__main__":
    main()

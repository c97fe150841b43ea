"""Decode and prompt speed of grok-edge vs llama.cpp (llama-cpp-python) on the same Grok-shaped GGUF.

    python bench/decode.py [--threads 2] [--presets q4_k_m,q8_0] [--workdir /tmp/grok-edge-bench]

Builds (once, cached in --workdir) a synthetic Grok-shaped checkpoint with ``grok-edge make-synthetic``
(``--size medium`` with --layers layers: d_model 2048, 8 experts top-2, vocab 131072) and converts it
with ``grok-edge convert --preset P`` for each preset. Then, per file, with the same thread count:
prompt processing of a --prompt-token prompt and --decode single-token steps, median of --reps runs,
for grok-edge (edge.Model) and llama.cpp. Prints tok/s, the ratio to llama.cpp, the bytes of weights
one decoded token touches (dense tensors + n_expert_used/n_expert of the expert tensors), the
implied GB/s, and its fraction of the machine's read bandwidth measured here (numpy, same threads).

Each file starts from a cold page cache (posix_fadvise DONTNEED, as after a reboot), so the engines read
it through their own mappings: grok-edge's (MADV_HUGEPAGE) has the kernel read it in 2 MiB folios, which
any mapping of the file then gets with 2 MiB pages (llama.cpp's too: both engines map the same page
cache); the share of each engine's mapping in 2 MiB pages is printed.

The read bandwidth of a shared VM moves (here between about 25 and 75 GB/s for two threads, from one
minute to the next, as the probes printed between the runs show), so the fraction is taken per decoded
token against a probe just before and just after that token: after the timed runs, --paired more
single-token steps per engine, the engines taking turns token by token, each token between two short
probes (256 MiB, best of 4 reads with the threads and 4 with one: best of 2 and 2 read 4 % lower than
1 GiB probes here), the fraction being the token's GB/s over the larger of its two probes; the median
over the tokens is printed, and the decode ratio of the interleaved tokens (the median over the pairs
of tokens with the same index, a probe apart). A plain read of the token's bytes (numpy dot, the same
threads) takes its turn as a third "engine": its fraction is the ceiling of the method here (a single
read against the best of the 8 beside it: below 100 % wherever the bandwidth jitters from one read to
the next). The tokens whose probes both read at most, or both more than, the median probe are also
shown apart. The engines' timed runs alternate too, so both meet the same machine: the ratios
printed for them are the medians over the reps of grok-edge's run against the llama.cpp run right
after it. The VM's steal time in those runs (/proc/stat: CPU time the hypervisor gave to other
guests) is printed too: where it is large, a run measured the host more than the engine.

With --json PATH the figures are also written to PATH (one run, per preset: the engines' median
speeds, the ratios, the fraction of the read bandwidth, the bytes per token), with the command, the
date and the machine; bench/plot.py draws such a file.
"""

from __future__ import annotations

import os

# One BLAS thread per Python thread: OpenBLAS's own workers (used by the read-bandwidth probe's dot)
# would otherwise keep spinning on the cores the engines are then measured on.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import datetime
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np
from gguf import GGUFReader
from membw import ReadBandwidth, read_bandwidth  # bench/membw.py (the script directory is on sys.path)

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


def drop_page_cache(path: Path) -> None:
    """Evict the file's pages from the page cache (where no process maps them)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def huge_mapped(path: Path) -> list[float]:
    """Per mapping of the file in this process (in the order of their addresses), the fraction of its
    resident bytes mapped with 2 MiB pages (FilePmdMapped / Rss in /proc/self/smaps)."""
    out, current = [], None
    try:
        lines = Path("/proc/self/smaps").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        head = line.split()
        if "-" in head[0] and not head[0].endswith(":"):  # a mapping's first line
            current = {"rss": 0, "pmd": 0} if len(head) >= 6 and head[5] == str(path) else None
            if current is not None:
                out.append(current)
        elif current is not None and head[0] in ("Rss:", "FilePmdMapped:"):
            current["rss" if head[0] == "Rss:" else "pmd"] = int(head[1])
    return [m["pmd"] / m["rss"] for m in out if m["rss"]]


def cpu_seconds() -> float:
    """CPU time of this process (all threads): with other jobs on the machine, tokens per CPU-second
    compare engines where wall time cannot (with 1 thread; with more, spin-waiting counts too)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_steal() -> tuple[int, int]:
    """(steal, total) jiffies of all CPUs from /proc/stat: time the hypervisor gave the VM's CPUs to others
    ((0, 0) where there is no /proc/stat)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return 0, 0
    return fields[7], sum(fields)


def steal_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else 0.0


# prompt tok/s, decode tok/s, prompt tok/cpu-s, decode tok/cpu-s, steal share in the prompt, in the decode
Timing = tuple[float, float, float, float, float, float]


class Runner(Protocol):
    def reset(self) -> None: ...
    def last_logits(self, tokens: list[int]) -> np.ndarray: ...
    def close(self) -> None: ...


def timed_run(runner: Runner, prompt: list[int], n_decode: int) -> Timing:
    """One prompt evaluation, then n_decode greedy single-token steps; the same steps for either engine."""
    reset, last_logits = runner.reset, runner.last_logits
    reset()
    t0, c0, s0 = time.perf_counter(), cpu_seconds(), cpu_steal()
    tok = int(np.argmax(last_logits(prompt)))
    pp, ppc = len(prompt) / (time.perf_counter() - t0), len(prompt) / (cpu_seconds() - c0)
    pps = steal_share(s0, s1 := cpu_steal())
    t0, c0 = time.perf_counter(), cpu_seconds()
    for _ in range(n_decode):
        tok = int(np.argmax(last_logits([tok])))
    tg, tgc = n_decode / (time.perf_counter() - t0), n_decode / max(cpu_seconds() - c0, 1e-9)
    return pp, tg, ppc, tgc, pps, steal_share(s1, cpu_steal())


class Paired(NamedTuple):
    """One engine's tokens of the paired phase: per token its time, its GB/s over the larger of the two
    probes beside it, and those probes."""

    times: list[float]
    fractions: list[float]
    probes: list[float]


def paired_steps(
    runners: dict[str, Runner], prompt: list[int], n_tokens: int, probe: ReadBandwidth, per_tok: int
) -> dict[str, Paired]:
    """The engines' greedy single-token steps (as in timed_run) interleaved, one token of each in turn,
    every token between two read bandwidth probes: tokens of the two engines with the same index ran
    a probe apart, on the same machine."""
    toks = {}
    for name, runner in runners.items():
        runner.reset()
        toks[name] = int(np.argmax(runner.last_logits(prompt)))
    out = {name: Paired([], [], []) for name in runners}
    before = probe(4)
    for _ in range(n_tokens):
        for name, runner in runners.items():
            t0 = time.perf_counter()
            toks[name] = int(np.argmax(runner.last_logits([toks[name]])))
            dt = time.perf_counter() - t0
            after = probe(4)
            rec = out[name]
            rec.times.append(dt)
            rec.fractions.append(per_tok / dt / 1e9 / max(before, after))
            rec.probes.extend((before, after))
            before = after
    return out


def by_host_state(
    times: list[float], fractions: list[float], token_probes: list[float], split: float, per_tok: int
) -> str:
    """The tokens whose two probes both read at most `split` GB/s (the paired phase's median probe) and
    those whose two probes both read more, apart: this VM's bandwidth jumps between levels, and where it
    exceeds what the kernels compute per second, decode is bound by compute, not memory."""
    parts = []
    for label, keep in (("<=", lambda a, b: max(a, b) <= split), (">", lambda a, b: min(a, b) > split)):
        sel = [k for k in range(len(times)) if keep(token_probes[2 * k], token_probes[2 * k + 1])]
        if sel:
            gbs = statistics.median(per_tok / times[k] / 1e9 for k in sel)
            frac = statistics.median(fractions[k] for k in sel)
            parts.append(
                f"{len(sel)} tokens with both probes {label} {split:.1f} GB/s: {gbs:.1f} GB/s, {frac:.0%}"
            )
        else:
            parts.append(f"no token with both probes {label} {split:.1f} GB/s")
    return "; ".join(parts)


class ReadRunner:
    """Not an engine: a plain read of as many bytes as a decoded token touches (numpy dot, the probe's
    threads), taken as a token in the paired phase. Its fraction is what the per-token method gives a
    pure read: the ceiling of any engine's (a single read against the best of 8 beside it)."""

    def __init__(self, nbytes: int, threads: int) -> None:
        self.read = ReadBandwidth(threads, nbytes)

    def reset(self) -> None:
        pass

    def last_logits(self, tokens: list[int]) -> np.ndarray:
        self.read.once()
        return np.zeros(1, dtype=np.float32)

    def close(self) -> None:
        pass


class EdgeRunner:
    """grok-edge (edge.Model)."""

    def __init__(self, path: Path, threads: int, n_ctx: int, n_batch: int) -> None:
        from edge.model import Model

        self.model = Model(path, n_threads=threads, n_ctx=n_ctx, n_batch=n_batch)

    def reset(self) -> None:
        self.model.reset()

    def last_logits(self, tokens: list[int]) -> np.ndarray:
        return self.model.eval(tokens)

    def close(self) -> None:
        self.model.close()


class LlamaRunner:
    """llama.cpp through llama-cpp-python."""

    def __init__(self, path: Path, threads: int, n_ctx: int, n_batch: int) -> None:
        from llama_cpp import Llama

        self.llm = Llama(
            model_path=str(path),
            n_threads=threads,
            n_threads_batch=threads,
            n_ctx=n_ctx,
            n_batch=n_ctx,  # llama-cpp-python keeps n_batch rows of scores
            verbose=False,
        )

    def reset(self) -> None:
        self.llm.reset()

    def last_logits(self, tokens: list[int]) -> np.ndarray:
        self.llm.eval(tokens)
        return self.llm.scores[self.llm.n_tokens - 1]

    def close(self) -> None:
        self.llm.close()


def machine_description(threads: int) -> str:
    """The CPU model, its core count, the kernel path grok-edge picks on it, and the thread count."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from edge.kernels import isa_supported

    isa = next((name for name in ("avx512", "avx2", "neon") if isa_supported(name)), "scalar")
    return f"{model}, {os.cpu_count()} logical CPUs, {isa} kernels, {threads} threads"


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
    ap.add_argument(
        "--paired", type=int, default=48, help="decoded tokens between bandwidth probes, per engine"
    )
    ap.add_argument("--skip-llama", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = ap.parse_args()
    record: dict[str, object] = {}

    files = build_files(args.workdir, args.presets.split(","), args.layers, args.tokenizer)
    rng = np.random.default_rng(0)
    prompt = [int(t) for t in rng.integers(1000, 100000, size=args.prompt)]
    for preset, path in files.items():
        per_tok, size = bytes_per_token(path)
        print(
            f"\n{path.name}: {size / 2**30:.2f} GiB, {per_tok / 2**20:.0f} MiB of weights per decoded token"
        )
        n_ctx = args.prompt + max(args.decode, args.paired) + 8
        drop_page_cache(path)
        kinds = {"grok-edge": EdgeRunner} | ({} if args.skip_llama else {"llama.cpp": LlamaRunner})
        runners: dict[str, Runner] = {
            name: kind(path, args.threads, n_ctx, args.prompt) for name, kind in kinds.items()
        }
        # Timed runs interleaved (edge, llama, edge, llama, ...) with a bandwidth probe between each two, so
        # both engines meet the same machine; then the per-token bandwidth fractions (module docstring).
        results: dict[str, list[Timing]] = {name: [] for name in runners}
        probes = [read_bandwidth(args.threads)]
        paired: dict[str, Paired] = {}
        try:
            for runner in runners.values():
                timed_run(runner, prompt[:8], 2)  # warm up: weights paged in, caches allocated
                timed_run(runner, prompt, 0)  # every expert's weights
            huge = huge_mapped(path)
            for _ in range(args.reps):
                for name, runner in runners.items():
                    results[name].append(timed_run(runner, prompt, args.decode))
                    probes.append(read_bandwidth(args.threads))
            short_probe = ReadBandwidth(args.threads, 256 << 20)
            read_token: dict[str, Runner] = {"plain read": ReadRunner(per_tok, args.threads)}
            paired = paired_steps(runners | read_token, prompt, args.paired, short_probe, per_tok)
        finally:
            for runner in runners.values():
                runner.close()
        print(
            "  resident share of the file in 2 MiB pages, per mapping of it here (one per engine): "
            + " ".join(f"{h:.0%}" for h in huge)
        )
        print(
            f"  read bandwidth probes between the timed runs, {args.threads} threads (numpy dot over 1 GiB),"
            " GB/s: " + " ".join(f"{p:.1f}" for p in probes)
        )
        print(
            f"  {'':10} {'prompt tok/s':>12} {'decode tok/s':>12} {'decode GB/s':>11} {'of bw':>6}"
            f" {'prompt tok/cpu-s':>16} {'decode tok/cpu-s':>16}"
        )
        med: dict[str, Timing] = {}
        ratios: list[float] = []
        for name, runs in results.items():
            med[name] = tuple(statistics.median([r[k] for r in runs]) for k in range(6))  # type: ignore[assignment]
            pp, tg, ppc, tgc = med[name][:4]
            frac = statistics.median(paired[name].fractions)
            print(
                f"  {name:10} {pp:12.1f} {tg:12.2f} {tg * per_tok / 1e9:11.1f} {frac:6.0%}"
                f" {ppc:16.1f} {tgc:16.2f}",
                flush=True,
            )
        if "llama.cpp" in med:
            # Per rep, grok-edge's run against the llama.cpp run right after it (the bandwidth moves
            # between runs: the ratio of the medians could set runs of different minutes against
            # each other); the median of those ratios.
            pairs = list(zip(results["grok-edge"], results["llama.cpp"], strict=True))
            ratios = [statistics.median([e[k] / ll[k] for e, ll in pairs]) for k in range(4)]
            print(
                f"  ratio grok-edge / llama.cpp, median over the reps of each pair of adjacent runs:"
                f" prompt {ratios[0]:.2f}x, decode {ratios[1]:.2f}x"
                f" (per CPU-second: prompt {ratios[2]:.2f}x, decode {ratios[3]:.2f}x)"
            )
        # A VM's CPUs lose time to other guests (steal): a run that lost much of it measured the host, not
        # the engine (max over the reps, since one bad rep moves a median of ratios little).
        print(
            "  VM steal time during the timed runs (share of all CPUs' time; max over the reps): "
            + "; ".join(
                f"{name} prompt {max(r[4] for r in runs):.0%}, decode {max(r[5] for r in runs):.0%}"
                for name, runs in results.items()
            )
        )
        if "llama.cpp" in paired:
            e, ll = paired["grok-edge"].times, paired["llama.cpp"].times
            per_pair = statistics.median(b / a for a, b in zip(e, ll, strict=True))
            print(
                f"  decode ratio per interleaved token pair: {per_pair:.2f}x (median over {len(e)} pairs"
                " of llama.cpp's token time / grok-edge's, the two a probe apart)"
            )
        split = statistics.median(p for rec in paired.values() for p in rec.probes)
        for name, (times, fractions, token_probes) in paired.items():
            q = statistics.quantiles(fractions, n=4)
            print(
                f"  of bw, {name}: median over {len(fractions)} tokens of the token's GB/s / the larger probe"
                f" beside it: {statistics.median(fractions):.0%} (quartiles {q[0]:.0%} {q[2]:.0%},"
                f" min {min(fractions):.0%}, max {max(fractions):.0%}; probes {min(token_probes):.1f}"
                f"-{max(token_probes):.1f} GB/s)"
            )
            print("    " + by_host_state(times, fractions, token_probes, split, per_tok))
        record[preset] = {
            "file_bytes": size,
            "bytes_per_token": per_tok,
            "ratio_prompt": ratios[0] if ratios else None,
            "ratio_decode": ratios[1] if ratios else None,
            "decode_of_bandwidth": statistics.median(paired["grok-edge"].fractions),
            "engines": {
                name: {
                    "prompt_tok_s": m[0],
                    "decode_tok_s": m[1],
                    "decode_of_bandwidth": statistics.median(paired[name].fractions),
                }
                for name, m in med.items()
            },
            "read_bandwidth_probes_gb_s": probes,
        }
    if args.json:
        out = {
            "command": " ".join(["python", *sys.argv]),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine_description(args.threads),
            "source": "measured by bench/decode.py",
            "runs": [{"presets": record}],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()

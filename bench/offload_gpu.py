"""The CUDA backend's VRAM tier: decode and prompt tokens/s with every weight in VRAM, with gpu_memory
holding the dense part and 25 % of the experts (the rest computed on the CPU, or streamed in for prompts),
and on the CPU alone, in one run, alternating; plus llama.cpp with --n-cpu-moe where a CUDA build of it is
available (LLAMA_BENCH=path/to/llama-bench, or llama-bench on PATH; skipped with a message otherwise).

    python bench/offload_gpu.py [--layers 8] [--prompt 128] [--decode 32] [--rounds 3] [--out result.json]
    python bench/offload_gpu.py --smoke      # tiny shapes: runs on chipStar too (tests/test_cuda_backend)

The file (made once, cached in --workdir): a Grok-shaped synthetic GGUF (bench/offload.py's medium shape:
d_model 2048, 16/4 heads of 128, 8 experts of n_ff 8192, top 2, vocab 131072) with --layers layers, Q8_0
matrices of random quants and F32 norms and routers. Its routing is close to random (a synthetic model):
the worst case for the VRAM cache. Each configuration is one edge.Model created once; the rounds alternate
between them (a prompt of --prompt tokens from an empty cache, then --decode single tokens), and the median
of each is reported, with the ratios to CPU-only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from offload import MEDIUM, make_gguf  # noqa: E402  (the same Grok-shaped file writer)

FULL = MEDIUM
SMOKE = {"d": 256, "nq": 4, "nkv": 2, "hd": 64, "nff": 512, "ne": 8, "vocab": 1024}


def time_round(model: object, prompt: list[int], decode: list[int]) -> tuple[float, float]:
    """(prompt tok/s, decode tok/s) of one round from an empty cache."""
    model.reset()  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    model.eval(prompt)  # type: ignore[attr-defined]
    t1 = time.perf_counter()
    for t in decode:
        model.eval([t])  # type: ignore[attr-defined]
    t2 = time.perf_counter()
    return len(prompt) / (t1 - t0), len(decode) / (t2 - t1)


def llama_cpp(path: Path, n_cpu_moe: int, n_layer: int, prompt: int, decode: int) -> dict[str, object]:
    """llama-bench with all layers on the GPU and the experts of n_cpu_moe layers on the CPU."""
    exe = os.environ.get("LLAMA_BENCH") or shutil.which("llama-bench")
    if not exe:
        return {"skipped": "no llama-bench (set LLAMA_BENCH to a CUDA build of llama.cpp's llama-bench)"}
    cmd = [
        exe,
        "-m",
        str(path),
        "-ngl",
        "99",
        "--n-cpu-moe",
        str(n_cpu_moe),
        "-p",
        str(prompt),
        "-n",
        str(decode),
    ]
    cmd += ["-o", "json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        return {"skipped": f"llama-bench failed ({' '.join(cmd)}): {(done.stdout + done.stderr)[-600:]}"}
    try:
        rows = json.loads(done.stdout)
    except json.JSONDecodeError:
        return {"skipped": f"llama-bench output not JSON: {done.stdout[-400:]}"}
    out: dict[str, object] = {"n_cpu_moe": n_cpu_moe, "of_layers": n_layer}
    for r in rows:
        key = "prompt_tok_s" if r.get("n_prompt", 0) > 0 else "decode_tok_s"
        out[key] = r.get("avg_ts")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--decode", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: the engine's default)")
    ap.add_argument("--workdir", default="/tmp/grok-edge-offload-gpu")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes, 2 layers, few tokens (CI, chipStar)")
    args = ap.parse_args()
    import edge

    shape = SMOKE if args.smoke else FULL
    if args.smoke:
        args.layers, args.prompt, args.decode, args.rounds = 2, 8, 3, 1
    path = make_gguf(
        Path(args.workdir) / f"grok-{'smoke' if args.smoke else 'medium'}-{args.layers}L.gguf",
        args.layers,
        shape,
    )
    rng = np.random.default_rng(7)
    prompt = [int(t) for t in rng.integers(4, shape["vocab"], size=args.prompt)]
    decode = [int(t) for t in rng.integers(4, shape["vocab"], size=args.decode)]
    n_ctx = args.prompt + args.decode + 8
    common = {"n_ctx": n_ctx, "n_threads": args.threads or None}
    if edge.system_info()["cuda_devices"] == 0:
        print("offload_gpu: no CUDA device (the library was built without CUDA or the driver finds none)")
        return 2
    models: dict[str, object] = {}
    models["gpu-all"] = edge.Model(path, device="cuda", **common)
    g = models["gpu-all"].gpu_info()  # type: ignore[attr-defined]
    units = int(g["n_units"])
    if g["n_slots"] < units:
        print(f"offload_gpu: the device holds {g['n_slots']} of {units} experts: gpu-all is itself hybrid")
    quarter = max(1, units // 4)
    budget = g["dense_bytes"] + g["kv_bytes"] + g["state_bytes"] + quarter * g["slot_bytes"]
    models["hybrid-25"] = edge.Model(path, device="cuda", gpu_memory=budget, **common)
    models["cpu"] = edge.Model(path, device="cpu", **common)
    results: dict[str, dict[str, list[float]]] = {k: {"prompt": [], "decode": []} for k in models}
    for _ in range(args.rounds):
        for name, m in models.items():
            p, d = time_round(m, prompt, decode)
            results[name]["prompt"].append(p)
            results[name]["decode"].append(d)
    summary: dict[str, object] = {
        "file": str(path),
        "file_bytes": path.stat().st_size,
        "gpus": edge.system_info()["gpus"],
        "gpu_info": {k: m.gpu_info() for k, m in models.items()},  # type: ignore[attr-defined]
        "threads": models["cpu"].n_threads,  # type: ignore[attr-defined]
        "prompt_tokens": args.prompt,
        "decode_tokens": args.decode,
        "rounds": args.rounds,
    }
    med = {k: {kind: statistics.median(v) for kind, v in r.items()} for k, r in results.items()}
    for k in models:
        summary[k] = {
            "prompt_tok_s": med[k]["prompt"],
            "decode_tok_s": med[k]["decode"],
            "prompt_vs_cpu": med[k]["prompt"] / med["cpu"]["prompt"],
            "decode_vs_cpu": med[k]["decode"] / med["cpu"]["decode"],
            "runs": results[k],
        }
        rp, rd = med[k]["prompt"] / med["cpu"]["prompt"], med[k]["decode"] / med["cpu"]["decode"]
        print(
            f"{k:>10}: prompt {med[k]['prompt']:9.1f} tok/s ({rp:5.2f}x cpu) | "
            f"decode {med[k]['decode']:8.2f} tok/s ({rd:5.2f}x cpu)"
        )
    st = models["hybrid-25"].cache_stats()  # type: ignore[attr-defined]
    summary["hybrid_stats"] = {
        f: getattr(st, f) for f in ("vram_hits", "vram_misses", "experts_gpu", "experts_cpu", "vram_loads")
    }
    print(f"hybrid-25: {quarter} of {units} experts in VRAM; {summary['hybrid_stats']}")
    for m in models.values():
        m.close()  # type: ignore[attr-defined]
    n_cpu_moe = args.layers - max(1, args.layers // 4)  # the experts of 25 % of the layers on the GPU
    summary["llama_cpp"] = (
        {} if args.smoke else llama_cpp(path, n_cpu_moe, args.layers, args.prompt, args.decode)
    )
    if not args.smoke:
        print(f"llama.cpp --n-cpu-moe {n_cpu_moe}: {summary['llama_cpp']}")
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

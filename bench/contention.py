"""Decode speed on a busy desktop: the default thread count against one thread, with and without another
process spinning on one core, on the demo model and the bench's Grok-shaped file.

    python bench/contention.py [--tokens 200,24] [--reps 3] [--workdir /tmp/grok-edge-bench]

Per file, three Models (n_threads None = the engine's default, 1, and one per core: the default before
it accounted for the work per token, for reference) stay open (one mapping of the weights each, one page
cache), and each rep measures them in turn, quiet, then with a spinner (a Python busy loop pinned to the
last core). A measurement is --tokens
single-token evaluations after an 8-token prompt (no sampling: the next id is a fixed function of the
step), timed as a whole; the median over the reps is printed in tok/s. Under contention the goal is
default >= 0.9 x the better of the two thread counts; the ratio printed is that, per rep then median.
The Grok-shaped file is bench/decode.py's (``make-synthetic --size medium`` with --layers layers,
converted at --preset), built in --workdir when absent.

Timings on a shared machine move (±30 %): compare only within one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import edge

SPIN = "while True:\n    pass\n"


def spinner() -> subprocess.Popen[bytes]:
    """A busy process pinned to the last core."""
    last = max(os.sched_getaffinity(0))
    return subprocess.Popen([sys.executable, "-c", SPIN], preexec_fn=lambda: os.sched_setaffinity(0, {last}))


def decode_rate(model: edge.Model, n_tokens: int) -> float:
    """Single-token evaluations per second after an 8-token prompt."""
    model.reset()
    model.eval([(5 + 11 * i) % model.n_vocab for i in range(8)])
    t0 = time.perf_counter()
    for i in range(n_tokens):
        model.eval([(7 + 13 * i) % model.n_vocab])
    return n_tokens / (time.perf_counter() - t0)


def bench_file(name: str, path: Path, n_tokens: int, reps: int) -> float:
    cores = os.cpu_count() or 1
    default = edge.Model(path, n_ctx=n_tokens + 16)
    one = edge.Model(path, n_ctx=n_tokens + 16, n_threads=1)
    every = edge.Model(path, n_ctx=n_tokens + 16, n_threads=cores)  # the old default, for reference
    models = (("default", default), ("1 thread", one), (f"{cores} threads", every))
    size = path.stat().st_size / 2**20
    print(f"\n{name}: {path} ({size:.0f} MiB), default n_threads = {default.n_threads}, "
          f"{os.cpu_count()} cores, {n_tokens} tokens a measurement")  # fmt: skip
    for _, m in models:
        decode_rate(m, 4)  # warm the page cache and the pools
    rates: dict[tuple[str, str], list[float]] = {}
    ratios: list[float] = []
    for rep in range(reps):
        for load in ("quiet", "spinner"):
            proc = spinner() if load == "spinner" else None
            try:
                if proc:
                    time.sleep(0.2)
                got = {label: decode_rate(m, n_tokens) for label, m in models}
            finally:
                if proc:
                    proc.kill()
                    proc.wait()
            for label, r in got.items():
                rates.setdefault((load, label), []).append(r)
            if load == "spinner":
                ratios.append(got["default"] / max(got["default"], got["1 thread"]))
        print(
            f"  rep {rep + 1}: " + ", ".join(f"{k[0]}/{k[1]} {v[-1]:.1f}" for k, v in rates.items()),
            flush=True,
        )
    for (load, label), values in rates.items():
        print(f"  {load:8} {label:9} {statistics.median(values):9.1f} tok/s")
    ratio = statistics.median(ratios)
    per_rep = ", ".join(f"{r:.2f}" for r in ratios)
    print(f"  under contention: default / best = {ratio:.2f} (per rep: {per_rep})"
          f" — goal >= 0.9: {'met' if ratio >= 0.9 else 'NOT met'}")  # fmt: skip
    for _, m in models:
        m.close()
    return ratio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", default="200,24", help="decoded tokens a measurement: demo,grok")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/grok-edge-bench"))
    ap.add_argument(
        "--layers", type=int, default=6, help="layers of the Grok-shaped file (as bench/decode.py)"
    )
    ap.add_argument("--preset", default="q4_k_m")
    ap.add_argument(
        "--grok", type=Path, default=None, help="use this Grok-shaped GGUF instead of building one"
    )
    ap.add_argument("--skip-grok", action="store_true")
    args = ap.parse_args()
    demo_tokens, grok_tokens = (int(x) for x in args.tokens.split(","))

    from edge.commands.demo import convert_preset, default_cache_dir

    results = {
        "demo": bench_file(
            "demo model", convert_preset("q4_k_m", default_cache_dir()), demo_tokens, args.reps
        )
    }
    if not args.skip_grok:
        grok = args.grok
        if grok is None:
            from decode import TOKENIZER, build_files  # bench/decode.py (the script directory is on sys.path)

            grok = build_files(args.workdir, [args.preset], args.layers, TOKENIZER)[args.preset]
        results["grok"] = bench_file("Grok-shaped file", grok, grok_tokens, args.reps)
    print("\nsummary: " + ", ".join(f"{k} {v:.2f}" for k, v in results.items()))


if __name__ == "__main__":
    main()

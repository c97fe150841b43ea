"""Bench the CPU matmul kernels: matrix x vector (decode) in GB/s of weights read, against the
machine's measured read bandwidth ("of bw": a 1 GiB probe taken once) and against a plain read of the
weight matrix's own bytes ("of read(w)": median over the reps of each product between two reads of the
same memory, the larger taken: on a VM other buffers read faster or slower by placement, and the
bandwidth moves from one second to the next), and matrix x matrix (prompt) in GOP/s.

    python bench/matmul.py [--threads 2] [--types Q4_K,Q6_K,Q8_0] [--isas scalar,avx2,avx512]
"""

from __future__ import annotations

import os

# One BLAS thread per Python thread: OpenBLAS's own workers (used by the read-bandwidth probe's dot)
# would otherwise keep spinning on the cores the engines are then measured on.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants as gq
from membw import read_bandwidth, read_of  # bench/membw.py (the script directory is on sys.path)

from edge.kernels import ThreadPool, isa_supported, matmul

# f16 scale fields per block (ggml layouts), set to sane values in the random weights.
F16_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0], T.IQ4_NL: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208], T.IQ4_XS: [0],
}  # fmt: skip


def random_rows(qtype: T, n_rows: int, n_cols: int, rng: np.random.Generator) -> np.ndarray:
    if qtype == T.F32:
        return rng.standard_normal((n_rows, n_cols), dtype=np.float32).view(np.uint8)
    if qtype in (T.F16, T.BF16):
        return rng.integers(0, 1 << 14, size=(n_rows, n_cols), dtype=np.uint16).view(np.uint8)
    block_elems, block_bytes = gq.GGML_QUANT_SIZES[qtype]
    n_blocks = n_rows * n_cols // block_elems
    raw = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    for off in F16_FIELDS[qtype]:
        raw[:, off : off + 2] = np.full(n_blocks, 0.01, np.float16).view(np.uint8).reshape(n_blocks, 2)
    return raw.reshape(n_rows, -1)


def time_best(fn: Callable[[], object], reps: int) -> float:
    fn()  # warm up (page faults, caches)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--types", default="Q4_K,Q6_K,Q8_0,Q4_0,Q5_K,IQ4_XS,F16")
    ap.add_argument("--isas", default="scalar,avx2,avx512")
    ap.add_argument("--cols", type=int, default=6144)
    ap.add_argument(
        "--mib", type=int, default=1024, help="MiB per decode matrix (> L3: this EPYC has a large one)"
    )
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    bw = read_bandwidth(args.threads)
    print(f"read bandwidth ({args.threads} numpy threads, 1 GiB): {bw:.1f} GB/s")
    isas = [i for i in args.isas.split(",") if isa_supported(i)]
    n_cols = args.cols
    with ThreadPool(args.threads) as pool:
        print(
            f"{'type':7} {'isa':7} {'decode GB/s':>11} {'of bw':>6} {'of read(w)':>10} {'prompt GOP/s':>12}"
            f" {'pp/tg cost':>10}"
        )
        for name in args.types.split(","):
            qtype = T[name]
            block_elems, block_bytes = gq.GGML_QUANT_SIZES[qtype]
            row_bytes = n_cols // block_elems * block_bytes
            n_rows = max(1, args.mib * (1 << 20) // row_bytes)
            w = random_rows(qtype, n_rows, n_cols, rng)
            read_w = read_of(w, args.threads)
            x1 = rng.standard_normal((1, n_cols), dtype=np.float32)
            n_pp_rows = 4096
            xp = rng.standard_normal((args.prompt_tokens, n_cols), dtype=np.float32)
            for isa in isas:
                reps = 2 if isa == "scalar" else args.reps
                decode = partial(matmul, w, qtype, n_rows, n_cols, x1, isa=isa, pool=pool)
                t_dec = time_best(decode, reps)
                gbs = n_rows * row_bytes / t_dec / 1e9
                # against a plain read of the same bytes, the two alternating (each product between
                # two reads, the larger taken): the kernel's share of what its memory gives now
                of_w = []
                before = read_w()
                for _ in range(reps):
                    t0 = time.perf_counter()
                    decode()
                    product = n_rows * row_bytes / (time.perf_counter() - t0) / 1e9
                    after = read_w()
                    of_w.append(product / max(before, after))
                    before = after
                t_pp = time_best(
                    partial(matmul, w, qtype, n_pp_rows, n_cols, xp, isa=isa, pool=pool), max(2, reps // 2)
                )
                gops = 2 * n_pp_rows * n_cols * args.prompt_tokens / t_pp / 1e9
                # time per token in the prompt relative to one decode matvec of the same rows
                per_tok = (t_pp / args.prompt_tokens) / (t_dec * n_pp_rows / n_rows)
                print(
                    f"{name:7} {isa:7} {gbs:11.1f} {gbs / bw:6.0%} {statistics.median(of_w):10.0%}"
                    f" {gops:12.1f} {per_tok:10.2f}"
                )


if __name__ == "__main__":
    main()

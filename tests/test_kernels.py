"""CPU matmul kernels: every weight type x every kernel path against numpy float64 and the scalar path.

CPU matmul kernels: every weight type x every kernel path on this CPU, against

(a) numpy float64 ``dequantize(W) @ x`` (gguf-py's dequantizers, independent of our C code), with a
    bound derived from the activation quantization, and
(b) the scalar path (same integers, so only float summation order differs).

Weights are random blocks: random bytes everywhere (every bit pattern of quants, scales, high bits)
with the f16 super-scale fields set to sane random values, so every layout detail is exercised.
"""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import quants as gq
from weight_rows import F16_FIELDS, dequantize, random_weights

from edge._native import EdgeArgumentError, EdgeError, EdgeUnsupportedError
from edge.kernels import ThreadPool, isa_supported, matmul

TYPES = [
    T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1,
    T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.IQ4_NL, T.IQ4_XS,
]  # fmt: skip
ISAS = [isa for isa in ("scalar", "avx2", "avx512", "neon", "neon_dotprod") if isa_supported(isa)]

# Activation block of each quantized type's dot product: Q8_0/Q8_1 per 32, Q8_K per 256.
ACT_BLOCK = {t: (256 if gq.GGML_QUANT_SIZES[t][0] == 256 else 32) for t in F16_FIELDS}
# (n_rows, n_cols): odd row counts; column counts that are and are not multiples of 256.
SHAPES_256 = [(7, 256), (33, 512), (5, 2048)]
SHAPES_32 = [(7, 96), (33, 512), (5, 2048)]
# Token counts: every count a dot call takes (1..8: AVX2 K-quants take up to 8 a call, the others 4; 17 and
# 37 leave 1 and 5 after whole groups; 37 crosses the driver's 32-token tile).
N_TOK = [1, 2, 3, 4, 5, 6, 7, 8, 17, 37]
U = 2.0**-24  # unit roundoff of float32


def heavy_tailed(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_t(3, size=shape).astype(np.float32)


def reference_bound(qtype: T, raw: np.ndarray, w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Bound on |kernel - w @ x| per output [n_tok, n_rows].

    Quantized types see x rounded to int8 per activation block b: x_q = d_b * q with
    d_b = amax_b / 127 (stored as f16 for Q8_0/Q8_1: relative error <= 2^-11, times |q| <= 127), so
    |x_q - x| <= c * amax_b / 127 with c = 0.5 + 127 * 2^-11 ~ 0.562 (Q8_K stores d in f32; the same c
    covers it). Q8_1's block sum s = d * sum(q) is stored as f16: error <= 2^-11 * sum|x_q| per block,
    multiplied by the block's min m. Float accumulation adds at most n_cols * u * sum|w||x| (recursive
    summation bound), doubled for the extra roundings of the scale products.
    """
    absw = np.abs(w)
    n_cols = w.shape[1]
    bound = 2.0 * n_cols * U * (np.abs(x).astype(np.float64) @ absw.T)
    if qtype in ACT_BLOCK:
        blk = ACT_BLOCK[qtype]
        amax = np.abs(x).reshape(x.shape[0], -1, blk).max(axis=2)
        xerr = np.repeat(amax, blk, axis=1) * (0.5 + 127 * 2.0**-11) / 127
        bound += xerr @ absw.T
        if qtype in (T.Q4_1, T.Q5_1):
            m = raw.reshape(-1, gq.GGML_QUANT_SIZES[qtype][1])[:, 2:4].copy().view(np.float16)
            m = np.abs(m.astype(np.float64)).reshape(w.shape[0], -1)  # [n_rows, n_blocks]
            sum_abs_x = np.abs(x).astype(np.float64).reshape(x.shape[0], -1, 32).sum(axis=2) * 1.01
            bound += 2.0**-11 * (sum_abs_x @ m.T)
    return bound


def cases(qtype: T) -> list[tuple[int, int, int]]:
    shapes = SHAPES_256 if gq.GGML_QUANT_SIZES.get(qtype, (1,))[0] == 256 else SHAPES_32
    if qtype in (T.F32, T.F16, T.BF16):
        shapes = [*shapes, (3, 37)]  # float rows of any length: the SIMD kernels' scalar tail
    return [(r, c, t) for (r, c) in shapes for t in N_TOK]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_matmul_against_numpy_and_scalar(qtype: T, isa: str) -> None:
    rng = np.random.default_rng(int(qtype) * 1000 + 7)
    for n_rows, n_cols, n_tok in cases(qtype):
        raw = random_weights(qtype, n_rows, n_cols, rng)
        w = dequantize(qtype, raw, n_rows, n_cols)
        x = heavy_tailed(rng, n_tok, n_cols)
        y = matmul(raw, qtype, n_rows, n_cols, x, isa=isa)
        assert y.shape == (n_tok, n_rows) and y.dtype == np.float32
        ref = x.astype(np.float64) @ w.T
        bound = reference_bound(qtype, raw, w, x)
        err = np.abs(y - ref)
        assert np.all(err <= bound), (
            f"{qtype.name} {isa} {n_rows}x{n_cols} n_tok={n_tok}: max err {err.max():.3g}, "
            f"worst err/bound {(err / bound).max():.3g}"
        )
        if isa != "scalar":
            # Same integers as the scalar path; only the order of float additions (and FMA vs
            # separate rounding) differs: at most a few roundings per 16-element partial sum for
            # quantized types, per element for float types, relative to sum|w||x|.
            y_ref = matmul(raw, qtype, n_rows, n_cols, x, isa="scalar")
            n_terms = n_cols if qtype in (T.F32, T.F16, T.BF16) else n_cols // 16
            tol = 4 * (n_terms + 16) * U * (np.abs(x).astype(np.float64) @ np.abs(w).T)
            diff = np.abs(y.astype(np.float64) - y_ref)
            assert np.all(diff <= tol), f"{qtype.name} {isa} vs scalar: max diff {diff.max():.3g}"


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_matmul_of_quantized_heavy_tailed_weights(qtype: T) -> None:
    """Weights as the converter writes them (edge.quant from heavy-tailed floats), every path."""
    from edge.quant import quantize

    rng = np.random.default_rng(int(qtype) + 99)
    n_rows, n_cols = 19, 512
    w_float = heavy_tailed(rng, n_rows, n_cols) * np.exp(rng.normal(0, 0.5, size=(n_rows, 1))).astype(
        np.float32
    )
    raw = quantize(w_float, int(qtype), n_threads=1)
    w = dequantize(qtype, raw, n_rows, n_cols)
    x = heavy_tailed(rng, 5, n_cols)
    ref = x.astype(np.float64) @ w.T
    bound = reference_bound(qtype, raw, w, x)
    for isa in ISAS:
        err = np.abs(matmul(raw, qtype, n_rows, n_cols, x, isa=isa) - ref)
        assert np.all(err <= bound), f"{qtype.name} {isa}: worst err/bound {(err / bound).max():.3g}"


@pytest.mark.parametrize("qtype", [T.Q8_0, T.Q4_K, T.F16, T.IQ4_XS], ids=lambda t: t.name)
def test_threads_give_identical_results(qtype: T) -> None:
    rng = np.random.default_rng(5)
    n_rows, n_cols = 67, 512
    raw = random_weights(qtype, n_rows, n_cols, rng)
    for n_tok in (1, 5, 40):  # 40 tokens cross the driver's 32-token tile
        x = heavy_tailed(rng, n_tok, n_cols)
        y1 = matmul(raw, qtype, n_rows, n_cols, x)
        with ThreadPool(2) as pool:
            y2 = matmul(raw, qtype, n_rows, n_cols, x, pool=pool)
            y2b = matmul(raw, qtype, n_rows, n_cols, x, pool=pool)  # the pool is reusable
        with ThreadPool(3) as pool:
            y3 = matmul(raw, qtype, n_rows, n_cols, x, pool=pool)
        np.testing.assert_array_equal(y1, y2)
        np.testing.assert_array_equal(y1, y2b)
        np.testing.assert_array_equal(y1, y3)


@pytest.mark.parametrize("qtype", [T.Q8_0, T.Q4_K, T.Q6_K], ids=lambda t: t.name)
def test_decode_rows_are_each_computed_once_with_any_thread_count(qtype: T) -> None:
    """Decode splits a product's rows into a segment per thread, each thread taking over what is left of
    the others' when done with its own: with more rows than one-thread products take (64 KiB) and thread
    counts that split them unevenly, every row equals the one-thread product bit for bit (a row skipped
    or computed twice into the wrong place shows up as a mismatch), the pool reused many times."""
    rng = np.random.default_rng(77)
    n_rows, n_cols = 1501, 512
    raw = random_weights(qtype, n_rows, n_cols, rng)
    x = heavy_tailed(rng, 1, n_cols)
    y1 = matmul(raw, qtype, n_rows, n_cols, x)
    for n_threads in (2, 3, 7):
        with ThreadPool(n_threads) as pool:
            for _ in range(20):
                np.testing.assert_array_equal(matmul(raw, qtype, n_rows, n_cols, x, pool=pool), y1)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_a_token_gives_the_same_bits_in_any_batch(qtype: T, isa: str) -> None:
    """Each row of a batched product equals, bit for bit, the product of that token alone: prompt reuse,
    incremental decoding and a fresh batch agree (batches of 2+ tokens take the quad kernels on AVX-512
    and for Q8_0 on AVX2, one token the one-token kernels, which sum in the same order; on AVX2 one token
    of the K-quants runs the dot kernels' per-block steps over runs of rows, two rows at once, an odd last
    row alone: 33 rows). Rows of an even and of an odd number of blocks (kernels that take two blocks at a
    time end on a single one)."""
    rng = np.random.default_rng(int(qtype) + 2024)
    n_rows = 33
    block = gq.GGML_QUANT_SIZES[qtype][0]
    with ThreadPool(2) as pool:
        for n_cols in (512, 3 * max(block, 32)):
            raw = random_weights(qtype, n_rows, n_cols, rng)
            for n_tok in (2, 3, 5, 8, 17, 37):
                x = heavy_tailed(rng, n_tok, n_cols)
                batched = matmul(raw, qtype, n_rows, n_cols, x, isa=isa, pool=pool)
                alone = np.stack(
                    [matmul(raw, qtype, n_rows, n_cols, x[t], isa=isa, pool=pool) for t in range(n_tok)]
                )
                np.testing.assert_array_equal(
                    batched, alone, err_msg=f"{qtype.name} {isa} n_cols={n_cols} n_tok={n_tok}"
                )


def test_pool_of_all_cores_and_auto_isa() -> None:
    assert isa_supported("auto") and isa_supported("scalar")
    rng = np.random.default_rng(6)
    raw = random_weights(T.Q5_K, 21, 256, rng)
    x = heavy_tailed(rng, 6, 256)
    with ThreadPool(0) as pool:  # 0: one thread per online core
        np.testing.assert_array_equal(
            matmul(raw, T.Q5_K, 21, 256, x, pool=pool), matmul(raw, T.Q5_K, 21, 256, x)
        )


def test_one_dimensional_x_returns_a_vector() -> None:
    rng = np.random.default_rng(1)
    raw = random_weights(T.Q8_0, 3, 64, rng)
    x = heavy_tailed(rng, 64)
    y = matmul(raw, T.Q8_0, 3, 64, x)
    assert y.shape == (3,)
    np.testing.assert_array_equal(y, matmul(raw, T.Q8_0, 3, 64, x[None, :])[0])


def test_many_pool_dispatches() -> None:
    """Thousands of back-to-back dispatches (the decode pattern) neither hang nor drift."""
    rng = np.random.default_rng(2)
    raw = random_weights(T.Q4_0, 16, 64, rng)
    x = heavy_tailed(rng, 64)
    want = matmul(raw, T.Q4_0, 16, 64, x)
    with ThreadPool(2) as pool:
        for _ in range(2000):
            y = matmul(raw, T.Q4_0, 16, 64, x, pool=pool)
        np.testing.assert_array_equal(y, want)


def test_errors() -> None:
    rng = np.random.default_rng(3)
    raw = random_weights(T.Q4_K, 4, 256, rng)
    x = heavy_tailed(rng, 1, 256)
    with pytest.raises(EdgeUnsupportedError, match="type"):
        matmul(raw, 99, 4, 256, x)
    with pytest.raises(EdgeUnsupportedError, match="Q8_K"):
        matmul(np.zeros(4 * 292, np.uint8), T.Q8_K, 4, 256, x)  # an activation format, not a weight type
    with pytest.raises(EdgeArgumentError, match="multiple"):
        matmul(raw, T.Q4_K, 4, 100, x[:, :100])
    with pytest.raises(EdgeArgumentError, match="positive"):
        matmul(raw, T.Q4_K, 0, 256, x)
    with pytest.raises(EdgeArgumentError, match="need"):
        matmul(raw, T.Q4_K, 5, 256, x)  # 4 rows of bytes for 5 rows
    with pytest.raises(EdgeArgumentError, match="shape"):
        matmul(raw, T.Q4_K, 4, 256, heavy_tailed(rng, 1, 512))
    with pytest.raises(EdgeError, match="ISA"):
        matmul(raw, T.Q4_K, 4, 256, x, isa="mips")
    with pytest.raises(EdgeArgumentError, match="n_threads"):
        ThreadPool(-1)
    if not isa_supported("neon"):
        with pytest.raises(EdgeUnsupportedError, match="ISA"):
            matmul(raw, T.Q4_K, 4, 256, x, isa="neon")


def test_auto_is_the_best_supported_path() -> None:
    rng = np.random.default_rng(4)
    raw = random_weights(T.Q6_K, 9, 512, rng)
    x = heavy_tailed(rng, 2, 512)
    best = next(isa for isa in ("avx512", "avx2", "neon_dotprod", "neon", "scalar") if isa_supported(isa))
    np.testing.assert_array_equal(matmul(raw, T.Q6_K, 9, 512, x), matmul(raw, T.Q6_K, 9, 512, x, isa=best))

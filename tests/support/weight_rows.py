"""Random GGUF weight rows of every kernel type (random bytes with sane f16 scales) and their float64
values through gguf-py's numpy dequantizers: the kernel tests' inputs and witness."""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants as gq

# Byte offsets of the f16 scale fields in one block (ggml layouts, see native/src/core/blocks.h).
F16_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0], T.IQ4_NL: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208], T.IQ4_XS: [0],
}  # fmt: skip


def random_weights(qtype: T, n_rows: int, n_cols: int, rng: np.random.Generator) -> np.ndarray:
    """n_rows rows of GGUF bytes: [n_rows, row_bytes] uint8."""
    if qtype in (T.F32, T.F16, T.BF16):
        w = rng.standard_t(3, size=(n_rows, n_cols)).astype(np.float32)
        if qtype == T.F32:
            return w.view(np.uint8)
        if qtype == T.F16:
            return w.astype(np.float16).view(np.uint8)
        return (w.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
    block_elems, block_bytes = gq.GGML_QUANT_SIZES[qtype]
    n_blocks = n_rows * n_cols // block_elems
    raw = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    for off in F16_FIELDS[qtype]:
        scale = np.exp(rng.normal(np.log(0.01), 1.0, size=n_blocks)) * rng.choice([-1.0, 1.0], size=n_blocks)
        raw[:, off : off + 2] = scale.astype(np.float16).view(np.uint8).reshape(n_blocks, 2)
    return raw.reshape(n_rows, -1)


def dequantize(qtype: T, raw: np.ndarray, n_rows: int, n_cols: int) -> np.ndarray:
    if qtype == T.F32:
        return raw.view(np.float32).astype(np.float64).reshape(n_rows, n_cols)
    if qtype == T.F16:
        return raw.view(np.float16).astype(np.float64).reshape(n_rows, n_cols)
    return gq.dequantize(raw, qtype).astype(np.float64).reshape(n_rows, n_cols)

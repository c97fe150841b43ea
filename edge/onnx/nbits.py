"""GGUF blocks → onnxruntime's MatMulNBits layout (block size 32), exactly where the formats allow.

MatMulNBits computes ``A · Wᵀ`` with W [N, K] stored per row in blocks of 32 along K:
``w = (q - zero_point) · scale``, q unsigned (4 bits: two per byte, even element in the low nibble).
Without a zero-point input the zero point is 2^(bits-1) (8 or 128).

- int8 from Q8_0 (``w = d·q``, q int8): codes q + 128, scale d, the default zero point 128.
- int4 from Q4_0 (``w = d·(q - 8)``, q 0..15): codes q, scale d, the default zero point 8.

Both are the GGUF's own numbers (scale d widened from float16): 8.5 → 9 and 4.5 → 5 bits a weight (the
scales are float32 in MatMulNBits). Any other GGUF type is dequantized and quantized to Q8_0 / Q4_0 with
edge.quant first, with a uniform importance matrix (ggml's searched scales, see edge.quant.quantize).

Q4_K would map exactly too (scale d·sc_j and a float zero point dmin·m_j/(d·sc_j) per 32), but float zero
points cost another 32 bits a block: 6 bits a weight, for a KL on the demo model no better than the
searched Q4_0's (measured: 3.8e-4 vs 3.1e-4 against the fp32 export).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge import quant

BLOCK = 32


@dataclass
class NBitsWeight:
    """One matrix in MatMulNBits form with the default zero point: B uint8 [N, K/32, 32·bits/8], scales
    float32 [N·K/32], N, K, bits."""

    b: np.ndarray
    scales: np.ndarray
    n: int
    k: int
    bits: int

    def dequantize(self) -> np.ndarray:
        """The float64 weights [N, K] these arrays encode (for tests)."""
        nb = self.k // BLOCK
        if self.bits == 4:
            q = np.empty((self.n, nb, BLOCK), dtype=np.float64)
            q[:, :, 0::2] = self.b & 0x0F
            q[:, :, 1::2] = self.b >> 4
        else:
            q = self.b.astype(np.float64)
        zp = 2.0 ** (self.bits - 1)
        return ((q - zp) * self.scales.reshape(self.n, nb, 1).astype(np.float64)).reshape(self.n, self.k)


def _f16(raw: np.ndarray, start: int) -> np.ndarray:
    return np.ascontiguousarray(raw[..., start : start + 2]).view(np.float16)[..., 0].astype(np.float32)


def _pack4(q: np.ndarray) -> np.ndarray:
    q = q.astype(np.uint8)
    return (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)


def from_q8_0(raw: np.ndarray, n: int, k: int) -> NBitsWeight:
    blocks = np.ascontiguousarray(raw).reshape(n, k // BLOCK, 34)
    d = _f16(blocks, 0)
    q = blocks[:, :, 2:].view(np.int8).astype(np.int16) + 128
    return NBitsWeight(q.astype(np.uint8), d.reshape(-1), n, k, 8)


def from_q4_0(raw: np.ndarray, n: int, k: int) -> NBitsWeight:
    blocks = np.ascontiguousarray(raw).reshape(n, k // BLOCK, 18)
    qs = blocks[:, :, 2:]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1)  # element j: low nibble of byte j, j+16: high
    return NBitsWeight(_pack4(q), _f16(blocks, 0).reshape(-1), n, k, 4)


_REPACK = {"Q8_0": from_q8_0, "Q4_0": from_q4_0}


def target_type(bits: int, k: int) -> str:
    """The GGUF type a ``bits``-bit MatMulNBits weight with rows of ``k`` is made from."""
    if k % BLOCK:
        raise ValueError(f"MatMulNBits needs rows that are a multiple of {BLOCK} elements, not {k}")
    return "Q8_0" if bits == 8 else "Q4_0"


def to_nbits(raw: np.ndarray, type_name: str, n: int, k: int, bits: int) -> NBitsWeight:
    """A GGUF matrix [n, k] (raw bytes of ``type_name``) as MatMulNBits weights of ``bits`` bits: the
    GGUF's own codes when its type maps exactly, else requantized from the dequantized values."""
    target = target_type(bits, k)
    if type_name != target:
        values = dequantize(raw, type_name, n, k)
        raw = quant.quantize(values, target, imatrix=np.ones(k, dtype=np.float32))
        type_name = target
    return _REPACK[type_name](raw, n, k)


def dequantize(raw: np.ndarray, type_name: str, n: int, k: int) -> np.ndarray:
    """float32 [n, k] of a GGUF matrix given as its raw data (typed for F32/F16/BF16)."""
    if type_name in ("F32", "F16", "BF16"):
        return np.asarray(raw, dtype=np.float32).reshape(n, k)
    return quant.dequantize(np.asarray(raw), type_name, (n, k))

"""Quantize and dequantize tensors in ggml's block formats (native, multi-threaded).

Convention: :func:`quantize` always returns the raw bytes, ``uint8 [rows, row_bytes]`` (for F32, F16 and
BF16 too: view them with ``.view(np.float16)`` etc.), exactly as they go into a GGUF tensor's data.
:func:`dequantize` takes those bytes back to ``float32`` of the given shape.

Types are named as in GGUF (``"Q4_K"``, ``"IQ4_XS"``) or given by their ggml number.
The native calls release the GIL (cffi ABI mode), so several tensors can be quantized from threads.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge._native import EdgeArgumentError, check, ffi, lib, string

QUANT_TYPES: tuple[str, ...] = (
    "F32",
    "F16",
    "BF16",
    "Q8_0",
    "Q4_0",
    "Q4_1",
    "Q5_0",
    "Q5_1",
    "Q2_K",
    "Q3_K",
    "Q4_K",
    "Q5_K",
    "Q6_K",
    "IQ4_NL",
    "IQ4_XS",
)

_TYPE_IDS: dict[str, int] = {
    "F32": 0,
    "F16": 1,
    "Q4_0": 2,
    "Q4_1": 3,
    "Q5_0": 6,
    "Q5_1": 7,
    "Q8_0": 8,
    "Q8_1": 9,
    "Q2_K": 10,
    "Q3_K": 11,
    "Q4_K": 12,
    "Q5_K": 13,
    "Q6_K": 14,
    "Q8_K": 15,
    "IQ4_NL": 20,
    "IQ4_XS": 23,
    "I8": 24,
    "I16": 25,
    "I32": 26,
    "I64": 27,
    "F64": 28,
    "BF16": 30,
}


def type_id(qtype: int | str) -> int:
    """The ggml number of a type given by name (case-insensitive) or number."""
    if isinstance(qtype, str):
        key = qtype.strip().upper()
        if key not in _TYPE_IDS:
            raise EdgeArgumentError("EDGE_ERR_INVALID_ARG", f"unknown tensor type name {qtype!r}")
        return _TYPE_IDS[key]
    if isinstance(qtype, (int, np.integer)) and not isinstance(qtype, bool):
        block_info(int(qtype))  # raises for an unknown number
        return int(qtype)
    raise EdgeArgumentError("EDGE_ERR_INVALID_ARG", f"a tensor type is a name or an int, not {qtype!r}")


def block_info(qtype: int | str) -> tuple[int, int]:
    """(elements per block, bytes per block) of a type."""
    tid = _TYPE_IDS.get(qtype.strip().upper(), -1) if isinstance(qtype, str) else int(qtype)
    elems = ffi.new("int64_t *")
    nbytes = ffi.new("int64_t *")
    check(lib.edge_type_info(tid, elems, nbytes, ffi.NULL))
    return int(elems[0]), int(nbytes[0])


def type_name(qtype: int | str) -> str:
    """The GGUF name of a type ("Q4_K")."""
    name = ffi.new("const char **")
    check(lib.edge_type_info(type_id(qtype), ffi.NULL, ffi.NULL, name))
    return string(name[0])


def row_bytes(qtype: int | str, n: int) -> int:
    """Bytes of one row of n elements (n a multiple of the type's block size)."""
    out = ffi.new("int64_t *")
    check(lib.edge_row_bytes(type_id(qtype), int(n), out))
    return int(out[0])


def _as_rows(x: np.ndarray) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim == 0:
        raise EdgeArgumentError("EDGE_ERR_INVALID_ARG", "quantize takes an array of at least 1 dimension")
    return np.ascontiguousarray(arr.reshape(-1, arr.shape[-1]), dtype=np.float32)


def quantize(
    x: np.ndarray,
    qtype: int | str,
    imatrix: np.ndarray | None = None,
    n_threads: int = 0,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Quantize the rows of ``x`` (float32 ``[rows, cols]``; ``[cols]`` is one row; more dimensions are
    flattened into rows, e.g. stacked experts ``[n_expert, rows, cols]``) to ``qtype``.

    Returns ``uint8 [rows, row_bytes(qtype, cols)]`` in ggml's byte layout (written into ``out`` when
    given: a C-contiguous uint8 array of exactly that many bytes, e.g. a view of the output file).
    ``imatrix``: optional ``cols`` non-negative importance weights (llama.cpp's imatrix; used by the
    types llama.cpp uses it for). Without one, the bytes are llama.cpp's default quantization; with
    one, llama.cpp's imatrix quantization (bytes identical to ggml's for the same imatrix, IQ4_* aside).
    A uniform ``np.ones(cols)`` selects those stronger searches with no column preferred: 1-11% lower
    RMSE than the default on Grok-like weights (bench/quant_quality.py). ``n_threads``: 0 uses every core.
    """
    tid = type_id(qtype)
    rows = _as_rows(x)
    n_rows, n_cols = rows.shape
    if n_cols == 0:
        raise EdgeArgumentError("EDGE_ERR_INVALID_ARG", "quantize: rows of 0 elements")
    rb = row_bytes(tid, n_cols)
    if out is None:
        out = np.empty((n_rows, rb), dtype=np.uint8)
    elif out.dtype != np.uint8 or not out.flags.c_contiguous or out.nbytes != n_rows * rb:
        raise EdgeArgumentError(
            "EDGE_ERR_INVALID_ARG",
            f"quantize: out must be C-contiguous uint8 of {n_rows * rb} bytes, not {out.dtype} {out.shape}",
        )
    imat_ptr = ffi.NULL
    if imatrix is not None:
        imat = np.ascontiguousarray(imatrix, dtype=np.float32).reshape(-1)
        if imat.shape[0] != n_cols:
            raise EdgeArgumentError(
                "EDGE_ERR_INVALID_ARG", f"quantize: imatrix has {imat.shape[0]} weights for rows of {n_cols}"
            )
        imat_ptr = ffi.from_buffer("float[]", imat)
    check(
        lib.edge_quantize(
            tid,
            ffi.from_buffer("float[]", rows),
            n_rows,
            n_cols,
            ffi.from_buffer("uint8_t[]", out, require_writable=True),
            out.nbytes,
            imat_ptr,
            int(n_threads),
        )
    )
    return out.reshape(n_rows, rb)


def dequantize(data: np.ndarray, qtype: int | str, shape: Sequence[int] | int) -> np.ndarray:
    """Decode the bytes of a ``qtype`` tensor to float32 of ``shape`` (its last dimension is the row)."""
    tid = type_id(qtype)
    shape_t = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
    n = int(np.prod(shape_t, dtype=np.int64))
    raw = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
    n_cols = shape_t[-1] if shape_t else 1
    need = row_bytes(tid, n_cols) * (n // n_cols if n_cols else 0)
    if raw.nbytes != need:
        raise EdgeArgumentError(
            "EDGE_ERR_INVALID_ARG",
            f"dequantize: {raw.nbytes} bytes given, a {type_name(tid)} tensor of shape {shape_t} has {need}",
        )
    out = np.empty(shape_t, dtype=np.float32)
    check(lib.edge_dequantize(tid, ffi.from_buffer("uint8_t[]", raw), n, ffi.from_buffer("float[]", out)))
    return out

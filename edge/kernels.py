"""Thin wrapper over the CPU matmul kernels (edge.h, section kernels): for tests, tools and benches.

``matmul(w, qtype, n_rows, n_cols, x)`` computes ``y[t, r] = sum_c W[r, c] * x[t, c]`` with W given as
its raw GGUF bytes (n_rows rows of n_cols elements of ``qtype``). ``isa`` forces a kernel path.
"""

from __future__ import annotations

from types import TracebackType

import numpy as np

from edge._native import EdgeArgumentError, check, ffi, lib

ISAS: dict[str, int] = {"auto": -1, "scalar": 0, "avx2": 1, "avx512": 2, "neon": 3, "neon_dotprod": 4}


def isa_code(isa: str) -> int:
    """edge_isa code of a kernel path name (auto, scalar, avx2, avx512, neon, neon_dotprod)."""
    try:
        return ISAS[isa]
    except KeyError:
        raise EdgeArgumentError(
            "EDGE_ERR_INVALID_ARG", f"unknown ISA {isa!r}; one of {sorted(ISAS)}"
        ) from None


def isa_supported(name: str) -> bool:
    """Whether the kernel path ``name`` is compiled in and runs on this CPU."""
    out = ffi.new("int *")
    check(lib.edge_isa_supported(isa_code(name), out))
    return bool(out[0])


class ThreadPool:
    """A persistent pool of ``n`` threads (the calling thread is one of them); 0 means all cores."""

    def __init__(self, n: int = 0) -> None:
        self._handle = None
        out = ffi.new("edge_threadpool **")
        check(lib.edge_threadpool_create(int(n), out))
        self._handle = out[0]

    @property
    def handle(self) -> object:
        if self._handle is None:
            raise EdgeArgumentError("EDGE_ERR_STATE", "thread pool is closed")
        return self._handle

    def close(self) -> None:
        if self._handle is not None:
            lib.edge_threadpool_free(self._handle)
            self._handle = None

    def __enter__(self) -> ThreadPool:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def matmul(
    w_bytes: np.ndarray,
    qtype: int,
    n_rows: int,
    n_cols: int,
    x: np.ndarray,
    isa: str = "auto",
    pool: ThreadPool | None = None,
) -> np.ndarray:
    """``W @ x.T`` for each token: returns float32 ``[n_tok, n_rows]`` (``[n_rows]`` for a 1-D x).

    ``w_bytes`` holds the rows in GGUF layout (any dtype, C-contiguous, at least n_rows row sizes);
    ``x`` is ``[n_tok, n_cols]`` or ``[n_cols]`` floats.
    """
    qtype = int(qtype)
    row_bytes = ffi.new("int64_t *")
    check(lib.edge_row_bytes(qtype, int(n_cols), row_bytes))
    w = np.ascontiguousarray(w_bytes).view(np.uint8).reshape(-1)
    if w.size < n_rows * row_bytes[0]:
        raise EdgeArgumentError(
            "EDGE_ERR_INVALID_ARG",
            f"weights hold {w.size} bytes, {n_rows} rows of {n_cols} need {n_rows * row_bytes[0]}",
        )
    xa = np.ascontiguousarray(x, dtype=np.float32)
    squeeze = xa.ndim == 1
    xa = xa.reshape(1, -1) if squeeze else xa
    if xa.ndim != 2 or xa.shape[1] != n_cols:
        raise EdgeArgumentError("EDGE_ERR_INVALID_ARG", f"x has shape {x.shape}, expected [n_tok, {n_cols}]")
    n_tok = xa.shape[0]
    y = np.empty((n_tok, n_rows), dtype=np.float32)
    check(
        lib.edge_matmul(
            pool.handle if pool is not None else ffi.NULL,
            isa_code(isa),
            qtype,
            ffi.from_buffer(w),
            int(n_rows),
            int(n_cols),
            ffi.cast("const float *", ffi.from_buffer(xa)),
            int(n_tok),
            ffi.cast("float *", ffi.from_buffer(y)),
        )
    )
    return y[0] if squeeze else y

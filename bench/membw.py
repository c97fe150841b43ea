"""The machine's memory read bandwidth, measured the same way by every bench script."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np


class ReadBandwidth:
    """Streaming read of a buffer kept between calls (numpy dot of it with itself: SIMD BLAS, releases
    the GIL), split over n_threads threads. (numpy's max would hold the GIL: no parallel read.)"""

    def __init__(self, n_threads: int, nbytes: int = 1 << 30) -> None:
        self.n_threads = n_threads
        self.buf = np.ones(nbytes // 8, dtype=np.float64)

    def once(self) -> float:
        """One read of the buffer split over the n_threads threads, GB/s."""
        return read_parts(np.array_split(self.buf, self.n_threads))

    def __call__(self, reps: int = 5) -> float:
        """Best of reps reads with n_threads threads and reps with 1, GB/s (one core nearly saturates
        DRAM here, and the n-thread figure drops first when other jobs share the cores: the best of
        both is the machine's figure)."""
        split = np.array_split(self.buf, self.n_threads)
        return max(read_parts(parts) for parts in [split, [self.buf]] * reps)


def _dot_quiet(a: np.ndarray) -> None:
    with np.errstate(all="ignore"):  # weight bytes read as float64: overflows, NaNs (the speed is the same)
        np.dot(a, a)


def read_parts(parts: list[np.ndarray]) -> float:
    """One read of float64 arrays, one thread each (numpy dot of each with itself), GB/s."""
    threads = [threading.Thread(target=_dot_quiet, args=(p,)) for p in parts]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(p.nbytes for p in parts) / (time.perf_counter() - t0) / 1e9


def read_of(data: np.ndarray, n_threads: int) -> Callable[[], float]:
    """A plain read of the bytes of `data` itself (split over n_threads threads), GB/s per call: the
    bandwidth of the very memory a kernel reads. On a VM, buffers read at different speeds (placement:
    here up to ~30 % apart at the same moment), so a probe of another buffer mixes that in."""
    flat = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    words = flat[: flat.size // 8 * 8].view(np.float64)
    parts = np.array_split(words, n_threads)
    return lambda: read_parts(parts)


def read_bandwidth(n_threads: int, nbytes: int = 1 << 30, reps: int = 5) -> float:
    """Best-of streaming read of a 1 GiB buffer split over n_threads threads (and 1), GB/s."""
    return ReadBandwidth(n_threads, nbytes)(reps)

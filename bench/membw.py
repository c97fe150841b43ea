"""The machine's memory read bandwidth, measured the same way by every bench script."""

from __future__ import annotations

import threading
import time

import numpy as np


class ReadBandwidth:
    """Streaming read of a buffer kept between calls (numpy dot of it with itself: SIMD BLAS, releases
    the GIL), split over n_threads threads. (numpy's max would hold the GIL: no parallel read.)"""

    def __init__(self, n_threads: int, nbytes: int = 1 << 30) -> None:
        self.n_threads = n_threads
        self.nbytes = nbytes
        self.buf = np.ones(nbytes // 8, dtype=np.float64)

    def once(self) -> float:
        """One read of the buffer split over the n_threads threads, GB/s."""
        return self._read(np.array_split(self.buf, self.n_threads))

    def __call__(self, reps: int = 5) -> float:
        """Best of reps reads with n_threads threads and reps with 1, GB/s (one core nearly saturates
        DRAM here, and the n-thread figure drops first when other jobs share the cores: the best of
        both is the machine's figure)."""
        split = np.array_split(self.buf, self.n_threads)
        return max(self._read(parts) for parts in [split, [self.buf]] * reps)

    def _read(self, parts: list[np.ndarray]) -> float:
        threads = [threading.Thread(target=np.dot, args=(p, p)) for p in parts]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return self.nbytes / (time.perf_counter() - t0) / 1e9


def read_bandwidth(n_threads: int, nbytes: int = 1 << 30, reps: int = 5) -> float:
    """Best-of streaming read of a 1 GiB buffer split over n_threads threads (and 1), GB/s."""
    return ReadBandwidth(n_threads, nbytes)(reps)

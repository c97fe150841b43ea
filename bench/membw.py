"""The machine's memory read bandwidth, measured the same way by every bench script."""

from __future__ import annotations

import threading
import time

import numpy as np


def read_bandwidth(n_threads: int, nbytes: int = 1 << 30, reps: int = 5) -> float:
    """Best-of streaming read of a 1 GiB buffer (numpy dot of it with itself: SIMD BLAS, releases the
    GIL) split over n_threads threads, GB/s. (numpy's max would hold the GIL: no parallel read.)"""
    buf = np.ones(nbytes // 8, dtype=np.float64)
    best = 0.0
    # n_threads and 1 thread (one core nearly saturates DRAM here, and the n-thread figure drops
    # first when other jobs share the cores): the best of both is the machine's figure.
    for parts in [np.array_split(buf, n_threads), [buf]] * reps:
        threads = [threading.Thread(target=np.dot, args=(p, p)) for p in parts]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        best = max(best, nbytes / (time.perf_counter() - t0) / 1e9)
    return best

"""The C engine's logits through edge.Model, and the relative error the engine tests measure them by."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import edge


def rel_rms(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / ||b|| over all values, in float64."""
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def engine_logits(path: Path, tokens: list[int], kv_type: str = "f32", n_batch: int = 512) -> np.ndarray:
    """The logits of every position of ``tokens`` on one thread, with a 64-position cache."""
    with edge.Model(path, n_ctx=64, n_batch=n_batch, n_threads=1, kv_type=kv_type) as model:
        return model.logits(tokens)

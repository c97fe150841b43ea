"""Synthetic checkpoints in the exact release format, at any size (``grok-edge make-synthetic``).

Values are random but shaped like a trained model's: heavy-tailed weights (a cubic-skewed normal,
kurtosis ~ 8), per-output-channel magnitudes varying log-normally (so per-channel int8 scales differ),
norm scales around 1, a router scaled so its softmax is neither flat nor one-hot. Each module is
generated, quantized to int8 + bf16 scales like the release and written before the next one
(experts one at a time into a preallocated int8 array), so memory stays near one module of int8.
Deterministic for a given seed and shape.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from edge.convert.layout import EMBED_PATH, CheckpointShape, Kind, LeafSpec, leaf_specs, validate_shape
from edge.convert.release import quantize_release, write_module
from edge.convert.safe_pickle import BF16, QuantizedWeight8bit

PRESETS: dict[str, CheckpointShape] = {
    # >= 11 layers so that the file order 0, 1, 10, 2, ... differs from numeric order
    "tiny": CheckpointShape(
        vocab_size=512,
        d_model=256,
        n_layers=11,
        n_q_heads=4,
        n_kv_heads=2,
        key_size=64,
        ffn_size=256,
        n_experts=8,
    ),
    # Grok-shaped (GQA, 8 experts, top-2, key 128, vocab 131072): 6 layers ~2.8 B parameters (3.3 GB);
    # bench/convert.py uses --n-layers 8 (3.6 B, 4.4 GB) for a >= 4 GB checkpoint
    "medium": CheckpointShape(
        vocab_size=131072,
        d_model=2048,
        n_layers=6,
        n_q_heads=16,
        n_kv_heads=4,
        key_size=128,
        ffn_size=8192,
        n_experts=8,
    ),
}


def _heavy_tailed(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    out = np.empty(shape, dtype=np.float32)
    flat = out.reshape(-1)
    step = 1 << 24  # fill in chunks: temporaries stay small for a 1 GB embedding
    for i in range(0, flat.size, step):
        z = rng.standard_normal(min(step, flat.size - i), dtype=np.float32)
        z += np.float32(0.08) * z * z * z  # heavier tails than a Gaussian
        z *= np.float32(std / 1.3)
        flat[i : i + z.size] = z
    return out


def _channel_gain(rng: np.random.Generator, n_out: int) -> np.ndarray:
    return np.exp(rng.normal(0.0, 0.35, n_out)).astype(np.float32)


def _matrix(rng: np.random.Generator, n_in: int, n_out: int) -> np.ndarray:
    w = _heavy_tailed(rng, (n_in, n_out), 1.0 / np.sqrt(n_in))
    w *= _channel_gain(rng, n_out)
    return w


def synthesize_module(
    spec: LeafSpec, s: CheckpointShape, rng: np.random.Generator
) -> np.ndarray | QuantizedWeight8bit:
    """Random values for one module, float32 or already quantized like the release."""
    module = spec.path.rsplit("/", 1)[-1]
    if spec.path == EMBED_PATH:
        e = _heavy_tailed(rng, spec.shape, 1.0 / 78.38)  # the official input multiplier brings rows to ~1
        e *= np.exp(rng.normal(0.0, 0.2, (spec.shape[0], 1))).astype(np.float32)  # in place
        return e
    if spec.kind is Kind.FLOAT:
        if module == "router":
            return _heavy_tailed(rng, spec.shape, 2.0 / np.sqrt(s.d_model))
        # rms_norm scales: positive, around 1, varied per channel
        return np.exp(rng.normal(0.0, 0.25, spec.shape)).astype(np.float32)
    if len(spec.shape) == 2:
        return quantize_release(_matrix(rng, *spec.shape), spec.kind)
    n_exp, n_in, n_out = spec.shape
    weight = np.empty(spec.shape, dtype=np.int8)
    scales = np.empty(spec.scales_shape, dtype=BF16)
    for e in range(n_exp):
        q = quantize_release(_matrix(rng, n_in, n_out), spec.kind)
        weight[e] = q.weight
        scales[e] = q.scales
    return QuantizedWeight8bit(weight, scales)


def make_synthetic(
    out_dir: str | os.PathLike[str],
    shape: CheckpointShape,
    seed: int = 0,
    progress: Callable[[LeafSpec], None] | None = None,
) -> list[LeafSpec]:
    """Write a release-format ``ckpt-0`` directory of the given shape into ``out_dir``."""
    validate_shape(shape)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise FileExistsError(f"{out}: directory is not empty")
    specs = leaf_specs(shape)
    for spec in specs:
        # a generator per module keyed by its path: values do not depend on the file order
        rng = np.random.default_rng([seed, *spec.path.encode()])
        write_module(out, spec, synthesize_module(spec, shape, rng))
        if progress is not None:
            progress(spec)
    return specs

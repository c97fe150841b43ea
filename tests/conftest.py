"""Shared fixtures: tiny release-format checkpoints, a matching tokenizer, converted GGUFs (cached),
the reference's logits on them; and tests/support on sys.path, so test files import its helper modules
by name (``from native_build import ROOT``)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

SUPPORT = Path(__file__).resolve().parent / "support"
if str(SUPPORT) not in sys.path:
    sys.path.insert(0, str(SUPPORT))

from parity import ROUTE_MARGIN, q8_0_roundtrip, robust_tokens  # noqa: E402
from tiny_models import TINY_KEY_SIZE, train_tiny_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``tiny`` synthetic checkpoint: 11 layers (file order 0, 1, 10, 2, ...), d 256, vocab 512."""
    from edge.convert.synthetic import PRESETS, make_synthetic

    out = tmp_path_factory.mktemp("tiny") / "ckpt-0"
    make_synthetic(out, PRESETS["tiny"], seed=1)
    return out


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tok512", 512)


@pytest.fixture(scope="session")
def tiny_reference(tiny_ckpt: Path):
    """(params float64, config) of the tiny checkpoint, read through the converter's reader."""
    import grok_reference as ref

    params = ref.load_checkpoint(tiny_ckpt, TINY_KEY_SIZE)
    return params, ref.GrokConfig.from_params(params, TINY_KEY_SIZE)


@pytest.fixture(scope="session")
def converted(
    tiny_ckpt: Path, tiny_tokenizer: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Path]:
    """preset -> path of the tiny checkpoint converted at that preset (converted once per session)."""
    from edge.convert.pipeline import convert_checkpoint

    out_dir = tmp_path_factory.mktemp("gguf")
    cache: dict[str, Path] = {}

    def get(preset: str) -> Path:
        if preset not in cache:
            out = out_dir / f"tiny-{preset}.gguf"
            convert_checkpoint(
                tiny_ckpt, out, tiny_tokenizer, preset=preset, key_size=TINY_KEY_SIZE, show_progress=False
            )
            cache[preset] = out
        return cache[preset]

    return get


@pytest.fixture(scope="session")
def parity_tokens(tiny_reference) -> list[int]:
    """12 tokens of the tiny model with every routing gap >= ROUTE_MARGIN (see robust_tokens), on the
    release's weights and on their Q8_0 round trip (the quantized tests' files start from near there)."""
    params, config = tiny_reference
    return robust_tokens([params, q8_0_roundtrip(params)], config, 12, ROUTE_MARGIN)


@pytest.fixture(scope="session")
def reference_logits(tiny_reference, parity_tokens) -> np.ndarray:
    """The float64 reference's logits of ``parity_tokens`` on the release checkpoint."""
    import grok_reference as ref

    params, config = tiny_reference
    return ref.forward(params, config, parity_tokens)


@pytest.fixture(scope="session")
def file_reference(tiny_reference, parity_tokens, converted) -> Callable[[str], np.ndarray]:
    """preset -> the reference's logits on the weights stored in that preset's GGUF."""
    import grok_reference as ref
    from engine_gguf import params_from_gguf

    _, config = tiny_reference
    cache: dict[str, np.ndarray] = {}

    def get(preset: str) -> np.ndarray:
        if preset not in cache:
            cache[preset] = ref.forward(params_from_gguf(converted(preset)), config, parity_tokens)
        return cache[preset]

    return get

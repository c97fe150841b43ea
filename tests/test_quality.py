"""Quantization quality on the shipped tiny trained model (bench/quality.py on a short held-out slice).

KL(p_F32 || p_quant) per position, averaged, on held-out text the model never saw in training. More
bits must give a distribution closer to F32; our Q4_K must be at least as close as llama.cpp's
quantizer on the same F32 GGUF, both run by our engine on the same tokens.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import quality  # noqa: E402

N_WINDOWS = 2  # 2 x 256 tokens: the orderings below are separated by > 2x, far above this slice's noise


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> quality.Results:
    out = tmp_path_factory.mktemp("quality")
    return quality.measure(out, N_WINDOWS, "edge", types=("Q8_0", "Q4_K", "Q2_K"), presets=())


def test_model_beats_unigram_threefold(results: quality.Results) -> None:
    assert results.f32.ppl * 3 <= results.unigram_ppl, (results.f32.ppl, results.unigram_ppl)


def test_kl_grows_as_bits_shrink(results: quality.Results) -> None:
    ours = {t: row["ours"].kl for t, row in results.types.items()}
    assert 0.0 < ours["Q8_0"] < ours["Q4_K"] < ours["Q2_K"], ours
    assert results.types["Q2_K"]["ours"].size_mib < results.types["Q4_K"]["ours"].size_mib


def test_our_q4_k_is_no_worse_than_llama_cpp(results: quality.Results) -> None:
    ours = results.types["Q4_K"]["ours"].kl
    theirs = results.types["Q4_K"]["llama.cpp"].kl
    assert ours <= theirs, (ours, theirs)

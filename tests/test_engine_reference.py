"""The C engine's float paths match the float64 reference to float32 rounding.

The reference is tests/support/grok_reference.py. Checked: F32, F16 and BF16 files, every CPU path,
decode reading only the selected experts, the trained demo model.

Model: the ``tiny`` synthetic checkpoint in the exact release format (11 layers, so the converter's file
order 0, 1, 10, 2, ... is exercised), converted by ``grok-edge convert`` at each preset (conftest's
``converted``). Tokens: conftest's ``parity_tokens``: a sequence on which every top-2 routing decision
of the reference has a probability gap >= 0.015, so a rounding-level difference cannot flip an expert
choice (a flip is a discrete change of that position and, through attention, of every later one; it
would say nothing about the engine).

Errors are relative RMS over all logits, ``||E - R|| / ||R||`` (``engine_compare.rel_rms``). Two
references:
- ``R``: the reference on the original checkpoint (the model as released);
- ``Rq``: the reference on the weights the GGUF actually encodes (dequantized, float64). ``E - Rq`` is
  the engine's own error: float32 arithmetic, the KV cache's rounding, and the kernels' on-the-fly
  activation rounding (F16 activations against F16 weights; Q8_0 / Q8_K activations against quantized
  weights, as llama.cpp does).
"""

from __future__ import annotations

import grok_reference as ref
import numpy as np
import pytest
from engine_compare import engine_logits, rel_rms
from engine_gguf import write_grok_gguf

import edge
from edge.kernels import isa_code

FLOAT_PRESETS = ["f32", "f16", "bf16"]


def test_f32_matches_the_reference_to_float32_rounding(converted, parity_tokens, reference_logits):
    # F32 weights (the exact int8 x bf16 products), F32 KV cache: the only difference is float32
    # arithmetic (sums of <= 256 products, 11 layers); measured 9.7e-7. The bound leaves ~5x. The
    # reference dequantizes the release files itself; with the products rounded to bf16 (a misreading of
    # the format) the error would be 1.1e-2, far outside the bound.
    e = engine_logits(converted("f32"), parity_tokens, kv_type="f32")
    assert e.shape == reference_logits.shape and e.dtype == np.float32
    assert rel_rms(e, reference_logits) < 5e-6
    np.testing.assert_array_equal(e.argmax(1), reference_logits.argmax(1))


# Every path (each skips on a CPU without it; the arm64 ones also run under qemu in test_arm64.py).
@pytest.mark.parametrize("isa", ["scalar", "avx2", "avx512", "neon", "neon_dotprod"])
def test_every_cpu_path_matches_the_reference(
    isa, converted, parity_tokens, reference_logits, file_reference
):
    # Each kernel path (and the attention loops that follow the same choice) on this CPU: F32 is exact to
    # float32 rounding; Q8_0 within the same bound as the default path (test_engine_quantized.py).
    from edge._native import ffi, lib

    ok = ffi.new("int *")
    lib.edge_isa_supported(isa_code(isa), ok)
    if not ok[0]:
        pytest.skip(f"{isa} is not compiled in or not supported by this CPU")
    with edge.Model(converted("f32"), n_ctx=64, n_threads=1, kv_type="f32", isa=isa) as model:
        assert rel_rms(model.logits(parity_tokens), reference_logits) < 5e-6
    for kv in ("f16", "f32"):
        with edge.Model(converted("q8_0"), n_ctx=64, n_threads=1, kv_type=kv, isa=isa) as model:
            assert rel_rms(model.logits(parity_tokens), file_reference("q8_0")) < 0.15
    # the Q8_0 cache's attention loops (AVX2 or portable) against the exact cache, as test_engine_kv_types
    with edge.Model(converted("f32"), n_ctx=64, n_threads=1, kv_type="q8_0", isa=isa) as model:
        assert rel_rms(model.logits(parity_tokens), reference_logits) < 0.35


@pytest.mark.parametrize("preset", FLOAT_PRESETS)
def test_float_presets_against_the_reference(
    preset, converted, parity_tokens, reference_logits, file_reference
):
    rq = file_reference(preset)
    # F32 KV: against the file's own weights the engine is exact to float32 arithmetic (measured
    # 9.1e-7 for f16, 7.5e-7 for bf16: F16 weights are multiplied in float32 here).
    assert rel_rms(engine_logits(converted(preset), parity_tokens, "f32"), rq) < 5e-6
    # F16 KV (the default): each cached k and v is rounded to binary16 (relative 2^-11 = 4.9e-4);
    # measured 6.7e-4 (f32) to 7.4e-4 (f16) after 11 layers. Bound 2e-3.
    e = engine_logits(converted(preset), parity_tokens, "f16")
    assert rel_rms(e, rq) < 2e-3
    # Against the released model the weight format's own rounding adds on top (the reference on the
    # file's weights is off by rel_rms(rq, R): 0 for f32, 1.5e-3 for f16, 1.3e-2 for bf16: each rounds
    # the exact int8 x bf16 products once).
    assert rel_rms(e, reference_logits) < rel_rms(rq, reference_logits) + 2e-3
    np.testing.assert_array_equal(e.argmax(1), reference_logits.argmax(1))


def _routing_of_first_token(params: dict[str, np.ndarray], config, token: int) -> list[set[int]]:
    """The experts the reference picks for a single token at position 0, per layer."""
    h = params["language_model/in_out_embed"][[token]] * config.embedding_multiplier
    pos, mask = np.arange(1), np.ones(1, dtype=bool)
    chosen = []
    for layer in range(config.n_layers):
        pre = f"transformer/decoder_layer_{layer}/"
        x = ref.rms_norm(h, params[pre + "rms_norm"], 1e-5)
        a = ref.attention(params, pre + "multi_head_attention/", x, pos, mask, config)
        h = h + ref.rms_norm(a, params[pre + "rms_norm_1"], 1e-5)
        x = ref.rms_norm(h, params[pre + "rms_norm_2"], 1e-5)
        probs = ref.softmax(x @ params[pre + "router"])[0]
        chosen.append({int(e) for e in np.argsort(-probs, kind="stable")[: config.n_selected_experts]})
        m = ref.moe(params, pre, x, config)
        h = h + ref.rms_norm(m, params[pre + "rms_norm_3"], 1e-5)
    return chosen


def test_decode_reads_only_the_selected_experts(tiny_reference, parity_tokens, tmp_path):
    # Every expert the reference does not select for this token is filled with NaN: reading any of its
    # weights (even with a zero gate: NaN * 0 = NaN) would poison the logits.
    params, config = tiny_reference
    token = parity_tokens[0]
    poisoned = dict(params)
    for layer, chosen in enumerate(_routing_of_first_token(params, config, token)):
        for module in ("moe/linear", "moe/linear_v", "moe/linear_1"):
            key = f"transformer/decoder_layer_{layer}/{module}"
            w = params[key].copy()
            for e in range(config.n_experts):
                if e not in chosen:
                    w[e] = np.nan
            poisoned[key] = w
    path = tmp_path / "poisoned.gguf"
    write_grok_gguf(path, poisoned, config.key_size, "F32")
    e = engine_logits(path, [token])
    assert np.all(np.isfinite(e))
    assert rel_rms(e, ref.forward(params, config, [token])) < 5e-6


def test_trained_model_against_the_reference(tmp_path):
    """The shipped tiny Grok trained on the KJV (edge/data/tiny-grok, release format) converted at f32:
    the engine against the float64 reference on the release checkpoint, on real text. F32 cache: float32
    arithmetic only (bound 5e-6); F16 cache (default): binary16 rounding of k and v (measured 4e-5,
    bound 2e-4). Greedy tokens agree with the reference's argmax at every position."""
    import json

    from edge.commands.demo import convert_preset, data_dir

    info = json.loads((data_dir() / "model.json").read_text())
    params = ref.load_checkpoint(data_dir() / "ckpt-0", int(info["key_size"]))
    config = ref.GrokConfig.from_params(params, int(info["key_size"]))
    path = convert_preset("f32", tmp_path)
    with edge.Model(path, n_ctx=256, n_threads=1, kv_type="f32") as model:
        tokens = model.tokenize("And God said, Let there be light: and there was light.")
        exact = model.logits(tokens)
    r = ref.forward(params, config, tokens)
    assert rel_rms(exact, r) < 5e-6
    assert rel_rms(engine_logits(path, tokens, "f16"), r) < 2e-4
    np.testing.assert_array_equal(exact.argmax(1), r.argmax(1))

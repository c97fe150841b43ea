"""The C engine's KV cache types (F32, F16, Q8_0) stay within their rounding of the exact logits.

Each within its rounding of the exact F32 cache or of the float64 reference, on 11 layers, on one layer,
and with a head dim of 32.
"""

from __future__ import annotations

import dataclasses

import grok_reference as ref
import pytest
from engine_compare import engine_logits, rel_rms
from engine_gguf import write_grok_gguf

import edge


@pytest.mark.parametrize(("kv_type", "bound"), [("f16", 2e-3), ("q8_0", 0.35)])
def test_kv_cache_types(kv_type, bound, converted, parity_tokens):
    # Against the exact F32 cache. F16: binary16 rounding (2^-11), measured 5.7e-4. Q8_0: blocks of 32
    # with one scale (~0.5 % per value, like 8-bit activations), amplified by this random model through
    # 11 layers like any 8-bit rounding (measured 0.24; on one layer 6.9e-3).
    path = converted("f32")
    exact = engine_logits(path, parity_tokens, "f32")
    assert rel_rms(engine_logits(path, parity_tokens, kv_type), exact) < bound


@pytest.mark.parametrize("isa", ["auto", "scalar"])
def test_a_head_dim_of_32(isa, tiny_reference, parity_tokens, tmp_path):
    # The same weights read as twice the heads of 32 dims: the attention loops' narrower last pass (the
    # SIMD weighted sum takes 64 dims a pass) and the rotate-half pairs of a 32-dim head, against the
    # reference with that head dim, per cache type. F32: float32 rounding (measured 2.4e-7 AVX2, 5.5e-7
    # scalar); F16: binary16 rounding of K and V (measured 2.0e-4); Q8_0: as the one-layer test below
    # (measured 6.9e-3).
    params, config = tiny_reference
    cfg = ref.GrokConfig.from_params(params, 32)
    assert cfg.n_q_heads == 2 * config.n_q_heads
    one = {k: v for k, v in params.items() if not k.startswith("transformer/") or "_layer_0/" in k}
    path = tmp_path / "head-32.gguf"
    write_grok_gguf(path, one, 32, "F32")
    rq = ref.forward(one, dataclasses.replace(cfg, n_layers=1), parity_tokens)
    for kv_type, bound in [("f32", 5e-6), ("f16", 2e-3), ("q8_0", 2e-2)]:
        with edge.Model(path, n_ctx=64, n_threads=1, kv_type=kv_type, isa=isa) as model:
            assert model.hparams.head_dim == 32
            assert rel_rms(model.logits(parity_tokens), rq) < bound, kv_type


def test_q8_0_kv_cache_on_one_layer(tiny_reference, parity_tokens, tmp_path):
    # Without 11 layers of amplification the Q8_0 cache's rounding (blocks of 32, scale max|x|/127:
    # ~0.3 % rms per value) moves the logits by 6.9e-3 (measured). Bound 2e-2.
    params, config = tiny_reference
    one = {k: v for k, v in params.items() if not k.startswith("transformer/") or "_layer_0/" in k}
    path = tmp_path / "one-f32.gguf"
    write_grok_gguf(path, one, config.key_size, "F32")
    exact = engine_logits(path, parity_tokens, "f32")
    assert rel_rms(engine_logits(path, parity_tokens, "q8_0"), exact) < 2e-2

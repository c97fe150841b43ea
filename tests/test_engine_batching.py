"""The C engine's logits do not depend on how the work is cut: batches, threads, tiles, state.

Prompt batches of any size against token-by-token decode, any thread count (the same bits), grouped
attention over long contexts, Grok-1's six query heads per KV head, expert tiles of long prompts;
truncation and saved state resume exactly.
"""

from __future__ import annotations

import dataclasses

import grok_reference as ref
import numpy as np
import pytest
from edge.convert.synthetic import PRESETS, make_synthetic
from engine_compare import engine_logits, rel_rms
from engine_gguf import write_grok_gguf

import edge
from edge._native import EdgeFormatError


def test_prompt_batches_and_incremental_decode_agree(converted, parity_tokens):
    path = converted("f32")
    whole = engine_logits(path, parity_tokens)
    # n_batch 5: the prompt runs in chunks 5 + 5 + 2 (experts grouped per chunk).
    chunked = engine_logits(path, parity_tokens, n_batch=5)
    with edge.Model(path, n_ctx=64, n_threads=1, kv_type="f32") as model:
        steps = np.stack([model.eval([t]) for t in parity_tokens])
    # Same math in a different summation order: float32 rounding only.
    assert rel_rms(chunked, whole) < 1e-6
    assert rel_rms(steps, whole) < 1e-6


@pytest.mark.parametrize("preset", ["q8_0", "q4_k_m"])
def test_threads_and_batching_give_the_same_bits(converted, parity_tokens, preset):
    # Work split over 3 threads (matmul rows, attention heads, the GELU) vs one, and one token at a time vs
    # the whole prompt (quad kernels, experts on their token groups): every value is computed by the same
    # operations in the same order, so the logits are identical, not merely close.
    # 5 threads: more than the tiny model's 4 query heads (attention then splits (token, head) pairs).
    path = converted(preset)
    with edge.Model(path, n_ctx=64, n_threads=1) as one, edge.Model(path, n_ctx=64, n_threads=3) as three:
        a, b = one.logits(parity_tokens), three.logits(parity_tokens)
        three.reset()
        steps = np.stack([three.eval([t]) for t in parity_tokens])
    with edge.Model(path, n_ctx=64, n_threads=5) as five:
        c = five.logits(parity_tokens)
        five.reset()
        steps5 = np.stack([five.eval([t]) for t in parity_tokens])
    np.testing.assert_array_equal(b, a)
    np.testing.assert_array_equal(steps, a)
    np.testing.assert_array_equal(c, a)
    np.testing.assert_array_equal(steps5, a)


@pytest.mark.parametrize("kv_type", ["f16", "q8_0", "f32"])
def test_grouped_attention_gives_the_same_bits_over_long_contexts(converted, kv_type):
    # With threads <= query heads, the heads of one KV head are attended together, for tiles of a batch's
    # tokens (each cached row read once for them; the weighted sum over the values in blocks of 64 keys);
    # with 5 threads on the tiny model's 4 heads, one head and token at a time. 150 positions: several key
    # blocks, their sums carried across; 64-token batches and a last one of 22 (a partial tile).
    tokens = [int(t) for t in np.random.default_rng(11).integers(4, 512, 150)]
    logits = []
    for threads in (1, 2, 5):
        with edge.Model(
            converted("q8_0"), n_ctx=160, n_batch=64, n_threads=threads, kv_type=kv_type
        ) as model:
            logits.append(model.logits(tokens))
            model.reset()
            model.eval(tokens[:-1])
            logits.append(model.eval(tokens[-1:])[None])
    np.testing.assert_array_equal(logits[2], logits[0])
    np.testing.assert_array_equal(logits[4], logits[0])
    for one_token in logits[1::2]:
        np.testing.assert_array_equal(one_token[0], logits[0][-1])


def test_six_query_heads_per_kv_head_as_grok1(tmp_path):
    # Grok-1 has 48 query heads on 8 KV heads: 6 per KV head, so attention tiles hold 5 tokens (30 of 32
    # rows) and the loops take each token's 6 heads as 4 + 2. A 2-layer model with 12 heads on 2 KV heads:
    # the reference (float64) within the F16 cache's rounding, and bit for bit the same logits with the
    # tiles (1 and 2 threads), one head and token at a time (13 threads > 12 heads) and token by token
    # (it fails when a tile's earlier tokens keep a later token's key).
    shape = dataclasses.replace(
        PRESETS["tiny"], d_model=384, n_layers=2, n_q_heads=12, key_size=32, ffn_size=128
    )
    make_synthetic(tmp_path / "ckpt-0", shape, seed=3)
    params = ref.load_checkpoint(tmp_path / "ckpt-0", shape.key_size)
    config = ref.GrokConfig.from_params(params, shape.key_size)
    path = tmp_path / "g6.gguf"
    write_grok_gguf(path, params, shape.key_size, "F32")
    tokens = [int(t) for t in np.random.default_rng(6).integers(1, 512, 45)]
    expected = ref.forward(params, config, tokens)
    logits = []
    for threads in (1, 2, 13):
        with edge.Model(path, n_ctx=48, n_batch=16, n_threads=threads, kv_type="f16") as model:
            logits.append(model.logits(tokens))
            model.reset()
            model.eval(tokens[:-1])
            last = model.eval(tokens[-1:])
        np.testing.assert_array_equal(last, logits[-1][-1])
    assert rel_rms(logits[0], expected) < 2e-3  # the F16 cache's rounding (the f16 preset's bound)
    np.testing.assert_array_equal(logits[1], logits[0])
    np.testing.assert_array_equal(logits[2], logits[0])


def test_long_prompt_batches_with_expert_tiles(converted):
    # 600 tokens in one batch send 1200 rows to 8 experts, so at least one expert gets more than the
    # 128-row tile (EDGE_MOE_TILE) and runs in several tiles; 64-token batches never do.
    tokens = [int(t) for t in np.random.default_rng(5).integers(4, 512, 600)]
    with edge.Model(converted("f32"), n_ctx=600, n_batch=600, n_threads=1, kv_type="f32") as model:
        big = model.logits(tokens)
    with edge.Model(converted("f32"), n_ctx=600, n_batch=64, n_threads=1, kv_type="f32") as model:
        small = model.logits(tokens)
    assert rel_rms(big, small) < 1e-5


def test_truncate_and_re_eval(converted, parity_tokens):
    path = converted("q8_0")
    other = [t + 1 for t in parity_tokens[6:]]
    with edge.Model(path, n_ctx=64, n_threads=1) as model:
        model.eval(parity_tokens)
        model.truncate(6)
        assert model.n_past == 6
        tail = model.eval(other, all_logits=True)
        fresh = model.logits(parity_tokens[:6] + other)
    np.testing.assert_allclose(tail, fresh[6:], rtol=0, atol=1e-5 * np.abs(fresh).max())


def test_state_save_and_load_round_trip(converted, parity_tokens):
    with edge.Model(converted("q8_0"), n_ctx=64, n_threads=1) as model:
        model.eval(parity_tokens[:8])
        state = model.save_state()
        after = model.eval(parity_tokens[8:], all_logits=True)
        model.reset()
        model.eval([7, 8, 9])  # something else in between
        model.load_state(state)
        assert model.n_past == 8 and model.tokens == parity_tokens[:8]
        again = model.eval(parity_tokens[8:], all_logits=True)
        np.testing.assert_array_equal(again, after)
        with pytest.raises(EdgeFormatError):
            model.load_state(state[:-1])

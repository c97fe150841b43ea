"""The C engine runs Grok GGUFs laid out by others: llama.cpp's metadata, quantizer, per-expert tensors.

llama.cpp's metadata (Grok-1's constants as fallbacks), a file quantized by llama.cpp's own quantizer,
per-expert tensors; hyperparameters come from the metadata. Logits against the same weights in our
layout, or the float64 reference.
"""

from __future__ import annotations

import grok_reference as ref
import numpy as np
import pytest
from engine_compare import engine_logits, rel_rms
from engine_gguf import params_from_gguf, write_grok_gguf
from parity import llama_logits

import edge


def test_llama_cpp_style_metadata_falls_back_to_grok1_constants(tiny_reference, parity_tokens, tmp_path):
    # GGUFs from llama.cpp's convert_hf_to_gguf.py carry no grok.embedding_scale / output_scale /
    # attention.output_multiplier / attn_logit_softcapping: the engine then uses Grok-1's values, as
    # llama.cpp's grok graph does. Same weights, same logits (to float32 rounding of the constants).
    params, config = tiny_reference
    ours, theirs = tmp_path / "ours.gguf", tmp_path / "theirs.gguf"
    write_grok_gguf(ours, params, config.key_size, "F32")
    write_grok_gguf(theirs, params, config.key_size, "F32", our_constants=False)
    with edge.Model(theirs, n_ctx=64) as model:
        h = model.hparams
        assert h.embedding_scale == 78.38367176906169 and h.attn_logit_softcap == 30.0
        assert h.output_scale == 0.5773502691896257 and h.attn_output_multiplier == 0.08838834764831845
    a = engine_logits(ours, parity_tokens)
    b = engine_logits(theirs, parity_tokens)
    assert rel_rms(b, a) < 1e-6


def test_runs_a_gguf_quantized_by_llama_cpp(tiny_reference, parity_tokens, tmp_path):
    # llama.cpp's own quantizer (llama_model_quantize, as the llama-quantize tool) on a GGUF without our
    # constants: llama.cpp's tensor order, alignment, Q4_K_M mix (Q4_K/Q5_K/Q6_K/Q8_0 here) and
    # metadata. Tolerance as for our quantized presets: within 1.5x llama.cpp's own error + 0.03.
    import ctypes

    llama_cpp = pytest.importorskip("llama_cpp")
    params, config = tiny_reference
    source, quantized = tmp_path / "f32.gguf", tmp_path / "llama-q4_k_m.gguf"
    write_grok_gguf(source, params, config.key_size, "F32", our_constants=False)
    qp = llama_cpp.llama_model_quantize_default_params()
    qp.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    qp.nthread = 1
    assert (
        llama_cpp.llama_model_quantize(str(source).encode(), str(quantized).encode(), ctypes.byref(qp)) == 0
    )
    rq = ref.forward(params_from_gguf(quantized), config, parity_tokens)
    ours = rel_rms(engine_logits(quantized, parity_tokens, "f16"), rq)
    theirs = rel_rms(llama_logits(quantized, parity_tokens), rq)
    assert ours < 1.5 * theirs + 0.03, (ours, theirs)


def test_per_expert_tensors_load_like_stacked_ones(tiny_reference, parity_tokens, tmp_path):
    params, config = tiny_reference
    stacked, split = tmp_path / "stacked.gguf", tmp_path / "split.gguf"
    write_grok_gguf(stacked, params, config.key_size, "Q8_0")
    write_grok_gguf(split, params, config.key_size, "Q8_0", split_experts=True)
    np.testing.assert_array_equal(engine_logits(split, parity_tokens), engine_logits(stacked, parity_tokens))


def test_hparams_come_from_metadata(converted, tiny_reference):
    _, config = tiny_reference
    with edge.Model(converted("q8_0"), n_ctx=100000) as model:
        h = model.hparams
        assert (h.n_vocab, h.n_embd, h.n_layer) == (config.vocab_size, config.d_model, config.n_layers)
        assert (h.n_head, h.n_head_kv, h.head_dim) == (config.n_q_heads, config.n_kv_heads, config.key_size)
        assert (h.n_ff, h.n_expert, h.n_expert_used) == (config.ffn_size, config.n_experts, 2)
        assert h.rope_freq_base == 10000.0 and abs(h.rms_eps - 1e-5) < 1e-10
        assert model.n_ctx == h.n_ctx_train  # n_ctx is clamped to the model's context length

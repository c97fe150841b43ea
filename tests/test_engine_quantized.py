"""The C engine's error on quantized files is that of 8-bit activations, no larger than llama.cpp's.

Presets Q8_0 ... Q2_K and IQ4_XS: the error against the float64 reference on the file's own weights is at
most that of llama.cpp on the same file (plus a margin), and greedy tokens agree with llama.cpp's.

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

import dataclasses

import grok_reference as ref
import numpy as np
import pytest
from engine_compare import engine_logits, rel_rms
from engine_gguf import params_from_gguf, write_grok_gguf
from parity import llama_logits

QUANT_PRESETS = ["q8_0", "q6_k", "q5_k_m", "q4_k_m", "q3_k_m", "q2_k", "iq4_xs"]


@pytest.mark.parametrize("preset", QUANT_PRESETS)
def test_quantized_presets_against_the_reference(preset, converted, parity_tokens, file_reference):
    """The engine's own error on quantized files is that of 8-bit activations, the same as llama.cpp's.

    This random 11-layer model amplifies small perturbations: with the activations of every product
    rounded to 8 bits (Q8_0 / Q8_K blocks, ~0.5 % per product) the logits move by 5-35 % (measured with
    the exact int8 x bf16 weights: q8_0 3.8e-2, q6_k 1.5e-1, q5_k_m 1.3e-1, q4_k_m 9.0e-2, q3_k_m 1.6e-1,
    q2_k 2.8e-1, iq4_xs 2.8e-1 with the F16 cache), and llama.cpp, which rounds activations the same way,
    moves as much (3.9e-2 .. 3.3e-1). The stated tolerance is relative to llama.cpp as a witness: our
    error against the float64 reference on the file's weights is at most 1.5x llama.cpp's error on the
    same file and tokens, plus 0.03; and never above 0.35 in absolute terms. (On one layer the same
    rounding gives 1.3 % for Q8_0 and 2.2 % for Q4_K: see test_one_layer_quantized_error.)

    Greedy agreement: ``parity_tokens`` keep routing gaps >= ROUTE_MARGIN on the release's weights, but
    quantization moves the router inputs and the gaps on a file's own weights shrink to 2e-4 .. 2e-3 at
    some position for every preset here (iq4_xs: 0.0011 at position 5, where 8-bit activations flip
    the choice in both engines: argmax agreement with the reference 0.58 for both). So the argmax line
    is: agreement with the reference >= 0.75, or at least llama.cpp's own agreement on the same file;
    and agreement with llama.cpp (an independent implementation rounding the same way) >= 0.75."""
    rq = file_reference(preset)
    e = engine_logits(converted(preset), parity_tokens, "f16")
    lc = llama_logits(converted(preset), parity_tokens)
    err, llama_err = rel_rms(e, rq), rel_rms(lc, rq)
    assert err < 1.5 * llama_err + 0.03, (err, llama_err)
    assert err < 0.35
    agree, llama_agree = np.mean(e.argmax(1) == rq.argmax(1)), np.mean(lc.argmax(1) == rq.argmax(1))
    assert agree >= 0.75 or agree >= llama_agree, (agree, llama_agree)
    assert np.mean(e.argmax(1) == lc.argmax(1)) >= 0.75


@pytest.mark.parametrize(("qtype", "bound"), [("Q8_0", 0.03), ("Q6_K", 0.05), ("Q4_K", 0.05)])
def test_one_layer_quantized_error(qtype, bound, tiny_reference, parity_tokens, tmp_path):
    # Layer 0 of the tiny checkpoint alone: no amplification through depth. The engine's error against
    # the reference on the file's weights is the activation rounding (8-bit blocks: ~0.5 % per product,
    # a handful of products in sequence): measured 1.3e-2 (Q8_0), 2.3e-2 (Q6_K), 2.2e-2 (Q4_K).
    params, config = tiny_reference
    one = {k: v for k, v in params.items() if not k.startswith("transformer/") or "_layer_0/" in k}
    cfg = dataclasses.replace(config, n_layers=1)
    path = tmp_path / f"one-{qtype}.gguf"
    write_grok_gguf(path, one, config.key_size, qtype)
    rq = ref.forward(params_from_gguf(path), cfg, parity_tokens)
    assert rel_rms(engine_logits(path, parity_tokens, "f32"), rq) < bound

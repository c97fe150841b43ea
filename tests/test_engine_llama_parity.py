"""Greedy continuations: our engine and llama.cpp (llama-cpp-python) on the same GGUF, 32 tokens.

Random synthetic weights can produce near-ties between the two best next tokens, where float rounding
legitimately decides. The test does not hide that: for each candidate prompt it runs llama.cpp greedily,
evaluates the same sequence with our engine, and measures per step i delta_i = max |ours - llama.cpp|
over that step's logits. It uses the first prompt where every step's top-1/top-2 gap in llama.cpp
exceeds 2 * delta_i — there the two argmaxes provably cannot differ unless an engine is wrong — and
then requires the 32 tokens to be identical (through both generate_tokens and the text API). The
typical delta is bounded (stated per type), so a broken engine cannot pass by having no qualifying
prompt: that fails too.
"""

from __future__ import annotations

import numpy as np
import pytest

import edge

N_NEW = 32
PROMPTS = [
    "The answer to life the universe and everything is of course",
    "hello world",
    "the model routes each token to two experts",
    "print the value and return",
    "grok",
]
# Bound on the median over steps of delta_i, relative to max |logit|. F32: both compute in float32 with
# F16 KV caches; llama.cpp's GELU uses an F16 lookup table (measured ~8e-4). Q8_0: both round
# activations to Q8_0 blocks, in different places and orders (measured ~1.5e-2; single steps reach
# 0.1-0.3 where a routing decision is within rounding distance, which this random model has).
DELTA_BOUND = {"f32": 5e-3, "q8_0": 0.05}


def llama_greedy(llm, prompt: list[int]) -> tuple[list[int], np.ndarray, float]:
    """llama.cpp's greedy continuation, its logits for the whole sequence, the smallest top-2 gap."""
    llm.reset()
    llm.eval(prompt)
    out: list[int] = []
    gap = np.inf
    for i in range(N_NEW):
        row = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float64)
        top = np.argsort(-row)[:2]
        gap = min(gap, row[top[0]] - row[top[1]])
        out.append(int(top[0]))
        if i + 1 < N_NEW:
            llm.eval([int(top[0])])
    logits = np.asarray(llm.scores[: llm.n_tokens], dtype=np.float64)
    return out, logits, float(gap)


@pytest.mark.parametrize("preset", ["f32", "q8_0"])
def test_greedy_continuation_matches_llama_cpp(preset, converted):
    llama_cpp = pytest.importorskip("llama_cpp")
    path = converted(preset)
    llm = llama_cpp.Llama(str(path), n_ctx=128, logits_all=True, n_threads=1, verbose=False)
    tried = []
    try:
        with edge.Model(path, n_ctx=128, n_threads=1) as model:
            for text in PROMPTS:
                prompt = model.tokenize(text)
                theirs, their_logits, gap = llama_greedy(llm, prompt)
                # the same sequence through our engine (llama.cpp evaluated prompt + 31 generated tokens);
                # rows len(prompt)-1 .. are the 32 greedy steps
                steps = slice(len(prompt) - 1, None)
                ours_logits = model.logits(prompt + theirs[:-1])[steps]
                their_steps = their_logits[steps]
                delta = np.abs(ours_logits - their_steps).max(axis=1)
                assert np.median(delta) < DELTA_BOUND[preset] * np.abs(their_steps).max(), (text, delta)
                top2 = np.sort(their_steps, axis=1)[:, -2:]
                gaps = top2[:, 1] - top2[:, 0]
                tried.append((text, float((gaps / delta).min())))
                if np.any(gaps <= 2 * delta):
                    continue  # a near-tie within rounding distance: not a fair comparison
                ours = model.generate_tokens(prompt, N_NEW, temperature=0.0)
                assert ours == theirs, (text, ours, theirs)
                # and through the text API: the same tokens, detokenized
                text_out = model.generate(prompt, max_tokens=N_NEW, temperature=0.0)
                assert text_out == _continuation_text(model, theirs)
                return
    finally:
        llm.close()
    pytest.fail(f"no prompt whose top-2 gaps all exceed 2 * delta (prompt, min gap/delta): {tried}")


def _continuation_text(model: edge.Model, ids: list[int]) -> str:
    """What generate() returns for these tokens: decoded as a continuation, up to the first EOS."""
    if model.tokenizer.eos_id in ids:
        ids = ids[: ids.index(model.tokenizer.eos_id)]
    dec = model.tokenizer.stream_decoder(continuation=True)
    return "".join(dec.feed(t) for t in ids) + dec.flush()

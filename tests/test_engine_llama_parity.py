"""Greedy continuations of our engine and llama.cpp on one GGUF agree token for token where no tie decides.

Our engine and llama.cpp (llama-cpp-python) on the same GGUF, 32 tokens.

Random synthetic weights can produce near-ties between the two best next tokens, where float rounding
legitimately decides. The test does not hide that: for each candidate prompt it runs llama.cpp greedily,
evaluates the same sequence with our engine, and measures per step i delta_i = max |ours - llama.cpp|
over that step's logits. It uses the first prompt where every step's top-1/top-2 gap in llama.cpp
exceeds 2 * delta_i — there the two argmaxes provably cannot differ unless an engine is wrong — and
then requires the 32 tokens to be identical (through both generate_tokens and the text API), and that
prompt's typical delta to be within the bound stated per type. A broken engine cannot pass by having
no qualifying prompt: that fails too. The bound is not applied to the prompts skipped: a near-tie in a
router early in a sequence sends a token to another expert in one engine (a legitimate rounding
decision), and its changed keys and values move every later step, so the median over the steps of such
a prompt exceeds the typical delta (measured: "hello world", 0.076 of max |logit| with a step of 0.42 at
position 6). Which
prompts qualify moves with any change of float summation order, so there are several candidates.
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
    "once upon a time",
    "to be or not to be",
    "the quick brown fox jumps over the lazy dog",
]
# Bound on the median over steps of delta_i, relative to max |logit|. F32: both compute in float32 with
# F16 KV caches; llama.cpp's GELU uses an F16 lookup table (measured ~8e-4). Q8_0: both round
# activations to Q8_0 blocks, in different places and orders (measured ~1.5e-2; single steps reach
# 0.1-0.3 where a routing decision is within rounding distance, which this random model has).
DELTA_BOUND = {"f32": 5e-3, "q8_0": 0.05}


def llama_greedy(llm, prompt: list[int], n_new: int = N_NEW) -> tuple[list[int], np.ndarray, float]:
    """llama.cpp's greedy continuation, its logits for the whole sequence, the smallest top-2 gap."""
    llm.reset()
    llm.eval(prompt)
    out: list[int] = []
    gap = np.inf
    for i in range(n_new):
        row = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float64)
        top = np.argsort(-row)[:2]
        gap = min(gap, row[top[0]] - row[top[1]])
        out.append(int(top[0]))
        if i + 1 < n_new:
            llm.eval([int(top[0])])
    logits = np.asarray(llm.scores[: llm.n_tokens], dtype=np.float64)
    return out, logits, float(gap)


def greedy_margins(ours: np.ndarray, theirs: np.ndarray) -> tuple[np.ndarray, float, bool]:
    """Per greedy step (rows): delta, our largest logit difference from llama.cpp's; the smallest ratio of
    llama.cpp's top-2 gap to delta; and whether every gap exceeds 2 * delta (then rounding cannot flip a
    step, and the token sequences must agree)."""
    delta = np.abs(ours - theirs).max(axis=1)
    top2 = np.sort(theirs, axis=1)[:, -2:]
    gaps = top2[:, 1] - top2[:, 0]
    return delta, float((gaps / delta).min()), not np.any(gaps <= 2 * delta)


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
                delta, margin, fair = greedy_margins(ours_logits, their_steps)
                tried.append((text, round(margin, 2), round(float(np.median(delta)), 4)))
                if not fair:
                    continue  # a near-tie within rounding distance: not a fair comparison
                assert np.median(delta) < DELTA_BOUND[preset] * np.abs(their_steps).max(), (text, delta)
                ours = model.generate_tokens(prompt, N_NEW, temperature=0.0)
                assert ours == theirs, (text, ours, theirs)
                # and through the text API: the same tokens, detokenized
                text_out = model.generate(prompt, max_tokens=N_NEW, temperature=0.0)
                assert text_out == _continuation_text(model, theirs)
                return
    finally:
        llm.close()
    pytest.fail(
        f"no prompt whose top-2 gaps all exceed 2 * delta (prompt, min gap/delta, median delta): {tried}"
    )


def _continuation_text(model: edge.Model, ids: list[int]) -> str:
    """What generate() returns for these tokens: decoded as a continuation, up to the first EOS."""
    if model.tokenizer.eos_id in ids:
        ids = ids[: ids.index(model.tokenizer.eos_id)]
    dec = model.tokenizer.stream_decoder(continuation=True)
    return "".join(dec.feed(t) for t in ids) + dec.flush()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """preset -> the shipped trained tiny Grok (edge/data/tiny-grok, KJV) converted at that preset."""
    from edge.commands.demo import convert_preset

    out = tmp_path_factory.mktemp("trained")
    return lambda preset: convert_preset(preset, out)


TRAINED_PROMPTS = [
    "And God said,",
    "In the beginning",
    "And the LORD spake unto Moses, saying,",
    "Blessed are",
    "Honour thy father",
    "Hear, O Israel",
]


@pytest.mark.parametrize("preset", ["f32", "q8_0"])
def test_trained_model_greedy_matches_llama_cpp_for_64_tokens(preset, trained):
    """A trained model's next-token distributions are peaked, so greedy continuations are a sharp
    comparison. Same rule as above: the first prompt whose 64 steps all have llama.cpp's top-2 gap
    above 2 * delta_i is compared token for token. Measured on "And God said,": logits within 4.8e-5
    (f32) / 2.1e-3 (q8_0) relative RMS of llama.cpp's; f32 qualifies there (min gap/delta 25). With the
    exact int8 x bf16 weights q8_0 qualifies on none of the first four (min gap/delta 1.69, 0.91, 1.34,
    0.04; the tokens agree on the first three) and on "Honour thy father" (3.05; "Hear, O Israel" 11.3).
    Of 22 KJV prompts tried two qualified, and 21 were within the q8_0 bound ("And Jesus answered",
    not a candidate: 1.4e-2)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    path = trained(preset)
    llm = llama_cpp.Llama(str(path), n_ctx=256, logits_all=True, n_threads=1, verbose=False)
    tried = []
    try:
        with edge.Model(path, n_ctx=256, n_threads=1) as model:
            for text in TRAINED_PROMPTS:
                prompt = model.tokenize(text)
                theirs, their_logits, _ = llama_greedy(llm, prompt, 64)
                ours_logits = model.logits(prompt + theirs[:-1])
                rel = np.linalg.norm(ours_logits - their_logits) / np.linalg.norm(their_logits)
                assert rel < {"f32": 5e-4, "q8_0": 1e-2}[preset], (text, rel)
                steps = slice(len(prompt) - 1, None)
                _, margin, fair = greedy_margins(ours_logits[steps], their_logits[steps])
                tried.append((text, margin))
                if not fair:
                    continue
                assert model.generate_tokens(prompt, 64, temperature=0.0) == theirs, text
                return
    finally:
        llm.close()
    pytest.fail(f"no prompt whose top-2 gaps all exceed 2 * delta (prompt, min gap/delta): {tried}")

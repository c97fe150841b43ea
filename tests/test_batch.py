"""Several sequences in one forward pass: each gets the bits it gets alone (batch invariance).

edge.h's edge_batch_eval through edge.BatchContext. The guarantee tested: batch invariance, bit for bit.
A sequence's logits from a batched pass equal those of the same tokens evaluated alone in a one-sequence
context (edge.Model), for prompt chunks and single decode tokens mixed in one pass, whatever else is in
the pass: the kernels compute each token's sums on their own (the multi-token kernels' per-token sums are
the one-token kernel's), attention runs per sequence over its own cache, and every other step of the
forward pass is per token. Tested on the weight types whose products take each activation path (F16:
float activations; Q8_0: Q8_0; Q4_K: Q8_K).
"""

from __future__ import annotations

import numpy as np
import pytest

import edge
from edge._native import EdgeArgumentError, EdgeRangeError

PRESETS = ["f16", "q8_0", "q4_k_m"]
THREADS = 2


def alone(path, tokens: list[int], n_ctx: int = 64) -> np.ndarray:
    """Logits of every token of ``tokens``: the prompt in one call, then one token per call (decode)."""
    with edge.Model(path, n_ctx=n_ctx, n_threads=THREADS, kv_type="f16") as m:
        return m.eval(tokens, all_logits=True)


def alone_stepwise(path, prompt: list[int], decode: list[int]) -> np.ndarray:
    """Logits of the prompt's last token, then of each decode token evaluated on its own."""
    with edge.Model(path, n_ctx=64, n_threads=THREADS, kv_type="f16") as m:
        rows = [m.eval(prompt)]
        rows += [m.eval([t]) for t in decode]
        return np.stack(rows)


SEQS = {  # seq id -> (prompt, decode tokens)
    0: ([5, 17, 200, 3, 44, 91, 7], [12, 300, 8, 77]),
    1: ([9, 9, 120, 31, 250, 18, 66, 2, 140, 21, 400, 11, 5], [6, 19, 401]),
    2: ([33, 61, 2], [90, 4, 4, 222, 15]),
}


@pytest.mark.parametrize("preset", PRESETS)
def test_batched_logits_equal_each_sequence_alone_bit_for_bit(converted, preset):
    path = converted(preset)
    expect = {q: alone_stepwise(path, p, d) for q, (p, d) in SEQS.items()}
    got: dict[int, list[np.ndarray]] = {q: [] for q in SEQS}
    with edge.BatchContext(path, n_seq=4, n_ctx=64, n_threads=THREADS) as bc:
        # step 1: seq 0's prompt alone; step 2: seq 0 decodes while seqs 1 and 2 read their prompts;
        # then all three decode together (seq 2 has more decode tokens: it finishes alone)
        got[0].append(bc.eval([0] * 7, SEQS[0][0])[0])
        seqs = [0] + [1] * 13 + [2] * 3
        toks = [SEQS[0][1][0]] + SEQS[1][0] + SEQS[2][0]
        rows = bc.eval(seqs, toks)
        assert rows.shape == (3, bc.n_vocab)
        got[0].append(rows[0])
        got[1].append(rows[1])
        got[2].append(rows[2])
        pos = {0: 1, 1: 0, 2: 0}
        while True:
            active = [q for q in SEQS if pos[q] < len(SEQS[q][1])]
            if not active:
                break
            rows = bc.eval(active, [SEQS[q][1][pos[q]] for q in active])
            for r, q in enumerate(active):
                got[q].append(rows[r])
                pos[q] += 1
        for q in SEQS:
            assert bc.n_past(q) == len(SEQS[q][0]) + len(SEQS[q][1])
            assert bc.tokens(q) == SEQS[q][0] + SEQS[q][1]
        assert bc.n_past(3) == 0
    for q in SEQS:
        np.testing.assert_array_equal(np.stack(got[q]), expect[q], err_msg=f"{preset}: sequence {q}")


def test_passes_split_at_n_batch_and_sequences_cross_them(converted):
    # n_batch 4: the 23 prompt tokens of three sequences take 6 passes, sequences continuing across them;
    # every token's logits (want all) equal the prompt evaluated alone.
    path = converted("q8_0")
    seqs = [0] * 7 + [1] * 13 + [2] * 3
    toks = SEQS[0][0] + SEQS[1][0] + SEQS[2][0]
    with edge.BatchContext(path, n_seq=3, n_ctx=64, n_batch=4, n_threads=THREADS) as bc:
        rows = bc.eval(seqs, toks, want=[True] * len(toks))
    start = 0
    for q in range(3):
        n = len(SEQS[q][0])
        np.testing.assert_array_equal(rows[start : start + n], alone(path, SEQS[q][0]), err_msg=f"seq {q}")
        start += n


def test_truncate_one_slot_and_reuse_its_prefix(converted):
    path = converted("q8_0")
    p0, p1 = SEQS[0][0], SEQS[1][0]
    with edge.BatchContext(path, n_seq=2, n_ctx=64, n_threads=THREADS) as bc:
        bc.eval([0] * len(p0) + [1] * len(p1), p0 + p1)
        bc.truncate(1, 5)  # keep seq 1's first 5 tokens; seq 0 untouched
        assert bc.n_past(1) == 5 and bc.n_past(0) == len(p0)
        again = bc.eval([1] * (len(p1) - 5), p1[5:], want=[True] * (len(p1) - 5))
        tail = bc.eval([0], [SEQS[0][1][0]])
    full = alone(path, p1)
    np.testing.assert_array_equal(again, full[5:])
    np.testing.assert_array_equal(tail[0], alone(path, p0 + [SEQS[0][1][0]])[-1])


def test_bad_batches_are_refused_and_evaluate_nothing(converted):
    path = converted("q8_0")
    with edge.BatchContext(path, n_seq=2, n_ctx=16, n_threads=THREADS) as bc:
        bc.eval([0, 0, 1], [5, 6, 7])
        with pytest.raises(EdgeArgumentError, match="sequence id 2"):
            bc.eval([0, 2], [5, 6])
        with pytest.raises(EdgeArgumentError, match="adjacent"):
            bc.eval([0, 1, 0], [5, 6, 7])
        with pytest.raises(EdgeRangeError, match="out of range"):
            bc.eval([0, 1], [5, bc.n_vocab])
        with pytest.raises(EdgeRangeError, match="sequence 1: context overflow"):
            bc.eval([0] + [1] * 16, [5] * 17)
        with pytest.raises(EdgeRangeError):
            bc.truncate(0, 3)
        assert (bc.n_past(0), bc.n_past(1)) == (2, 1)
        assert (bc.tokens(0), bc.tokens(1)) == ([5, 6], [7])
        with pytest.raises(EdgeArgumentError):
            bc.n_past(2)


def test_a_context_of_one_sequence_keeps_the_single_sequence_api(converted):
    # n_seq defaults to 1: edge_batch_eval on sequence 0 is edge_context_eval's sequence
    path = converted("q8_0")
    with edge.BatchContext(path, n_ctx=32, n_threads=THREADS) as bc:
        rows = bc.eval([0] * 7, SEQS[0][0], want=[True] * 7)
    np.testing.assert_array_equal(rows, alone(path, SEQS[0][0]))


def test_batched_sequences_through_the_smallest_expert_cache_give_the_same_bits(converted):
    from edge.experts import min_budget

    path = converted("q4_k_m")
    with edge.Model(path, n_ctx=64, n_threads=THREADS) as m:
        smallest = min_budget(m._model, prefetch=True)
    seqs = [0] * 7 + [1] * 13 + [2] * 3
    toks = SEQS[0][0] + SEQS[1][0] + SEQS[2][0]
    results = []
    for cache in (None, smallest):
        with edge.BatchContext(path, n_seq=3, n_ctx=64, n_threads=THREADS, expert_cache=cache) as bc:
            first = bc.eval(seqs, toks)
            step = bc.eval([0, 1, 2], [SEQS[0][1][0], SEQS[1][1][0], SEQS[2][1][0]])
            results.append(np.concatenate([first, step]))
    np.testing.assert_array_equal(results[0], results[1])


def test_opens_its_context_with_the_models_defaults_and_checks(converted):
    """BatchContext and Model open their context through one helper (edge.context_params): n_ctx 0, the
    default, is the model's context length; a larger n_ctx is clamped with a warning that points at the
    caller; bad values raise EdgeArgumentError naming the parameter."""
    path = converted("q8_0")
    with edge.BatchContext(path, n_seq=2, n_threads=THREADS) as bc:
        train = bc.hparams.n_ctx_train
        assert bc.n_ctx == bc.n_ctx_train == train
    for cls in (edge.BatchContext, edge.Model):
        with pytest.warns(RuntimeWarning, match="context length") as caught:
            opened = cls(path, n_ctx=train + 1, n_threads=THREADS)
        assert opened.n_ctx == train
        opened.close()
        assert [w.filename for w in caught if "context length" in str(w.message)] == [__file__]
        for kwargs in ({"n_ctx": -1}, {"n_batch": 0}, {"kv_type": "q4"}, {"n_threads": -1}):
            with pytest.raises(EdgeArgumentError, match=next(iter(kwargs))):
                cls(path, **kwargs)
    for n_seq in (0, 1025):
        with pytest.raises(EdgeArgumentError, match="n_seq"):
            edge.BatchContext(path, n_seq=n_seq)

"""Sampling (edge.sampling.Sampler) and stop strings (StopMatcher) on small hand-made distributions."""

from __future__ import annotations

import random

import numpy as np
import pytest

from edge.sampling import Sampler, SamplingParams, StopMatcher

# 99.99% quantiles of the chi-square distribution by degrees of freedom: a correct sampler fails a
# test at this level once in 10^4 seeds; the seeds are fixed, so a pass is deterministic.
CHI2_9999 = {1: 15.137, 2: 18.421, 3: 21.108, 4: 23.513, 5: 25.745}

OFF = {"top_k": 0, "top_p": 1.0, "min_p": 0.0}  # every filter off


def _logits(probs: list[float], n_vocab: int = 8) -> np.ndarray:
    """Logits whose softmax is ``probs`` on the first ids and (nearly) 0 on the rest."""
    out = np.full(n_vocab, -1e4, dtype=np.float32)
    out[: len(probs)] = np.log(np.asarray(probs, dtype=np.float64)).astype(np.float32)
    return out


def _draw(sampler: Sampler, logits: np.ndarray, n: int, previous: list[int] | None = None) -> np.ndarray:
    return np.array([sampler.sample(logits, previous or []) for _ in range(n)])


def _chi2(samples: np.ndarray, ids: list[int], probs: list[float]) -> float:
    counts = np.array([(samples == i).sum() for i in ids], dtype=np.float64)
    expected = np.asarray(probs, dtype=np.float64) / sum(probs) * samples.size
    return float(((counts - expected) ** 2 / expected).sum())


PROBS = [0.5, 0.3, 0.15, 0.05]


def test_greedy_is_argmax() -> None:
    rng = np.random.default_rng(0)
    for temperature in (0.0, -1.0):
        sampler = Sampler(SamplingParams(temperature=temperature, seed=1))
        for _ in range(50):
            logits = rng.normal(size=1000).astype(np.float32)
            assert sampler.sample(logits, []) == int(np.argmax(logits))
    tie = np.array([0.0, 3.0, 1.0, 3.0], dtype=np.float32)
    assert Sampler(SamplingParams(temperature=0.0)).sample(tie, []) == 1  # lowest id on ties


def test_top_k_1_is_greedy_at_any_temperature() -> None:
    rng = np.random.default_rng(1)
    sampler = Sampler(SamplingParams(temperature=5.0, top_k=1, top_p=1.0, min_p=0.0, seed=3))
    for _ in range(50):
        logits = rng.normal(size=500).astype(np.float32)
        assert sampler.sample(logits, []) == int(np.argmax(logits))


def test_seed_reproducible() -> None:
    logits = np.random.default_rng(2).normal(size=300).astype(np.float32)
    params = SamplingParams(temperature=1.5, top_k=0, top_p=1.0, min_p=0.0, seed=1234)
    a = _draw(Sampler(params), logits, 200)
    b = _draw(Sampler(params), logits, 200)
    c = _draw(Sampler(SamplingParams(temperature=1.5, top_k=0, top_p=1.0, min_p=0.0, seed=4321)), logits, 200)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()
    assert len(set(a.tolist())) > 20  # it really samples


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_temperature_distribution(temperature: float) -> None:
    sampler = Sampler(SamplingParams(temperature=temperature, seed=11, **OFF))
    samples = _draw(sampler, _logits(PROBS), 20000)
    tempered = np.asarray(PROBS) ** (1.0 / temperature)
    assert set(samples.tolist()) == {0, 1, 2, 3}
    assert _chi2(samples, [0, 1, 2, 3], list(tempered / tempered.sum())) < CHI2_9999[3]


def test_top_k_keeps_the_k_largest() -> None:
    sampler = Sampler(SamplingParams(temperature=1.0, top_k=2, top_p=1.0, min_p=0.0, seed=5))
    ids, probs = sampler.candidates(_logits(PROBS), [])
    assert ids.tolist() == [0, 1]
    np.testing.assert_allclose(probs, [0.5 / 0.8, 0.3 / 0.8], rtol=1e-6)  # float32 logits of the probs
    samples = _draw(sampler, _logits(PROBS), 10000)
    assert set(samples.tolist()) == {0, 1}
    assert _chi2(samples, [0, 1], [0.5, 0.3]) < CHI2_9999[1]


@pytest.mark.parametrize(
    ("top_p", "kept"),
    [(0.4, [0]), (0.75, [0, 1]), (0.85, [0, 1, 2]), (0.99, [0, 1, 2, 3]), (1.0, list(range(8)))],
)
def test_top_p_keeps_the_smallest_set_reaching_p(top_p: float, kept: list[int]) -> None:
    # Cumulative probabilities 0.5, 0.8, 0.95, 1.0: top-p keeps tokens up to the first that reaches p.
    sampler = Sampler(SamplingParams(temperature=1.0, top_k=0, top_p=top_p, min_p=0.0, seed=6))
    ids, _ = sampler.candidates(_logits(PROBS), [])
    assert ids.tolist() == kept
    if len(kept) <= 4:
        samples = _draw(sampler, _logits(PROBS), 10000)
        assert set(samples.tolist()) == set(kept)
        if len(kept) > 1:
            assert _chi2(samples, kept, PROBS[: len(kept)]) < CHI2_9999[len(kept) - 1]


@pytest.mark.parametrize(
    ("min_p", "kept"), [(0.05, [0, 1, 2, 3]), (0.2, [0, 1, 2]), (0.5, [0, 1]), (0.7, [0])]
)
def test_min_p_keeps_tokens_above_a_fraction_of_the_best(min_p: float, kept: list[int]) -> None:
    # Thresholds min_p * 0.5: 0.025, 0.1, 0.25, 0.35 against probabilities 0.5, 0.3, 0.15, 0.05.
    sampler = Sampler(SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=min_p, seed=7))
    ids, _ = sampler.candidates(_logits(PROBS), [])
    assert ids.tolist() == kept
    samples = _draw(sampler, _logits(PROBS), 10000)
    assert set(samples.tolist()) == set(kept)
    if len(kept) > 1:
        assert _chi2(samples, kept, PROBS[: len(kept)]) < CHI2_9999[len(kept) - 1]


def test_top_k_ties_keep_the_lowest_ids() -> None:
    logits = np.array([1.0, 2.0, 2.0, 2.0, 0.0], dtype=np.float32)
    ids, _ = Sampler(SamplingParams(temperature=1.0, top_k=2, top_p=1.0, min_p=0.0)).candidates(logits, [])
    assert ids.tolist() == [1, 2]


def _reference_candidates(logits: np.ndarray, p: SamplingParams) -> tuple[list[int], np.ndarray]:
    """The chain written out directly: full sort by (-logit, id), then each filter on the sorted list."""
    x = logits.astype(np.float64)
    order = sorted(range(x.size), key=lambda i: (-x[i], i))
    if p.top_k > 0:
        order = order[: p.top_k]
    if p.top_p < 1.0:
        probs = np.exp(x[order] - x[order[0]])
        probs /= probs.sum()
        cum, n_keep = 0.0, len(order)
        for i, q in enumerate(probs):
            cum += q
            if cum >= p.top_p:
                n_keep = i + 1
                break
        order = order[:n_keep]
    if p.min_p > 0.0:
        order = [i for i in order if np.exp(x[i] - x[order[0]]) >= p.min_p]
    weights = np.exp((x[order] - x[order[0]]) / p.temperature)
    return order, weights / weights.sum()


def test_candidates_match_a_direct_reference() -> None:
    rng = np.random.default_rng(12)
    for top_k, top_p, min_p, temperature in [
        (40, 0.95, 0.05, 0.8),
        (0, 0.9, 0.0, 1.0),
        (100, 1.0, 0.1, 1.3),
        (0, 1.0, 0.02, 0.5),
        (5, 0.5, 0.0, 2.0),
    ]:
        params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
        logits = (rng.normal(size=3000) * 2.5).astype(np.float32)
        ids, probs = Sampler(params).candidates(logits, [])
        ref_ids, ref_probs = _reference_candidates(logits, params)
        assert ids.tolist() == ref_ids
        # float64 softmax over the same float32 logits: only summation order differs (~1e-16 relative).
        np.testing.assert_allclose(probs, ref_probs, rtol=1e-12, atol=0)


def _logits_cases(rng: np.random.Generator, n_vocab: int) -> list[np.ndarray]:
    """Large-vocabulary logits for the top-k pool: plain, few levels (ties at the k-th value), the largest
    ones at the sampled ids (the pool is then little more than the top-k itself), mostly banned (-inf;
    fewer finite logits than top_k in the pool's sample), a few forced (+inf)."""
    plain = (rng.normal(size=n_vocab) * 2.5).astype(np.float32)
    strided = plain.copy()
    strided[::64] += 20.0
    levels = rng.integers(0, 6, size=n_vocab).astype(np.float32)
    banned = np.full(n_vocab, -np.inf, dtype=np.float32)
    banned[rng.choice(n_vocab, size=60, replace=False)] = rng.normal(size=60).astype(np.float32)
    forced = plain.copy()
    forced[rng.choice(n_vocab, size=3, replace=False)] = np.inf
    return [plain, levels, strided, banned, forced]


def _pool_calls(monkeypatch: pytest.MonkeyPatch, name: str) -> list[object]:
    """Every result the sampler's pool function `name` returns from now on, recorded."""
    import edge.sampling as sampling

    pool, used = getattr(sampling, name), []
    monkeypatch.setattr(sampling, name, lambda x, q: used.append(pool(x, q)) or used[-1])
    return used


def _assert_whole_vocabulary_agrees(
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    params: SamplingParams,
    logits: np.ndarray,
    rng: np.random.Generator,
) -> None:
    """The candidates (ids and probabilities) equal those computed with the pool function `name` off."""
    import edge.sampling as sampling

    previous = [int(i) for i in rng.integers(0, logits.size, size=64)]
    ids, probs = Sampler(params).candidates(logits, previous)
    with monkeypatch.context() as whole:
        whole.setattr(sampling, name, lambda x, q: None)
        ref_ids, ref_probs = Sampler(params).candidates(logits, previous)
    assert ids.tolist() == ref_ids.tolist()
    assert np.array_equal(probs, ref_probs)


@pytest.mark.parametrize("top_k", [1, 40, 64])
def test_top_k_pool_gives_the_candidates_of_the_whole_vocabulary(
    top_k: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool (a strided sample's top_k-th logit as a threshold) only narrows what top-k sorts: every
    case's ids and probabilities equal those computed over the whole vocabulary, bit for bit."""
    rng = np.random.default_rng(5)
    used = _pool_calls(monkeypatch, "_top_k_pool")
    for logits in _logits_cases(rng, 40000):
        for params in [
            SamplingParams(temperature=0.8, top_k=top_k, top_p=1.0, min_p=0.0),
            SamplingParams(temperature=1.3, top_k=top_k, top_p=1.0, min_p=0.0, repeat_penalty=1.3),
            SamplingParams(temperature=0.5, top_k=top_k, top_p=0.5, min_p=0.2, logit_bias={7: 50.0}),
        ]:
            _assert_whole_vocabulary_agrees(monkeypatch, "_top_k_pool", params, logits, rng)
    assert any(u is not None for u in used) and any(u is None for u in used)  # both paths were taken


@pytest.mark.parametrize("top_p", [0.3, 0.9, 0.99])
def test_top_p_pool_gives_the_candidates_of_the_whole_vocabulary(
    top_p: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With top-k off, top-p sorts only the logits near the largest that already hold more than top_p of
    the probability: the same candidates as over the whole vocabulary (the normalizer is summed in
    another order, so only a cumulative probability within rounding of top_p could tell them apart)."""
    rng = np.random.default_rng(6)
    used = _pool_calls(monkeypatch, "_top_p_pool")
    cases = _logits_cases(rng, 40000)
    cases.append((rng.normal(size=40000) * 6).astype(np.float32))  # peaked: a small pool
    for logits in cases:
        for params in [
            SamplingParams(temperature=0.8, top_k=0, top_p=top_p, min_p=0.0),
            SamplingParams(temperature=1.3, top_k=0, top_p=top_p, min_p=0.05, repeat_penalty=1.3),
        ]:
            _assert_whole_vocabulary_agrees(monkeypatch, "_top_p_pool", params, logits, rng)
    small = [u for u in used if isinstance(u, tuple) and u[0].size < 4000]
    assert small and any(u is None for u in used)  # both paths taken, and pools far below the vocabulary


def test_filters_act_before_temperature() -> None:
    # top-p 0.75 keeps {0, 1} by the untempered probabilities even at a very high temperature, and the
    # draw between them follows the tempered ones (0.5^(1/4) : 0.3^(1/4)).
    sampler = Sampler(SamplingParams(temperature=4.0, top_k=0, top_p=0.75, min_p=0.0, seed=8))
    samples = _draw(sampler, _logits(PROBS), 10000)
    assert set(samples.tolist()) == {0, 1}
    assert _chi2(samples, [0, 1], [0.5**0.25, 0.3**0.25]) < CHI2_9999[1]


def test_repeat_penalty_divides_positive_and_multiplies_negative_logits() -> None:
    logits = np.array([4.0, -4.0, 2.0, 0.0, 1.0, -1.0], dtype=np.float32)
    sampler = Sampler(SamplingParams(repeat_penalty=2.0, repeat_last_n=3))
    # Window = last 3 tokens: [0, 1, 3]; token 2 and 5 are older and untouched.
    out = sampler.adjusted_logits(logits, [2, 5, 0, 1, 3])
    np.testing.assert_array_equal(out, [2.0, -8.0, 2.0, 0.0, 1.0, -1.0])
    whole = Sampler(SamplingParams(repeat_penalty=2.0, repeat_last_n=-1)).adjusted_logits(logits, [2, 5, 0])
    np.testing.assert_array_equal(whole, [2.0, -4.0, 1.0, 0.0, 1.0, -2.0])
    as_array = sampler.adjusted_logits(logits, np.array([2, 5, 0, 1, 3]))  # any int sequence
    np.testing.assert_array_equal(as_array, out)
    off = Sampler(SamplingParams(repeat_penalty=2.0, repeat_last_n=0)).adjusted_logits(logits, [0, 1])
    np.testing.assert_array_equal(off, logits)
    np.testing.assert_array_equal(logits, [4.0, -4.0, 2.0, 0.0, 1.0, -1.0])  # input not modified


def test_frequency_and_presence_penalties() -> None:
    logits = np.zeros(5, dtype=np.float32)
    logits[0] = 3.0
    params = SamplingParams(repeat_penalty=1.5, frequency_penalty=0.5, presence_penalty=1.0, repeat_last_n=64)
    out = Sampler(params).adjusted_logits(logits, [0, 0, 0, 2, 4, 4])
    # token 0: 3/1.5 - 3*0.5 - 1 = -0.5; token 2: 0 - 0.5 - 1; token 4: 0 - 2*0.5 - 1; 1 and 3 unseen.
    np.testing.assert_allclose(out, [-0.5, 0.0, -1.5, 0.0, -2.0], rtol=0, atol=1e-12)


def test_penalties_change_the_greedy_choice() -> None:
    logits = np.array([2.0, 1.9, 0.0], dtype=np.float32)
    sampler = Sampler(SamplingParams(temperature=0.0, presence_penalty=0.5))
    assert sampler.sample(logits, []) == 0
    assert sampler.sample(logits, [0]) == 1


def test_logit_bias() -> None:
    logits = np.array([5.0, 4.0, 1.0, 0.0], dtype=np.float32)
    banned = Sampler(SamplingParams(temperature=0.0, logit_bias={0: float("-inf")}))
    assert banned.sample(logits, []) == 1
    sampler = Sampler(SamplingParams(temperature=1.0, logit_bias={0: float("-inf")}, seed=9, **OFF))
    samples = _draw(sampler, logits, 5000)
    assert 0 not in samples and set(samples.tolist()) == {1, 2, 3}
    boosted = Sampler(SamplingParams(temperature=0.0, logit_bias={3: 5.5}))
    assert boosted.adjusted_logits(logits, [])[3] == 5.5
    assert boosted.sample(logits, []) == 3
    with pytest.raises(ValueError, match="every token is banned"):
        Sampler(SamplingParams(logit_bias={i: float("-inf") for i in range(4)})).sample(logits, [])
    with pytest.raises(ValueError, match="logit_bias: token id 9 out of range"):
        Sampler(SamplingParams(logit_bias={9: 1.0})).sample(logits, [])


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="top_p"):
        Sampler(SamplingParams(top_p=0.0))
    with pytest.raises(ValueError, match="min_p"):
        Sampler(SamplingParams(min_p=1.5))
    with pytest.raises(ValueError, match="repeat_penalty"):
        Sampler(SamplingParams(repeat_penalty=0.0))
    with pytest.raises(ValueError, match="1-D"):
        Sampler().sample(np.zeros((2, 3), dtype=np.float32), [])
    with pytest.raises(ValueError, match="NaN"):
        Sampler().sample(np.array([0.0, np.nan], dtype=np.float32), [])
    with pytest.raises(ValueError, match="out of range"):
        Sampler(SamplingParams(repeat_penalty=1.1)).sample(np.zeros(4, dtype=np.float32), [7])


# -- stop strings ------------------------------------------------------------------------------------


def _run(stops: list[str], pieces: list[str]) -> tuple[list[str], bool]:
    matcher = StopMatcher(stops)
    shown: list[str] = []
    stopped = False
    for piece in pieces:
        text, stopped = matcher.feed(piece)
        shown.append(text)
        if stopped:
            break
    if not stopped:
        shown.append(matcher.flush())
    return shown, stopped


def test_stop_across_piece_boundaries() -> None:
    shown, stopped = _run(["\n\nUser:"], ["Hello", "\n", "\nUs", "er:", " ignored"])
    assert stopped and shown == ["Hello", "", "", ""]
    shown, stopped = _run(["\n\nUser:"], ["Hello", "\n", "\nUs", "ual", " end"])
    assert not stopped and "".join(shown) == "Hello\n\nUsual end"
    assert shown[:3] == ["Hello", "", ""]  # the possible start of the stop string was held back
    shown, stopped = _run(["STOP"], ["abcSTOPdef"])
    assert stopped and shown == ["abc"]
    shown, stopped = _run(["cd", "bcde"], ["ab", "cdef"])  # the earliest stop wins
    assert stopped and "".join(shown) == "a"
    shown, stopped = _run(["abbb", "b"], ["xab", "bb"])  # "b" is complete first, but "abbb" starts earlier
    assert stopped and shown == ["x", ""]
    shown, stopped = _run(["x"], ["x"])
    assert stopped and shown == [""]
    shown, stopped = _run([], ["a", "b"])
    assert not stopped and shown == ["a", "b", ""]


def test_after_a_stop_nothing_more_is_emitted() -> None:
    matcher = StopMatcher(["</s>"])
    assert matcher.feed("ok</s>tail") == ("ok", True)
    assert matcher.feed("more") == ("", True)
    assert matcher.flush() == ""


def test_stop_matcher_random_splits() -> None:
    """Whatever the split into pieces: the shown text is the text up to the first stop string, and at no
    moment has more been shown than that (so no part of a stop string is ever shown)."""
    rng = random.Random(3)
    for _ in range(3000):
        stops = [
            "".join(rng.choice("ab\n") for _ in range(rng.randrange(1, 5)))
            for _ in range(rng.randrange(1, 3))
        ]
        text = "".join(rng.choice("ab\nc") for _ in range(rng.randrange(0, 30)))
        cuts = sorted(rng.sample(range(len(text) + 1), k=min(len(text) + 1, rng.randrange(0, 6))))
        pieces = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        first = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
        final = text if first < 0 else text[:first]
        shown, stopped = _run(stops, pieces)
        assert stopped == (first >= 0)
        assert "".join(shown) == final, (stops, pieces)
        so_far = ""
        for piece in shown:
            so_far += piece
            assert final.startswith(so_far)

"""edge.Model and `grok-edge run`: tokenize, logits, generation, sampling, stops, prefix reuse, the CLI.

edge.Model (the Python API) and `grok-edge run`, on the tiny synthetic checkpoint converted at Q8_0
(conftest's ``converted``; its GGUF carries a small SentencePiece vocabulary trained for the tests)."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest

import edge
from edge.cli import main

PROMPT = "The answer to life the universe and everything is of course"


@pytest.fixture(scope="module")
def model(converted):
    with edge.Model(converted("q8_0"), n_ctx=256, n_threads=1, seed=3) as m:
        yield m


def test_context_manager_closes(converted):
    with edge.Model(converted("q8_0"), n_ctx=32) as m:
        assert m.n_ctx == 32 and m.n_vocab == 512
    with pytest.raises(ValueError, match="closed"):
        m.logits([5])
    m.close()  # closing twice is fine


def test_tokenize_has_no_bos_and_round_trips(model):
    ids = model.tokenize(PROMPT)
    assert ids and ids[0] != model.token_bos()
    assert model.tokenize(PROMPT, add_bos=True) == [model.token_bos(), *ids]
    assert model.detokenize(ids) == PROMPT
    assert model.tokenize(PROMPT.encode()) == ids


def test_logits_every_position_from_a_fresh_context(model):
    ids = model.tokenize(PROMPT)
    first = model.logits(ids)
    assert first.shape == (len(ids), model.n_vocab) and first.dtype == np.float32
    model.eval([9, 10, 11])  # whatever is cached does not matter
    np.testing.assert_array_equal(model.logits(ids), first)
    assert model.n_past == len(ids)


def test_greedy_generate_is_deterministic_and_equals_stream(model):
    a = model.generate(PROMPT, max_tokens=12, temperature=0)
    b = model.generate(PROMPT, max_tokens=12, temperature=0)
    pieces = list(model.stream(PROMPT, max_tokens=12, temperature=0))
    assert a == b == "".join(pieces)
    assert model.last_stats.decode_tokens <= 12
    # the text is the detokenized greedy tokens
    ids = model.generate_tokens(model.tokenize(PROMPT), 12, temperature=0.0)
    if model.token_eos() in ids:
        ids = ids[: ids.index(model.token_eos())]
    dec = model.tokenizer.stream_decoder(continuation=True)
    assert a == "".join(dec.feed(t) for t in ids) + dec.flush()


def test_seeded_sampling_is_reproducible(model):
    a = model.generate(PROMPT, max_tokens=10, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=11)
    b = model.generate(PROMPT, max_tokens=10, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=11)
    assert a == b


def test_stop_strings_do_not_leak(model):
    full = model.generate(PROMPT, max_tokens=16, temperature=0)
    assert len(full) > 6
    stop = full[3:6]  # a stop string that the greedy text contains
    cut = full[: full.index(stop)]
    assert model.generate(PROMPT, max_tokens=16, temperature=0, stop=stop) == cut
    pieces = list(model.stream(PROMPT, max_tokens=16, temperature=0, stop=[stop, "never-there"]))
    assert "".join(pieces) == cut
    for p in pieces:
        assert stop not in p


def test_prompt_prefix_is_reused(model):
    ids = model.tokenize(PROMPT)
    model.reset()
    model.generate(ids, max_tokens=2, temperature=0)
    s = model.last_stats
    assert s.prompt_tokens == s.prompt_tokens_evaluated == len(ids) and s.prompt_tokens_reused == 0
    # the same prompt again: only the last prompt token is evaluated (its logits are needed); the count
    # of prompt tokens includes the reused prefix
    model.generate(ids, max_tokens=2, temperature=0)
    s = model.last_stats
    assert (s.prompt_tokens, s.prompt_tokens_evaluated, s.prompt_tokens_reused) == (len(ids), 1, len(ids) - 1)
    # an extension: only the new tokens
    model.generate([*ids, 7, 8, 9], max_tokens=2, temperature=0)
    s = model.last_stats
    assert (s.prompt_tokens, s.prompt_tokens_evaluated) == (len(ids) + 3, 3)
    # reuse gives the same logits as a fresh evaluation
    model.truncate(len(ids))
    reused = model.eval([7, 8, 9], all_logits=True)
    np.testing.assert_array_equal(reused, model.logits([*ids, 7, 8, 9])[len(ids) :])


def test_eos_ends_generation(model):
    out = model.generate(PROMPT, max_tokens=8, temperature=0, logit_bias={model.token_eos(): 1e4})
    assert out == "" and model.last_stats.decode_tokens == 0


def test_generation_stops_when_the_context_is_full(converted):
    with edge.Model(converted("q8_0"), n_ctx=16, n_threads=1) as m:
        ids = m.tokenize(PROMPT)
        m.generate(ids, max_tokens=100, temperature=0)
        assert m.n_past == 16
        assert m.last_stats.decode_tokens == 16 - len(ids) + 1


def test_stats_summary_format(model):
    model.generate(PROMPT, max_tokens=4, temperature=0)
    s = model.last_stats
    assert s.prompt_tokens_per_second > 0 and s.decode_tokens_per_second > 0
    assert re.fullmatch(r"prompt: \d+ tok, [\d.]+ tok/s \| decode: \d+ tok, [\d.]+ tok/s", s.summary())


def test_cli_run_streams_and_reports_speed(converted, capsys):
    assert (
        main(["run", str(converted("q8_0")), "-p", PROMPT, "-n", "6", "--temp", "0", "-t", "1", "-c", "64"])
        == 0
    )
    out, err = capsys.readouterr()
    with edge.Model(converted("q8_0"), n_ctx=64) as m:
        expect = m.generate(PROMPT, max_tokens=6, temperature=0)
    assert out == PROMPT + expect + "\n"
    assert re.search(r"prompt: \d+ tok, [\d.]+ tok/s \| decode: \d+ tok, [\d.]+ tok/s", err)


def test_cli_interactive_loop(converted, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("hello world\nthe model\n"))
    assert main(["run", str(converted("q8_0")), "-i", "-n", "3", "--temp", "0", "-c", "64"]) == 0
    _, err = capsys.readouterr()
    assert len(re.findall(r"decode: \d+ tok", err)) == 2


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["run", str(tmp_path / "missing.gguf"), "-p", "x"]) == 1
    assert "missing.gguf" in capsys.readouterr().err


def test_eval_runs_in_batches_and_stops_cleanly_on_interrupt(converted):
    with edge.Model(converted("q8_0"), n_ctx=64, n_batch=4, n_threads=1) as m:
        seen: list[tuple[int, int]] = []
        whole = m.eval(list(range(5, 15)), all_logits=True, progress=lambda d, t: seen.append((d, t)))
        assert seen == [(4, 10), (8, 10), (10, 10)]

        def interrupt(done: int, total: int) -> None:
            raise KeyboardInterrupt

        m.reset()
        with pytest.raises(KeyboardInterrupt):
            m.eval(list(range(5, 15)), progress=interrupt)
        # the chunk that finished is cached and consistent: continuing gives the same logits
        assert m.n_past == 4 and m.tokens == list(range(5, 9))
        rest = m.eval(list(range(9, 15)), all_logits=True)
        np.testing.assert_allclose(rest, whole[4:], rtol=0, atol=1e-5 * np.abs(whole).max())

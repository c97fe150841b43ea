"""The expert store (a RAM cache of experts read from the file) gives the mapped model's bits.

The expert store (native/src/experts/): a RAM cache of experts read from the file gives the same bits as
the mapped model, reads exactly what it misses, fails clearly on a bad file, and is shared by contexts.

Two models: the trained demo model (edge/data/tiny-grok: real routing, so caches hit and predictions
agree) and the synthetic tiny checkpoint of conftest (random routing: the worst case)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader

import edge
from edge.expert_sim import read_trace, replay
from edge.experts import min_budget

N_DECODE = 64


@pytest.fixture(scope="module")
def demo_gguf(tmp_path_factory) -> Path:
    from edge.commands.demo import convert_preset

    return convert_preset("q8_0", tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module", params=["demo", "synthetic"])
def model_path(request, demo_gguf, converted) -> Path:
    return demo_gguf if request.param == "demo" else converted("q4_k_m")


def smallest(path: Path, prefetch: bool) -> int:
    with edge.Model(path, n_ctx=64) as m:
        return min_budget(m._model, prefetch)


def prompt_of(m: edge.Model) -> list[int]:
    if m.tokenizer is not None:
        return m.tokenize("And God said, Let there be light: and there was light.")
    return [5, 9, 31, 7, 100, 3, 44, 12]


def run_logits(path: Path, n_decode: int = N_DECODE, **kw) -> tuple[np.ndarray, edge.experts.CacheStats]:
    """The prompt's logits (all rows, one batch) then n_decode greedy single-token steps' logits."""
    with edge.Model(path, n_ctx=256, n_threads=2, **kw) as m:
        ids = prompt_of(m)
        rows = [m.logits(ids)]
        tok = int(np.argmax(rows[0][-1]))
        for _ in range(n_decode):
            row = m.eval([tok])
            rows.append(row[None, :])
            tok = int(np.argmax(row))
        return np.concatenate(rows), m.cache_stats()


@pytest.fixture(scope="module")
def unconstrained(model_path) -> np.ndarray:
    return run_logits(model_path)[0]


@pytest.mark.parametrize("prefetch", [False, True])
@pytest.mark.parametrize("policy", ["lru", "lfu"])
def test_smallest_cache_gives_the_same_bits(model_path, unconstrained, prefetch, policy):
    budget = smallest(model_path, prefetch)
    logits, stats = run_logits(model_path, expert_cache=budget, prefetch=prefetch, expert_policy=policy)
    np.testing.assert_array_equal(logits, unconstrained)
    assert stats.n_slots == (4 if prefetch else 2)
    assert stats.misses > 0 and stats.bytes_read > 0  # the experts really came from the file
    assert (stats.prefetches > 0) == prefetch


def test_a_larger_cache_with_batches_of_three_gives_the_same_bits(model_path, unconstrained):
    with edge.Model(model_path, n_ctx=256, n_threads=2, n_batch=3, expert_cache="64MiB") as m:
        ids = prompt_of(m)
        np.testing.assert_array_equal(m.logits(ids), unconstrained[: len(ids)])


def test_prompt_batches_read_each_expert_once(model_path):
    # one batch of the whole prompt, cache of every unit: each chosen (layer, expert) read exactly once
    with edge.Model(model_path, n_ctx=256, n_threads=2, expert_cache="1GiB", prefetch=False) as m:
        ids = prompt_of(m)
        m.logits(ids)
        s = m.cache_stats()
    h = m.hparams
    assert s.misses == s.loads <= h.n_layer * h.n_expert
    assert s.hits == 0  # never asked twice for one unit within the batch


def unit_bytes_from_file(path: Path, n_layer: int, n_expert: int) -> list[int]:
    """Each unit's bytes read, from the GGUF's tensor offsets: its three matrices' 4 KiB-aligned spans."""
    r = GGUFReader(path)
    size = os.path.getsize(path)
    out = []
    for layer in range(n_layer):
        for e in range(n_expert):
            total = 0
            for role in ("gate", "up", "down"):
                t = next(t for t in r.tensors if t.name == f"blk.{layer}.ffn_{role}_exps.weight")
                per = t.n_bytes // n_expert
                lo, hi = t.data_offset + e * per, t.data_offset + (e + 1) * per
                a0, a1 = lo // 4096 * 4096, -(-hi // 4096) * 4096
                total += min(a1, size) - a0
            out.append(total)
    return out


@pytest.mark.parametrize("prefetch", [False, True])
@pytest.mark.parametrize("policy", ["lru", "lfu"])
def test_bytes_read_are_the_misses_bytes(model_path, tmp_path, prefetch, policy):
    trace = tmp_path / "trace.jsonl"
    budget = smallest(model_path, prefetch) * 3 // 2  # a few slots more than the minimum
    _, stats = run_logits(
        model_path,
        n_decode=24,
        expert_cache=budget,
        prefetch=prefetch,
        expert_policy=policy,
        trace_experts=trace,
    )
    tr = read_trace(trace)
    assert tr.unit_bytes == unit_bytes_from_file(model_path, tr.n_layer, tr.n_expert)
    sim = replay(tr, stats.n_slots, policy, prefetch)
    # the store's counters are those of an independent replay of its own routing
    assert (stats.hits, stats.misses, stats.prefetches, stats.loads) == (
        sim.hits,
        sim.misses,
        sim.prefetches,
        sim.loads,
    )
    # and the bytes its preads returned are exactly the loaded units' bytes, from the file's offsets
    assert stats.bytes_read == sim.bytes_read
    if not prefetch:
        assert stats.bytes_read == sim.demand_bytes
    assert stats.tokens == tr.tokens == sim.tokens
    assert (stats.predicted, stats.predicted_correct) == (sim.predicted, sim.predicted_correct)


def test_demo_model_prediction_is_better_than_chance(demo_gguf):
    _, s = run_logits(demo_gguf, n_decode=32, expert_cache=smallest(demo_gguf, True))
    # 8 experts, top 2: a random guess is right 2/8 of the time
    assert s.predicted > 0 and s.prefetch_accuracy > 0.5
    assert s.prefetch_hits > 0 and s.hit_rate > 0.3


def test_budget_below_the_minimum_names_it(model_path):
    need = smallest(model_path, True)
    with pytest.raises(ValueError, match=rf"minimum is {need} bytes"):
        edge.Model(model_path, n_ctx=64, expert_cache=need - 1)
    with pytest.raises(ValueError, match="not a size"):
        edge.Model(model_path, n_ctx=64, expert_cache="lots")
    with pytest.raises(ValueError, match="expert_policy"):
        edge.Model(model_path, n_ctx=64, expert_cache="1GiB", expert_policy="fifo")


def _copy(src: Path, dst: Path) -> Path:
    dst.write_bytes(src.read_bytes())
    return dst


def test_a_file_changed_under_the_model_is_an_error(demo_gguf, tmp_path):
    path = _copy(demo_gguf, tmp_path / "m.gguf")
    with edge.Model(path, n_ctx=64, n_threads=1, expert_cache=smallest(path, False), prefetch=False) as m:
        ids = prompt_of(m)[:4]
        m.logits(ids)
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        with pytest.raises(edge.EdgeError, match="changed under the model") as exc:
            m.logits(ids)
        assert exc.value.status == "EDGE_ERR_IO" and str(path) in str(exc.value)
        with open(path, "ab") as f:  # grown: the size is named
            f.write(b"\0" * 100)
        with pytest.raises(edge.EdgeError, match=rf"size {st.st_size} -> {st.st_size + 100}"):
            m.logits(ids)


@pytest.mark.parametrize("fault", ["short", "eio"])
def test_a_short_read_or_io_error_is_an_error_never_wrong_logits(demo_gguf, monkeypatch, fault):
    ref = None
    with edge.Model(demo_gguf, n_ctx=64, n_threads=1) as m:
        ids = prompt_of(m)[:4]
        ref = m.logits(ids)
    monkeypatch.setenv("EDGE_EXPERTS_FAULT", f"{fault}:5")  # the 5th read job (test hook)
    with edge.Model(
        demo_gguf, n_ctx=64, n_threads=1, expert_cache=smallest(demo_gguf, False), prefetch=False
    ) as m:
        want = "short read of an expert" if fault == "short" else "read error at byte"
        with pytest.raises(edge.EdgeError, match=want) as exc:
            m.logits(ids)
        assert exc.value.status == "EDGE_ERR_IO" and str(demo_gguf) in str(exc.value)
        assert m.n_past == 0
        # the failed unit is read again next time: the same bits as the mapped model
        np.testing.assert_array_equal(m.logits(ids), ref)


def test_two_contexts_share_one_cache(demo_gguf):
    from edge._native import check, ffi, lib

    with edge.Model(demo_gguf, n_ctx=256, n_threads=1) as m:
        prompts = [prompt_of(m), list(reversed(prompt_of(m)))]
        refs = [m.logits(p) for p in prompts]
    # one model, a minimal cache with prefetch, two contexts evaluating at the same time on two threads
    with edge.Model(demo_gguf, n_ctx=256, n_threads=1, expert_cache=smallest(demo_gguf, True)) as m:
        params = ffi.new("edge_context_params *")
        check(lib.edge_context_default_params(params))
        params.n_ctx, params.n_threads = 256, 1
        results: list[list[np.ndarray]] = [[], []]
        errors: list[BaseException] = []

        def work(i: int) -> None:
            try:
                out = ffi.new("edge_context **")
                check(lib.edge_context_create(m._model, params, out))
                ctx = out[0]
                try:
                    for _ in range(6):
                        check(lib.edge_context_truncate(ctx, 0))
                        ids = np.array(prompts[i], dtype=np.int32)
                        y = np.empty((len(ids), m.n_vocab), dtype=np.float32)
                        check(
                            lib.edge_context_eval(
                                ctx,
                                ffi.from_buffer("int32_t[]", ids),
                                len(ids),
                                ffi.from_buffer("float[]", y),
                                1,
                            )
                        )
                        results[i].append(y)
                finally:
                    lib.edge_context_free(ctx)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        for i in range(2):
            assert len(results[i]) == 6
            for y in results[i]:
                np.testing.assert_array_equal(y, refs[i])
        assert m.cache_stats().tokens == 6 * (len(prompts[0]) + len(prompts[1]))


def test_run_cli_prints_the_cache_line_and_refuses_a_small_budget(demo_gguf, tmp_path, capsys):
    from edge.cli import main

    trace = tmp_path / "t.jsonl"
    base = ["run", str(demo_gguf), "-p", "And God said,", "-n", "8", "--temp", "0", "-t", "1", "-c", "64"]
    assert main([*base, "--expert-cache", "1MiB", "--trace-experts", str(trace)]) == 0
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("expert cache:"))
    for what in ("hit rate", "/token", "prefetch accuracy", "I/O stall"):
        assert what in line
    tr = read_trace(trace)
    assert tr.n_layer == 11 and tr.tokens >= 8
    assert main(["simulate", str(trace), "--budget", "1MiB", "--compute-ms", "20"]) == 0
    out = capsys.readouterr().out
    assert "lfu: hit rate" in out and "lru: hit rate" in out and "tok/s" in out
    assert main([*base, "--expert-cache", "64KiB"]) == 1
    assert "the minimum is" in capsys.readouterr().err


def test_plan_places_grok1_q4_k_m_from_a_full_size_header(tmp_path, capsys):
    from edge.cli import main
    from edge.placement import sizes_of_gguf, sizes_of_grok1, write_shape_gguf

    path = write_shape_gguf(tmp_path / "grok-1-q4_k_m-header.gguf", "q4_k_m")  # sparse: no weights
    assert path.stat().st_size > 150 * 2**30 and path.stat().st_blocks * 512 < 2**24
    a, b = sizes_of_gguf(path), sizes_of_grok1("q4_k_m")
    assert (a.n_layer, a.n_expert, len(a.unit_bytes)) == (64, 8, 512)
    assert a.dense_bytes == b.dense_bytes
    assert abs(a.expert_bytes - b.expert_bytes) <= 512 * 3 * 8192  # only the 4 KiB alignment differs
    assert 160 * 2**30 < a.expert_bytes < 190 * 2**30  # Grok-1 Q4_K_M is ~180 GB, 96 % experts
    assert main(["plan", str(path), "--ram", "64GiB", "--vram", "24GiB"]) == 0
    out = capsys.readouterr().out
    assert "VRAM    dense weights + KV cache" in out
    cache = next(x for x in out.splitlines() if "expert cache" in x)
    n_cached = int(cache.split(": ")[1].split(" of ")[0])
    assert n_cached * max(a.unit_bytes) <= 60 * 2**30 and n_cached > 100
    assert "predicted decode" in out and "assumptions:" in out and "random routing" in out
    assert main(["plan", "grok1:q4_k_m", "--ram", "8GiB"]) == 1  # 4 GiB dense + 2 GiB KV + headroom
    assert "smallest expert cache" in capsys.readouterr().err

"""edge.Model in an application: shared by threads, closed or cancelled mid-call, defaults, validation.

edge.Model embedded in an application: shared by threads and generators, closed and cancelled while
working, defaults and validation; the CLI items of the same issue. On the tiny synthetic checkpoint
(conftest's ``converted``) and the shipped demo model."""

from __future__ import annotations

import asyncio
import io
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from sharing_under_asan import PROMPTS, shared_by_threads

import edge
from edge._native import EdgeArgumentError, EdgeBusyError, EdgeCancelledError
from edge.cancel import CancelToken
from edge.cli import main


@pytest.fixture(scope="module")
def path(converted):
    return converted("q8_0")


def _long_prompt(m: edge.Model, n: int) -> list[int]:
    return [int(5 + (i * 37) % (m.n_vocab - 5)) for i in range(n)]


# ------------------------------------------------------------------------------------- sharing


def test_four_threads_five_greedy_generations_equal_the_sequential_results(path):
    shared_by_threads(str(path))  # the same check runs under ASan in the sanitizer test below


def test_on_busy_error_raises_at_once_and_block_waits(path):
    started, release = threading.Event(), threading.Event()

    def hold(done: int, total: int) -> None:  # runs inside eval, with the model held
        started.set()
        release.wait(10)

    for mode in ("error", "block"):
        started.clear(), release.clear()
        with edge.Model(path, n_ctx=64, n_threads=1, on_busy=mode) as m:
            expect = m.generate(PROMPTS[1], max_tokens=4, temperature=0)
            holder = threading.Thread(target=m.eval, args=([5, 6, 7],), kwargs={"progress": hold})
            holder.start()
            assert started.wait(10)
            if mode == "error":
                with pytest.raises(EdgeBusyError, match="busy"):
                    m.generate(PROMPTS[1], max_tokens=4, temperature=0)
                release.set()
                holder.join()
            else:
                threading.Timer(0.2, release.set).start()
                t0 = time.perf_counter()
                assert m.generate(PROMPTS[1], max_tokens=4, temperature=0) == expect
                assert time.perf_counter() - t0 >= 0.15  # it waited for the holder
                holder.join()
    with pytest.raises(EdgeArgumentError, match="on_busy"):
        edge.Model(path, on_busy="wait")


def test_interleaved_generators_never_mix_sequences(path):
    with edge.Model(path, n_ctx=256, n_threads=1) as m:
        solo = [m.generate(p, max_tokens=10, temperature=0) for p in PROMPTS[:3]]
        gens = [m.stream(p, max_tokens=10, temperature=0) for p in PROMPTS[:3]]
        out = ["", "", ""]
        live = [True, True, True]
        step = 0
        while any(live):
            k = step % 3
            step += 1
            if not live[k]:
                continue
            try:
                out[k] += next(gens[k])
            except StopIteration:
                live[k] = False
            if step % 4 == 0:  # other calls in between too
                m.eval(_long_prompt(m, 5))
                m.generate(PROMPTS[3], max_tokens=2, temperature=0)
        assert out == solo
        assert all(g.finish_reason in ("length", "stop") for g in gens)


def test_generator_after_close_raises_a_clear_error(path):
    m = edge.Model(path, n_ctx=64, n_threads=1)
    gen = m.stream(PROMPTS[0], max_tokens=20, temperature=0, logit_bias={m.token_eos(): -1e9})
    next(gen)
    m.close()
    with pytest.raises(ValueError, match="closed"):
        for _ in gen:
            pass


@pytest.mark.parametrize("run", range(3))
def test_close_during_generate_waits_and_never_crashes(path, run):
    m = edge.Model(path, n_ctx=512, n_batch=8, n_threads=2)
    prompt = _long_prompt(m, 255)
    result: list[object] = []

    def work() -> None:
        try:
            result.append(m.generate(prompt, max_tokens=200, temperature=0))
        except Exception as exc:  # noqa: BLE001 — the test inspects it
            result.append(exc)

    t = threading.Thread(target=work)
    t.start()
    time.sleep(0.02 + 0.03 * run)
    m.close()  # cancels the generation, waits for it, then frees
    t.join(30)
    assert not t.is_alive()
    (r,) = result
    assert isinstance(r, str) or (isinstance(r, ValueError) and "closed" in str(r)), r
    with pytest.raises(ValueError, match="closed"):
        m.generate(PROMPTS[0], max_tokens=2)


def test_close_inside_a_call_is_refused(path):
    with edge.Model(path, n_ctx=64, n_threads=1) as m:
        with pytest.raises(RuntimeError, match="inside a call"):
            m.eval([5, 6], progress=lambda d, t: m.close())
        assert m.eval([7]).shape == (m.n_vocab,)  # still open


# ------------------------------------------------------------------------------------- cancellation


def test_cancel_flag_before_an_eval_keeps_nothing(path):
    with edge.Model(path, n_ctx=64, n_threads=1) as m:
        fresh = m.eval([5, 6, 7])
        m.reset()
        token = CancelToken()
        token.cancel()
        with pytest.raises(EdgeCancelledError):
            m.eval([5, 6, 7], cancel=token)
        assert m.n_past == 0
        np.testing.assert_array_equal(m.eval([5, 6, 7]), fresh)  # the next call is not cancelled


def _timed_eval(m: edge.Model, ids: list[int]) -> float:
    m.reset()
    t0 = time.perf_counter()
    m.eval(ids)
    return time.perf_counter() - t0


def test_cancel_from_another_thread_stops_within_the_chunk(path):
    """One chunk of 1536 tokens: only the engine's check between layers can stop it before its end. The
    cancel lands at a tenth of the chunk's time; the eval must return before half of it (the tiny model
    has 11 layers: one layer is ~9 %)."""
    with edge.Model(path, n_ctx=1536, n_batch=1536, n_threads=1) as m:
        ids = _long_prompt(m, 1536)
        full = min(_timed_eval(m, ids) for _ in range(2))
        m.reset()
        token = CancelToken()
        timer = threading.Timer(full / 10, token.cancel)
        t0 = time.perf_counter()
        timer.start()
        with pytest.raises(EdgeCancelledError):
            m.eval(ids, cancel=token)
        took = time.perf_counter() - t0
        assert took < full / 2, (took, full)
        assert m.n_past == 0


def test_model_cancel_and_asyncio_stop_a_generation(path):
    with edge.Model(path, n_ctx=2048, n_threads=1) as m:
        ban = {m.token_eos(): -1e9}

        async def scenario() -> str:
            token = CancelToken()
            task = asyncio.create_task(
                asyncio.to_thread(m.generate, PROMPTS[0], max_tokens=None, temperature=0, logit_bias=ban,
                                  cancel=token)
            )  # fmt: skip
            await asyncio.sleep(0.1)
            token.cancel()  # from the event loop's thread: returns at once
            return await asyncio.wait_for(task, 30)

        text = asyncio.run(scenario())
        assert m.last_stats.finish_reason == "cancelled" and m.last_stats.decode_tokens < 2048
        assert isinstance(text, str)

        done = threading.Event()
        t = threading.Thread(
            target=lambda: (
                m.generate(PROMPTS[1], max_tokens=None, temperature=0, logit_bias=ban),
                done.set(),
            )
        )
        t.start()
        time.sleep(0.1)
        m.cancel()
        assert done.wait(30)
        assert m.last_stats.finish_reason == "cancelled"


def test_ctrl_c_stops_a_long_prompt_on_the_main_thread(path):
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach only the main thread")
    with edge.Model(path, n_ctx=1536, n_batch=1536, n_threads=1) as m:
        ids = _long_prompt(m, 1536)
        full = min(_timed_eval(m, ids) for _ in range(2))
        m.reset()
        old = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            timer = threading.Timer(full / 10, os.kill, args=(os.getpid(), signal.SIGINT))
            t0 = time.perf_counter()
            timer.start()
            with pytest.raises(KeyboardInterrupt):
                m.eval(ids)
            took = time.perf_counter() - t0
        finally:
            signal.signal(signal.SIGINT, old)
        assert took < full / 2, (took, full)
        assert m.n_past == 0
        assert m.eval([5]).shape == (m.n_vocab,)


def test_cancel_and_close_are_sanitizer_clean(converted):
    """tests/support/engine_cancel_driver.c under ASan + UBSan (LeakSanitizer on): cancel before and
    during evals from another thread, and close (cancel, wait, free) while a thread evaluates. Python
    itself is not run under ASan (the interpreter and numpy are not built with it); the Python layer's
    part is the locking tested above."""
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("the driver build uses the x86-64 ISA file flags")
    from native_build import asan_engine_driver

    files = [converted("q8_0"), converted("q4_k_m")]
    env = {
        **os.environ,
        "ASAN_OPTIONS": "detect_leaks=1:halt_on_error=1:detect_stack_use_after_return=1",
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    }
    program = asan_engine_driver("engine_cancel_driver.c")
    result = subprocess.run(
        [str(program), *map(str, files)], capture_output=True, text=True, env=env, timeout=600
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    for report in ("AddressSanitizer", "LeakSanitizer", "ThreadSanitizer", "runtime error:"):
        assert report not in output, output[-6000:]
    assert len(re.findall(r"^ok .* (\d+)/\1$", result.stdout, re.M)) == len(files), result.stdout


def test_sharing_threads_and_closing_are_sanitizer_clean(converted, tmp_path):
    """tests/support/sharing_under_asan.py in a Python that loads the ASan + UBSan libedge (build/asan, the
    runtime preloaded; leak checking off, since the interpreter itself is not built for it): 4 threads x 5
    greedy generations on one Model equal the sequential ones, interleaved streams equal their solo
    texts, close() while another thread generates ends cleanly — with every native access checked."""
    from native_build import cmake_build, cmake_exe, library_path

    if platform.machine() not in ("x86_64", "AMD64") or cmake_exe() is None:
        pytest.skip("needs cmake and the x86-64 sanitizer build")
    runtime = subprocess.run(
        ["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True
    ).stdout.strip()
    if not runtime or not os.path.isabs(runtime):
        pytest.skip("gcc's libasan.so is not installed")
    build = cmake_build(
        "asan",
        {"EDGE_SANITIZE": "ON", "EDGE_BUILD_TESTS": "ON", "EDGE_CUDA": "OFF", "CMAKE_BUILD_TYPE": "Debug"},
        ["edge"],
    )
    env = {
        **os.environ,
        "EDGE_LIBRARY": str(library_path(build)),
        "LD_PRELOAD": runtime,
        "ASAN_OPTIONS": "detect_leaks=0:halt_on_error=1",
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    }
    script = Path(__file__).parent / "support" / "sharing_under_asan.py"
    result = subprocess.run(
        [sys.executable, str(script), str(converted("q8_0"))],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=900,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    for report in ("AddressSanitizer", "runtime error:"):
        assert report not in output, output[-6000:]
    assert "ok: shared by threads" in result.stdout


# ------------------------------------------------------------------------------------- defaults, validation


def test_n_ctx_zero_is_the_models_context_negative_rejected_clamp_warned(path):
    with edge.Model(path, n_threads=1) as m:
        assert m.n_ctx == m.hparams.n_ctx_train
    with edge.Model(path, n_ctx=0, n_threads=1) as m:
        assert m.n_ctx == m.hparams.n_ctx_train
        train = m.hparams.n_ctx_train
    for bad in (-1, -8192):
        with pytest.raises(EdgeArgumentError, match="n_ctx"):
            edge.Model(path, n_ctx=bad)
    with pytest.warns(RuntimeWarning, match="context length"), edge.Model(path, n_ctx=train + 1) as m:
        assert m.n_ctx == train
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        edge.Model(path, n_ctx=train).close()  # in range: no warning
    with pytest.raises(EdgeArgumentError, match="n_batch"):
        edge.Model(path, n_batch=0)


def test_threads_default_and_oversubscription_warning(path):
    from edge.commands.demo import convert_preset, default_cache_dir

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    with pytest.warns(RuntimeWarning, match="cores"), edge.Model(path, n_ctx=32, n_threads=cores + 1) as m:
        assert m.n_threads == cores + 1
    # the demo model's token reads ~5 MiB of weights: too little to split, one thread by default
    demo = convert_preset("q4_k_m", default_cache_dir())
    with edge.Model(demo, n_ctx=64) as m:
        assert m.n_threads == 1
    with edge.Model(demo, n_ctx=64, n_threads=2) as m:
        assert m.n_threads == 2


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("top_p", 2.0),
        ("top_p", 0.0),
        ("top_p", float("nan")),
        ("temperature", -0.5),
        ("top_k", -1),
        ("min_p", 1.5),
        ("repeat_penalty", 0.0),
        ("frequency_penalty", 3.0),
        ("presence_penalty", -2.5),
        ("repeat_last_n", -2),
        ("max_tokens", -1),
    ],
)
def test_sampling_parameters_are_validated_with_their_range(path, name, value):
    with edge.Model(path, n_ctx=32, n_threads=1) as m:
        with pytest.raises(EdgeArgumentError, match=name) as info:
            m.stream(PROMPTS[0], **{name: value})  # checked at the call, before any work
        assert name == "max_tokens" or re.search(r"must be .*(\[|\(|>|integer)", str(info.value))
        with pytest.raises(EdgeArgumentError, match=name):
            m.generate(PROMPTS[0], **{name: value})
        assert m.n_past == 0


def test_every_generation_has_a_finish_reason(path):
    with edge.Model(path, n_ctx=24, n_threads=1) as m:
        eos = m.token_eos()
        gen = m.stream(PROMPTS[0], max_tokens=3, temperature=0, logit_bias={eos: -1e9})
        assert gen.finish_reason == ""
        list(gen)
        assert gen.finish_reason == "length" == m.last_stats.finish_reason
        m.generate(PROMPTS[0], max_tokens=5, temperature=0, logit_bias={eos: 1e9})
        assert m.last_stats.finish_reason == "stop"
        text = m.generate(PROMPTS[0], max_tokens=50, temperature=0, logit_bias={eos: -1e9})
        assert m.last_stats.finish_reason == "context" and m.n_past == 24
        m.generate(PROMPTS[0], max_tokens=20, temperature=0, logit_bias={eos: -1e9}, stop=text[2:6])
        assert m.last_stats.finish_reason == "stop"
        m.generate(PROMPTS[0], max_tokens=0)
        assert m.last_stats.finish_reason == "length"


# ------------------------------------------------------------------------------------- CLI


def test_cli_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert re.fullmatch(
        rf"grok-edge {re.escape(edge.__version__)} \(engine [\w.+-]+\)\n", capsys.readouterr().out
    )


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_run_stop_file_stdin_kv_f32_and_demo_names(path, tmp_path, capsys, monkeypatch):
    base = ["run", str(path), "-n", "12", "--temp", "0", "-t", "1", "-c", "64"]
    with edge.Model(path, n_ctx=64, n_threads=1) as m:
        full = m.generate(PROMPTS[0], max_tokens=12, temperature=0)
        stop = full[3:6]
        cut = m.generate(PROMPTS[0], max_tokens=12, temperature=0, stop=stop)
        f32 = edge.Model(path, n_ctx=64, n_threads=1, kv_type="f32")
        exact = f32.generate(PROMPTS[0], max_tokens=12, temperature=0)
        f32.close()
    assert cut != full
    code, out, _ = _run([*base, "-p", PROMPTS[0], "--stop", "never", "--stop", stop], capsys)
    assert code == 0 and out == PROMPTS[0] + cut + "\n"
    prompt_file = tmp_path / "prompt.txt"
    prompt_file.write_text(PROMPTS[0], encoding="utf-8")
    assert _run([*base, "-f", str(prompt_file)], capsys)[:2] == (0, PROMPTS[0] + full + "\n")
    monkeypatch.setattr("sys.stdin", io.StringIO(PROMPTS[0]))
    assert _run(base, capsys)[:2] == (0, PROMPTS[0] + full + "\n")
    assert _run([*base, "-p", PROMPTS[0], "--kv-type", "f32"], capsys)[:2] == (0, PROMPTS[0] + exact + "\n")
    # demo's spellings work in run (and run's in demo, checked on the parser)
    demo_names = ["run", str(path), "--max-tokens", "12", "--temperature", "0", "-t", "1", "-c", "64"]
    assert _run([*demo_names, "-p", PROMPTS[0]], capsys)[:2] == (0, PROMPTS[0] + full + "\n")
    from edge.cli import build_parser

    args = build_parser().parse_args(["demo", "-n", "5", "--temp", "0.5"])
    assert (args.max_tokens, args.temperature) == (5, 0.5)
    assert _run([*base, "-p", "x", "-f", str(prompt_file)], capsys)[0] == 1


def test_cli_help_shows_a_default_for_every_option():
    from edge.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name in ("run", "demo"):
        for action in sub.choices[name]._actions:
            if not action.option_strings or action.dest == "help":
                continue
            assert action.help and "default" in action.help, (name, action.option_strings)
    help_text = sub.choices["run"].format_help()
    assert "(default: 128)" in help_text and "f32" in help_text


class _Lines(io.StringIO):
    """stdin that raises KeyboardInterrupt where a line reads "^C" (Ctrl-C at the prompt)."""

    def readline(self, *args: object) -> str:  # type: ignore[override]
        line = super().readline(*args)  # type: ignore[arg-type]
        if line.strip() == "^C":
            raise KeyboardInterrupt
        return line


def test_cli_interactive_ctrl_c_stops_the_reply_slash_commands_stay_local(path, capsys, monkeypatch):
    seen: list[str] = []
    original = edge.Model.stream

    def stream(self, prompt, **kwargs):  # Ctrl-C after the first piece of the first reply
        seen.append(prompt)
        gen = original(self, prompt, **kwargs)
        for i, piece in enumerate(gen):
            if len(seen) == 1 and i == 1:
                raise KeyboardInterrupt
            yield piece

    monkeypatch.setattr(edge.Model, "stream", stream)
    monkeypatch.setattr(
        "sys.stdin", _Lines("hello world\n/help\n/stats\n/bogus\nthe model\n/reset\nprint\n^C\nx\n")
    )
    code = main(["run", str(path), "-i", "-n", "4", "--temp", "0", "-t", "1", "-c", "64"])
    _, err = capsys.readouterr()
    assert code == 0
    assert "stopped" in err and "/quit" in err and "unknown command /bogus" in err
    assert len(seen) == 3  # three replies: the commands never reached the model, "x" came after the quit
    assert not any("/" in p for p in seen)
    assert seen[1].startswith("hello world") and "the model" in seen[1]
    assert seen[2] == "print"  # after /reset the transcript starts over
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n/quit\nnever\n"))
    assert main(["run", str(path), "-i", "-n", "2", "--temp", "0", "-t", "1", "-c", "64"]) == 0

"""The GGUF reader under a bounded atheris run: no crash, no unexpected exception, ASan-clean replays.

Fuzzing the GGUF reader for a bounded time (atheris; seeds in tests/fuzz/corpus/): no crash, no
unexpected exception, and every input the fuzzer kept replays cleanly under ASan + UBSan."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from native_build import SANITIZER_ENV, SANITIZER_REPORTS, asan_test_program

FUZZ_DIR = Path(__file__).resolve().parent / "fuzz"
SEEDS = FUZZ_DIR / "corpus"
FUZZ_SECONDS = 30

try:
    import atheris  # noqa: F401

    HAVE_ATHERIS = True
except ImportError:  # atheris is in the test extra (x86-64); elsewhere the fuzz run cannot happen
    HAVE_ATHERIS = False

needs_atheris = pytest.mark.skipif(not HAVE_ATHERIS, reason="atheris is not installed")


def _seeds() -> list[Path]:
    return sorted(p for p in SEEDS.iterdir() if p.name.startswith(("ok_", "bad_")))


def test_seed_corpus_is_committed_and_small() -> None:
    seeds = _seeds()
    names = {p.name[:3] for p in seeds}
    assert len(seeds) >= 10 and names == {"ok_", "bad"}
    assert all(p.stat().st_size <= 4096 for p in seeds)


@needs_atheris
def test_seeds_behave_as_named() -> None:
    sys.path.insert(0, str(FUZZ_DIR))
    try:
        import fuzz_gguf
    finally:
        sys.path.remove(str(FUZZ_DIR))
    from edge._native import EdgeFormatError
    from edge.gguf import GGUFFile

    for seed in _seeds():
        fuzz_gguf.exercise(str(seed))  # the harness accepts every seed
        if seed.name.startswith("ok_"):
            GGUFFile(seed).close()
        else:
            with pytest.raises(EdgeFormatError):
                GGUFFile(seed)


@needs_atheris
def test_fuzzer_runs_without_a_crash(tmp_path: Path) -> None:
    found = tmp_path / "found"
    found.mkdir()
    # Started through a small intermediate Python: Linux carries a process's peak RSS (ru_maxrss, which
    # libFuzzer's -rss_limit_mb reads) from the forking process into the child across exec, so a fuzzer
    # forked straight from this pytest process (past 2 GB by now in a full run) would report an
    # out-of-memory at its first input. A grandchild's peak starts from the small intermediate's.
    cmd = [
        sys.executable,
        "-c",
        "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))",
        sys.executable,
        str(FUZZ_DIR / "fuzz_gguf.py"),
        str(found),  # libFuzzer writes new inputs into the first directory
        str(SEEDS),
        f"-max_total_time={FUZZ_SECONDS}",
        "-rss_limit_mb=2048",
        "-max_len=4096",
        f"-artifact_prefix={tmp_path}/",
        "-print_final_stats=1",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=FUZZ_SECONDS + 120)
    output = result.stdout + result.stderr
    crashes = [
        p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "leak-", "timeout-", "oom-"))
    ]
    assert result.returncode == 0 and not crashes, output[-6000:]
    assert "Done " in output and " runs in " in output, output[-3000:]

    # Replay everything the fuzzer kept, plus the seeds, through the ASan + UBSan build.
    program = asan_test_program()
    replay = subprocess.run(
        [str(program), "--any", str(found), str(SEEDS)],
        capture_output=True,
        text=True,
        env={**os.environ, **SANITIZER_ENV},
        timeout=300,
    )
    replay_output = replay.stdout + replay.stderr
    assert replay.returncode == 0, replay_output[-6000:]
    for report in SANITIZER_REPORTS:
        assert report not in replay_output, replay_output[-6000:]

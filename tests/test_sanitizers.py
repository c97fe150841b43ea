"""The native GGUF tests run clean under AddressSanitizer and UndefinedBehaviorSanitizer.

The native GGUF tests under AddressSanitizer and UndefinedBehaviorSanitizer: libedge and
native/tests/test_gguf.c built with -DEDGE_SANITIZE=ON (cached in build/asan), run over the malformed
corpus (every violation and every truncation) and valid files, including one written by gguf-py."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from gguf_cases import every_type_file, write_corpus
from native_build import (
    SANITIZER_ENV,
    SANITIZER_REPORTS,
    asan_test_program,
    asan_test_program_direct,
    cmake_exe,
)


@pytest.fixture(scope="module", params=["cmake", "direct"])
def asan_program(request: pytest.FixtureRequest) -> Path:
    """The CMake build (-DEDGE_SANITIZE=ON), and the direct-compile fallback used without cmake."""
    if request.param == "direct":
        return asan_test_program_direct()
    if cmake_exe() is None:
        pytest.skip("no cmake here: the direct-compile variant covers this machine")
    return asan_test_program()


def test_native_gguf_tests_are_sanitizer_clean(asan_program: Path, tmp_path: Path) -> None:
    every_type = tmp_path / "every_type.gguf"
    every_type_file(every_type)
    n_ok, n_bad = write_corpus(tmp_path / "corpus", every_type)
    env = {**os.environ, **SANITIZER_ENV}
    result = subprocess.run(
        [str(asan_program), str(tmp_path / "corpus")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    for report in SANITIZER_REPORTS:
        assert report not in output, output[-8000:]
    assert f"{n_ok} valid and {n_bad} malformed files checked" in result.stdout
    assert ", 0 failures" in result.stdout


def test_program_fails_on_a_wrong_expectation(asan_program: Path, tmp_path: Path) -> None:
    """The corpus program can fail: a valid file named bad_* is reported."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write_corpus(tmp_path / "all")
    (corpus / "bad_actually_valid.gguf").write_bytes((tmp_path / "all" / "ok_base.gguf").read_bytes())
    result = subprocess.run([str(asan_program), str(corpus)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "should fail to open" in result.stderr

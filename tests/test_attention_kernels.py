"""The grouped attention loops give every row exactly the bits the one-row loops give it.

The grouped attention loops (native/src/engine/attention_avx2.c) give every row exactly what the
one-row loops give it, zeros of p and non-finite cached values included: tests/support/attention_driver.c,
compiled with the C compiler against the loops' source and run here (AVX2 + FMA + F16C CPUs)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from native_build import ROOT, c_compiler

from edge.kernels import isa_supported


def build_driver(out: Path, defines: list[str] | None = None) -> Path:
    native = ROOT / "native"
    program = out / "attention_driver"
    cmd = [
        c_compiler(),
        "-std=c11",
        "-O2",
        "-mavx2",
        "-mfma",
        "-mf16c",
        *(defines or []),
        f"-I{native / 'include'}",
        f"-I{native / 'src' / 'core'}",
        f"-I{native / 'src'}",
        str(ROOT / "tests" / "support" / "attention_driver.c"),
        str(native / "src" / "engine" / "attention_avx2.c"),
        "-o",
        str(program),
        "-lm",
    ]
    built = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    return program


@pytest.mark.skipif(not isa_supported("avx2"), reason="the loops need AVX2 + FMA + F16C")
def test_grouped_loops_match_the_one_row_loops_bit_for_bit(tmp_path: Path) -> None:
    run = subprocess.run([str(build_driver(tmp_path))], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stdout + run.stderr

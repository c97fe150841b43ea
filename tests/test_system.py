"""Foundation: the native library loads, reports CPU features and CUDA state; errors carry messages."""

from __future__ import annotations

import pathlib
import platform
import subprocess
import sys

import pytest

import edge
from edge import _native


def test_system_info_reports_this_cpu() -> None:
    info = edge.system_info()
    assert info["version"] == edge.__version__
    cpu = info["cpu"]
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        assert cpu["x86_64"] == 1 and cpu["aarch64"] == 0
        cpuinfo = pathlib.Path("/proc/cpuinfo")
        flags = cpuinfo.read_text().split() if cpuinfo.exists() else []
        if flags:  # run-time detection must agree with the kernel's view of this CPU
            assert cpu["avx2"] == ("avx2" in flags)
            assert cpu["avx512f"] == ("avx512f" in flags)
            assert cpu["avx512vnni"] == ("avx512_vnni" in flags)
    assert cpu["n_cores"] >= 1
    assert isinstance(info["cuda_compiled"], bool)
    assert info["cuda_devices"] >= 0


def test_errors_carry_the_native_message() -> None:
    block = _native.ffi.new("int64_t *")
    with pytest.raises(_native.EdgeUnsupportedError, match="unknown tensor type 4"):
        _native.check(_native.lib.edge_type_info(4, block, _native.ffi.NULL, _native.ffi.NULL))
    with pytest.raises(_native.EdgeArgumentError, match="not a multiple of Q4_K's block size 256"):
        _native.check(_native.lib.edge_row_bytes(_native.lib.EDGE_TYPE_Q4_K, 100, block))
    _native.check(_native.lib.edge_row_bytes(_native.lib.EDGE_TYPE_Q4_K, 512, block))
    assert block[0] == 2 * 144


def test_cli_info_system_json(tmp_path: pathlib.Path) -> None:
    # run outside the source tree: `-c` puts the cwd on sys.path, and the source edge/ has no libedge
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from edge.cli import main; sys.exit(main(['info', '--system', '--json']))",
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout
    assert '"cuda_compiled"' in out and '"avx2"' in out


def test_build_does_not_hardwire_march_native() -> None:
    root = pathlib.Path(__file__).resolve().parent.parent
    cmake_text = "".join(p.read_text() for p in root.glob("**/CMakeLists.txt") if "build" not in p.parts)
    assert "march=native" not in cmake_text.replace("Never -march=native", "")

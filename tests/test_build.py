"""The native build succeeds with and without CUDA and reports which it is.

The native build with and without CUDA: with nvcc present, -DEDGE_CUDA=ON compiles the CUDA part and
the library says so (edge_cuda_compiled() == 1); with -DEDGE_CUDA=OFF the build still succeeds and
edge_cuda_compiled() == 0. Build directories are cached under build/ (test-cuda-on, test-cuda-off)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from native_build import ROOT, cmake_build, cmake_exe, library_path

# One architecture keeps the CUDA compile short; which one does not matter for this check.
CUDA_ARCH = "80"


def _nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    default = Path("/usr/local/cuda/bin/nvcc")
    return str(default) if default.exists() else None


def _cuda_state(library: Path) -> tuple[int, int]:
    """(edge_cuda_compiled(), device count) from a fresh process that dlopens `library` with cffi."""
    code = (
        "import sys, cffi\n"
        "ffi = cffi.FFI()\n"
        "ffi.cdef('int edge_cuda_compiled(void); int edge_cuda_device_count(int *n);')\n"
        "lib = ffi.dlopen(sys.argv[1])\n"
        "n = ffi.new('int *')\n"
        "assert lib.edge_cuda_device_count(n) == 0\n"
        "print(lib.edge_cuda_compiled(), n[0])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(library)], check=True, capture_output=True, text=True, timeout=120
    )
    compiled, devices = out.stdout.split()
    return int(compiled), int(devices)


@pytest.fixture(autouse=True)
def _need_cmake() -> None:
    if cmake_exe() is None:
        pytest.fail("cmake is needed to build native/ (it builds the package too)")


def test_build_without_cuda() -> None:
    build = cmake_build("test-cuda-off", {"EDGE_CUDA": "OFF"}, ["edge"])
    compiled, devices = _cuda_state(library_path(build))
    assert compiled == 0 and devices == 0


def test_build_with_cuda() -> None:
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("no nvcc on PATH or in /usr/local/cuda/bin: the CUDA build cannot be checked here")
    defines = {"EDGE_CUDA": "ON", "CMAKE_CUDA_ARCHITECTURES": CUDA_ARCH, "CMAKE_CUDA_COMPILER": nvcc}
    build = cmake_build("test-cuda-on", defines, ["edge"], timeout=1800)
    library = library_path(build)
    compiled, devices = _cuda_state(library)
    assert compiled == 1
    assert devices >= 0  # 0 without a GPU or driver: the CUDA build still loads and runs
    cuda_objects = list(build.rglob("*.cu.o"))
    assert cuda_objects, "no CUDA object files were built"
    if _gpus_listed_by_driver() > 0:  # with a GPU and driver, the CUDA build must see it
        assert devices >= 1


def _gpus_listed_by_driver() -> int:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60)
    return (
        sum(line.startswith("GPU ") for line in listed.stdout.splitlines()) if listed.returncode == 0 else 0
    )


def test_auto_build_without_a_cuda_compiler(tmp_path: Path) -> None:
    """EDGE_CUDA=AUTO on a machine without nvcc: CMake finds no CUDA compiler and the build still succeeds."""
    cmake = cmake_exe()
    assert cmake is not None
    path_dirs = os.environ.get("PATH", "").split(os.pathsep)
    hidden = [d for d in path_dirs if d and not (Path(d) / "nvcc").exists()]
    env = {k: v for k, v in os.environ.items() if k not in ("CUDACXX", "CUDA_PATH", "CUDAToolkit_ROOT")}
    env["PATH"] = os.pathsep.join(hidden)
    build = tmp_path / "auto"
    configure = subprocess.run(
        [cmake, "-S", str(ROOT), "-B", str(build), "-DEDGE_CUDA=AUTO"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert configure.returncode == 0, configure.stdout + configure.stderr
    # the check is only meaningful if CMake really found no CUDA compiler
    assert "Looking for a CUDA compiler - NOTFOUND" in configure.stdout, configure.stdout
    assert "CUDA backend OFF" in configure.stdout
    built = subprocess.run(
        [cmake, "--build", str(build), "--target", "edge", "--parallel", str(os.cpu_count() or 2)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert built.returncode == 0, built.stdout[-6000:] + built.stderr[-6000:]
    compiled, devices = _cuda_state(library_path(build))
    assert compiled == 0 and devices == 0

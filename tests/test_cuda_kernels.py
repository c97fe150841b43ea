"""The CUDA decode kernels (native/src/cuda/matvec.cu) against the CPU engine's scalar kernels.

No GPU is needed: libedge is built with ``EDGE_CUDA=chipstar`` (../shared/chipstar: the same .cu source
compiled by clang to SPIR-V and run through OpenCL on this CPU) into build/test-cuda-chipstar, and
``edge_cuda_matvec`` is called on it through cffi. Every kernel x weight type is compared with
``edge_matmul`` on the scalar path of the installed library, on uneven shapes: row counts that leave a
partly filled thread block, rows of fewer and of more blocks than a warp has lanes, an all-zero activation
block.

Tolerance: the activations are quantized on the device exactly as on the CPU (quantize_act.c: same
rounding, no fused multiply-add), so every block's integer sum is the same and only the order of the float
additions differs (one warp per row: 32 lane sums, then a shuffle tree; the CPU sums blocks in order).
The bound is the one tests/test_kernels.py uses between SIMD paths and the scalar path:
4 * (n_terms + 16) * u * sum|w||x|, u = 2^-24, n_terms = n_cols for float weights and n_cols / 16 for
quantized ones. A kernel that reads one wrong value is off by far more (a deliberately broken Q4_K kernel,
one nibble misread, failed this test: see the commit message).

The same comparison runs on a real GPU where the installed library is an nvcc build and finds a device
(there the Q8_0 and K-quant kernels use __dp4a; build with -DEDGE_CUDA_PORTABLE=ON for the twin).

The ptxas test compiles every .cu of native/src/cuda with nvcc for every architecture the build targets
and fails on any register spill in the kernels (skips without nvcc).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from native_build import ROOT, cmake_build, library_path
from test_kernels import dequantize, random_weights

from edge._native import ffi as edge_ffi
from edge._native import lib as edge_lib
from edge.kernels import matmul

CHIPSTAR_SETUP = ROOT.parent / "shared" / "chipstar" / "setup.sh"
CHIPSTAR = Path(os.environ.get("EDGE_CHIPSTAR_ROOT", "/opt/chipstar"))
CUDA_TYPES = [T.F32, T.F16, T.BF16, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.IQ4_XS]
U = 2.0**-24
EDGE_OK, EDGE_ERR_INVALID_ARG, EDGE_ERR_UNSUPPORTED = 0, 1, 5
# Architectures of native/CMakeLists.txt's nvcc build (real code; 120 also as PTX).
NVCC_ARCHS = ["75", "80", "86", "89", "90", "120"]

CDEF = """
int edge_cuda_compiled(void);
int edge_cuda_device_count(int *n_devices);
int edge_cuda_matvec(int type, const void *w, int64_t n_rows, int64_t n_cols, const float *x, float *y);
const char *edge_last_error(void);
"""


def shapes(qtype: T) -> list[tuple[int, int]]:
    """(n_rows, n_cols): 1 row; rows not a multiple of the 4 a thread block holds; fewer blocks per row
    than lanes, and more (lanes loop, and idle lanes in the last round)."""
    if qtype in (T.F32, T.F16, T.BF16):
        return [(1, 5), (7, 97), (33, 1003), (6, 4099)]
    blk = 256 if qtype != T.Q8_0 else 32
    return [(1, blk), (7, 3 * blk), (33, 8 * blk), (5, 37 * blk), (2, 70 * blk)]


@pytest.fixture(scope="module")
def chipstar_lib() -> Any:
    """libedge built with EDGE_CUDA=chipstar, loaded through cffi (skips where chipStar cannot be had)."""
    if not (CHIPSTAR / "bin" / "cucc").exists():
        if not CHIPSTAR_SETUP.exists():
            pytest.skip(f"{CHIPSTAR_SETUP.parent} is absent: no chipStar to run the CUDA kernels on this CPU")
        setup = subprocess.run(["bash", str(CHIPSTAR_SETUP)], capture_output=True, text=True, timeout=1800)
        if setup.returncode != 0 or not (CHIPSTAR / "bin" / "cucc").exists():
            tail = (setup.stdout + setup.stderr)[-800:]
            pytest.skip(f"chipStar setup failed (it needs apt and pip): {tail}")
    build = cmake_build("test-cuda-chipstar", {"EDGE_CUDA": "chipstar"}, ["edge"], timeout=1800)
    # chipStar's runtime: OpenCL through its own ICD file, on the CPU device (what env.sh exports).
    os.environ.setdefault("OCL_ICD_VENDORS", str(CHIPSTAR / "icd"))
    os.environ.setdefault("CHIP_BE", "opencl")
    os.environ.setdefault("CHIP_DEVICE_TYPE", "cpu")
    os.environ.setdefault("CHIP_LOGLEVEL", "err")
    import cffi

    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    lib = ffi.dlopen(str(library_path(build)))
    return ffi, lib


@pytest.fixture(params=["chipstar", "installed"])
def cuda_lib(request: pytest.FixtureRequest) -> Any:
    """The kernels under chipStar, and on a real GPU where the installed library (an nvcc build) has one."""
    if request.param == "chipstar":
        return request.getfixturevalue("chipstar_lib")
    n = edge_ffi.new("int *")
    if not edge_lib.edge_cuda_compiled() or edge_lib.edge_cuda_device_count(n) != EDGE_OK or n[0] == 0:
        pytest.skip(
            "the installed library has no CUDA device to run the kernels on (chipStar runs them here)"
        )
    return edge_ffi, edge_lib


def cuda_matvec(mod: Any, qtype: int, raw: np.ndarray, n_rows: int, n_cols: int, x: np.ndarray) -> np.ndarray:
    ffi, lib = mod
    w = np.ascontiguousarray(raw).view(np.uint8).reshape(-1)
    xa = np.ascontiguousarray(x, dtype=np.float32)
    y = np.full(n_rows, np.nan, dtype=np.float32)
    status = lib.edge_cuda_matvec(
        int(qtype),
        ffi.from_buffer(w),
        n_rows,
        n_cols,
        ffi.cast("const float *", ffi.from_buffer(xa)),
        ffi.cast("float *", ffi.from_buffer(y)),
    )
    assert status == EDGE_OK, ffi.string(lib.edge_last_error()).decode()
    return y


def test_chipstar_build_has_a_device(chipstar_lib: Any) -> None:
    ffi, lib = chipstar_lib
    assert lib.edge_cuda_compiled() == 1
    n = ffi.new("int *")
    assert lib.edge_cuda_device_count(n) == EDGE_OK
    assert n[0] >= 1, "chipStar's OpenCL CPU device was not found"


@pytest.mark.parametrize("qtype", CUDA_TYPES, ids=lambda t: t.name)
def test_cuda_matvec_matches_the_scalar_kernels(cuda_lib: Any, qtype: T) -> None:
    rng = np.random.default_rng(int(qtype) + 2100)
    worst = 0.0
    for n_rows, n_cols in shapes(qtype):
        raw = random_weights(qtype, n_rows, n_cols, rng)
        w = dequantize(qtype, raw, n_rows, n_cols).astype(np.float64)
        x = (rng.standard_t(3, size=n_cols) * np.exp(rng.normal(0, 1))).astype(np.float32)
        if n_cols >= 512:
            x[256:512] = 0.0  # an all-zero activation block (the quantizers' amax == 0 path)
        y = cuda_matvec(cuda_lib, qtype, raw, n_rows, n_cols, x)
        y_ref = matmul(raw, qtype, n_rows, n_cols, x, isa="scalar").astype(np.float64)
        n_terms = n_cols if qtype in (T.F32, T.F16, T.BF16) else n_cols // 16
        tol = 4 * (n_terms + 16) * U * (np.abs(w) @ np.abs(x).astype(np.float64))
        diff = np.abs(y.astype(np.float64) - y_ref)
        assert np.all(np.isfinite(y)), f"{qtype.name} {n_rows}x{n_cols}: rows not written"
        ratio = float((diff / tol).max())
        assert np.all(diff <= tol), (
            f"{qtype.name} {n_rows}x{n_cols}: max diff {diff.max():.3g}, diff/tol {ratio:.3g}"
        )
        worst = max(worst, ratio)
    print(f"{qtype.name}: worst diff / tolerance {worst:.3g}")


def test_cuda_matvec_rejects_what_it_cannot_do(chipstar_lib: Any) -> None:
    ffi, lib = chipstar_lib
    w = np.zeros(1024, dtype=np.uint8)
    x = np.zeros(256, dtype=np.float32)
    y = np.zeros(4, dtype=np.float32)
    wp = ffi.from_buffer(w)
    xp, yp = ffi.cast("float *", ffi.from_buffer(x)), ffi.cast("float *", ffi.from_buffer(y))
    assert lib.edge_cuda_matvec(int(T.Q4_0), wp, 1, 32, xp, yp) == EDGE_ERR_UNSUPPORTED
    assert "no CUDA kernel" in ffi.string(lib.edge_last_error()).decode()
    assert lib.edge_cuda_matvec(int(T.Q4_K), wp, 1, 200, xp, yp) == EDGE_ERR_INVALID_ARG
    assert "not a multiple" in ffi.string(lib.edge_last_error()).decode()
    assert lib.edge_cuda_matvec(int(T.F32), wp, 0, 4, xp, yp) == EDGE_ERR_INVALID_ARG
    assert lib.edge_cuda_matvec(int(T.F32), ffi.NULL, 1, 4, xp, yp) == EDGE_ERR_INVALID_ARG


def test_installed_library_without_a_device_says_so() -> None:
    """The installed build (CUDA or not) with no GPU: EDGE_ERR_UNSUPPORTED and a message, never a crash."""
    n = edge_ffi.new("int *")
    assert edge_lib.edge_cuda_device_count(n) == EDGE_OK
    if n[0] > 0:
        pytest.skip("a CUDA device is present: the no-device path cannot be checked here")
    x = np.ones(32, dtype=np.float32)
    y = np.zeros(1, dtype=np.float32)
    w = np.zeros(32, dtype=np.float32)
    status = edge_lib.edge_cuda_matvec(
        int(T.F32),
        edge_ffi.from_buffer(w),
        1,
        32,
        edge_ffi.cast("const float *", edge_ffi.from_buffer(x)),
        edge_ffi.cast("float *", edge_ffi.from_buffer(y)),
    )
    assert status == EDGE_ERR_UNSUPPORTED
    message = edge_ffi.string(edge_lib.edge_last_error()).decode()
    assert "without CUDA" in message or "no CUDA device" in message, message


def _nvcc() -> str | None:
    found = shutil.which("nvcc")
    default = Path("/usr/local/cuda/bin/nvcc")
    return found or (str(default) if default.exists() else None)


def test_decode_kernels_do_not_spill_registers(tmp_path: Path) -> None:
    """Every .cu of native/src/cuda (matvec.cu's decode and prompt kernels, the ops_*.cu device operations)
    for every architecture the build targets: no kernel spills registers."""
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("no nvcc on PATH or in /usr/local/cuda/bin: ptxas cannot be run here")
    listed = subprocess.run([nvcc, "--list-gpu-arch"], capture_output=True, text=True).stdout
    missing = [a for a in NVCC_ARCHS if f"compute_{a}" not in listed]
    assert not missing, f"this nvcc cannot build sm_{missing} (the build targets {NVCC_ARCHS})"
    native = ROOT / "native"
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in NVCC_ARCHS]
    sources = sorted((native / "src" / "cuda").glob("*.cu"))
    assert {"matvec.cu", "ops_norm.cu", "ops_attention.cu", "ops_moe.cu"} <= {s.name for s in sources}
    log = ""
    for src in sources:
        cmd = [nvcc, "-std=c++17", "-O2", "-c", *gencode, "-Xptxas", "-v"]
        cmd += [f"-I{native / 'include'}", f"-I{native / 'src' / 'core'}", f"-I{native / 'src'}", str(src)]
        cmd += ["-o", str(tmp_path / (src.stem + ".o"))]
        built = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        assert built.returncode == 0, built.stderr[-4000:]
        log += built.stdout + built.stderr
    # ptxas -v: "Compiling entry function 'NAME' for 'sm_XX'", then for it
    # "N bytes stack frame, S bytes spill stores, L bytes spill loads".
    entries = re.findall(r"Compiling entry function '(\w+)' for '(sm_\d+)'", log)
    spills = re.findall(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", log)
    assert len(spills) == len(entries), "a kernel without its ptxas resource line"
    kernels = {(name, sm) for name, sm in entries if "matvec" in name or "quant" in name}
    assert {sm for _, sm in kernels} == {f"sm_{a}" for a in NVCC_ARCHS}, log[-3000:]
    assert len(kernels) >= 12 * len(NVCC_ARCHS), sorted(kernels)
    for op in ("matmul_quant", "rmsnorm_kernel", "attention_kernel", "kv_store", "router_kernel", "gelu_mul",
               "scatter_kernel", "embed_kernel", "rope_kernel"):  # fmt: skip
        assert any(op in name for name, _ in entries), f"no {op} kernel compiled"
    spilled = [(e, s) for e, s in zip(entries, spills, strict=True) if s[1] != "0" or s[2] != "0"]
    assert not spilled, f"register spills: {spilled}\n{log[-4000:]}"

"""arm64 builds under qemu: NEON kernels and attention loops match their references, logits the x86 build's.

arm64: libedge cross-built for aarch64 (cmake/aarch64-linux-gnu.cmake) and run under qemu-aarch64, on a CPU
model with dotprod (qemu's "max") and one without (Cortex-A57: plain ARMv8.0 Advanced SIMD).

- every NEON kernel path (neon, neon_dotprod where the CPU has it) x every weight type against the scalar
  path, through edge.h (tests/support/arm64_kernels_driver.c: the shapes, token counts and tolerance of
  tests/test_kernels.py's SIMD-vs-scalar check);
- the NEON attention loops bit for bit against their one-row and key-by-key references
  (tests/support/attention_driver.c, as for AVX2);
- whole-model forward passes (a prompt, then tokens decoded one at a time) of the demo model and of the
  synthetic test model through edge.h (tests/support/arm64_model_driver.c), against the x86-64 build's
  logits of the same program.

Skipped, with the package to install, where the cross compiler or qemu is absent (.ci/run installs them).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from arm64_build import CPU_MODELS, cross_build, cross_program, missing_tools, run_qemu
from native_build import ROOT, c_compiler

MISSING = missing_tools()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"aarch64 cross tests: {MISSING}")

N_TYPES = 15  # weight types with kernels (tests/test_kernels.py TYPES)
# A prompt of 8 tokens in one call, then 4 decoded one at a time (token 0, [PAD], avoided).
N_PROMPT = 8
TOKENS = [(i * 577 + 13) % 500 + 5 for i in range(12)]


@pytest.fixture(scope="module")
def arm64_lib() -> Path:
    return cross_build()


@pytest.fixture(scope="module")
def kernels_driver(arm64_lib: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("arm64") / "arm64_kernels_driver"
    return cross_program(arm64_lib, [ROOT / "tests" / "support" / "arm64_kernels_driver.c"], out)


@pytest.fixture(scope="module")
def model_drivers(arm64_lib: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(aarch64 driver, x86-64 driver against the installed package's libedge)."""
    import edge

    out = tmp_path_factory.mktemp("arm64-model")
    source = ROOT / "tests" / "support" / "arm64_model_driver.c"
    arm = cross_program(arm64_lib, [source], out / "arm64_model_driver")
    pkg = Path(edge.__file__).resolve().parent
    native = out / "model_driver_x86"
    cmd = [c_compiler(), "-std=c11", "-O2", f"-I{pkg / 'include'}", str(source), "-o", str(native)]
    cmd += [f"-L{pkg}", "-ledge", f"-Wl,-rpath,{pkg}"]
    built = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    return arm, native


@pytest.fixture(scope="module")
def demo_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped demo model (edge/data/tiny-grok) converted at q4_k_m, the demo's default file."""
    from edge.convert.pipeline import convert_checkpoint

    from edge.commands.demo import data_dir, model_info

    out = tmp_path_factory.mktemp("demo") / "tiny-grok-q4_k_m.gguf"
    convert_checkpoint(
        data_dir() / "ckpt-0",
        out,
        data_dir() / "tokenizer.model",
        preset="q4_k_m",
        key_size=int(model_info()["key_size"]),
        show_progress=False,
    )
    return out


def test_the_plain_level_holds_no_dotprod_instruction(arm64_lib: Path) -> None:
    """dot_neon.c is built for ARMv8.0 (a Cortex-A53/A57 has no sdot), dot_dotprod_neon.c uses sdot."""
    objects = {p.name: p for p in arm64_lib.rglob("*.o")}
    counts = {}
    for name in ("dot_neon.c.o", "dot_dotprod_neon.c.o", "attention_neon.c.o"):
        assert name in objects, f"{name} not built in {arm64_lib}"
        dump = subprocess.run(
            ["aarch64-linux-gnu-objdump", "-d", str(objects[name])],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        counts[name] = sum(1 for line in dump.splitlines() if "\tsdot\t" in line or "\tudot\t" in line)
    assert counts["dot_neon.c.o"] == 0 and counts["attention_neon.c.o"] == 0
    assert counts["dot_dotprod_neon.c.o"] > 0


@pytest.mark.parametrize("cpu", list(CPU_MODELS))
def test_neon_kernels_match_scalar_under_qemu(cpu: str, kernels_driver: Path) -> None:
    dotprod = CPU_MODELS[cpu]
    run = run_qemu(cpu, kernels_driver, ["1" if dotprod else "0"])
    out = run.stdout + run.stderr
    assert run.returncode == 0 and run.stdout.rstrip().endswith("ok"), out[-6000:]
    checked = [line for line in run.stdout.splitlines() if ": ok (worst diff / tol" in line]
    assert len(checked) == N_TYPES * (2 if dotprod else 1), out[-6000:]
    assert any(line.startswith("neon_dotprod ") for line in checked) == dotprod


@pytest.mark.parametrize("cpu", list(CPU_MODELS))
def test_neon_attention_loops_under_qemu(cpu: str, arm64_lib: Path, tmp_path: Path) -> None:
    native = ROOT / "native"
    program = cross_program(
        arm64_lib,
        [ROOT / "tests" / "support" / "attention_driver.c", native / "src" / "engine" / "attention_neon.c"],
        tmp_path / "attention_driver",
        ["-DATTN_ISA=neon", f"-I{native / 'src' / 'core'}", f"-I{native / 'src'}", "-Wno-unused-parameter"],
    )
    run = run_qemu(cpu, program, [])
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stdout + run.stderr


def rel_rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b.astype(np.float64)))


def model_logits(command: Callable[[list[str]], subprocess.CompletedProcess[str]], gguf: Path, isa: str,
                 kv: str, out: Path) -> np.ndarray:  # fmt: skip
    run = command([str(gguf), isa, kv, "2", str(out), str(N_PROMPT), *map(str, TOKENS)])
    assert run.returncode == 0, run.stdout + run.stderr
    logits = np.fromfile(out, dtype=np.float32)
    return logits.reshape(len(TOKENS), -1)


# (file, KV cache type, bound on the rel. RMS difference of all logits between the aarch64 and x86-64 builds):
# test_engine_reference.py's bounds for every CPU path (test_every_cpu_path_matches_the_reference). F32
# weights and cache: float32 arithmetic in another order only, 5e-6 (measured 6.9e-7). Quantized weights:
# the activations are quantized to int8 by the same code, but a value within float rounding of a rounding
# boundary lands on either side depending on the order of the sums before it (or on FMA contraction: gcc
# fuses a * b + c on aarch64, not on x86-64), and the random synthetic model amplifies such flips over its
# 11 layers: on its Q8_0 file the x86-64 build's own AVX2 and scalar paths differ by 0.035, its scalar path
# and the aarch64 build's scalar path by 0.017, and the paths compared here by 0.038 (Q4_K_M: 0.093, 0.086,
# 0.093); the bound is test_engine_reference.py's for every path's Q8_0 logits, 0.15. The trained demo model
# does not amplify them: measured 1.6e-7 (no flip on these tokens); its bound, 1e-3, leaves room for a few
# one-step flips, while a wrong kernel moves its logits by far more (a Q4_K scale taken from the wrong sub-
# block: 0.061). The greedy tokens must agree as well.
MODELS = {
    "synthetic-f32": ("f32", "f32", 5e-6),
    "synthetic-q8_0": ("q8_0", "f16", 0.15),
    "demo-q4_k_m": ("demo", "f16", 1e-3),
}


@pytest.mark.parametrize("cpu", list(CPU_MODELS))
@pytest.mark.parametrize("model", list(MODELS))
def test_whole_model_logits_match_the_x86_build(
    model: str, cpu: str, model_drivers: tuple[Path, Path], converted, demo_gguf: Path, tmp_path: Path
) -> None:
    preset, kv, bound = MODELS[model]
    gguf = demo_gguf if preset == "demo" else converted(preset)
    arm, native = model_drivers

    def on_x86(args: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(native), *args], capture_output=True, text=True, timeout=600)

    def on_arm(args: list[str]) -> subprocess.CompletedProcess[str]:
        return run_qemu(cpu, arm, args)

    x86 = model_logits(on_x86, gguf, "auto", kv, tmp_path / "x86.f32")
    a64 = model_logits(on_arm, gguf, "auto", kv, tmp_path / "arm64.f32")
    assert np.all(np.isfinite(a64))
    err = rel_rms(a64, x86)
    print(f"{model} on {cpu}: rel. RMS difference to x86-64 {err:.3g} (bound {bound:g})")
    assert err < bound, f"{model} {cpu}: {err:.3g}"
    np.testing.assert_array_equal(a64.argmax(1), x86.argmax(1))


# ------------------------------------------------------------------------------------------------ macOS

# Apple clang's target for Apple Silicon; the macOS SDK is absent here, so the system headers are glibc's
# aarch64 ones (Debian's libc6-dev-arm64-cross) with the Apple target's own macros (__APPLE__, __MACH__, no
# __linux__): every `#if defined(__APPLE__)` / `!defined(__linux__)` branch is selected and parsed, the glibc
# declarations standing in for Apple's. clang predefines __nonnull for Darwin, which glibc defines
# differently: undefined first. sys/sysctl.h (cpu.c's sysctlbyname) is not in glibc: a stand-in header with
# the macOS prototype (sysctl(3)) lets cpu.c's macOS branch be parsed; whether Apple's header matches it is
# not checked here.
MACOS_FLAGS = ["-target", "arm64-apple-macos12", "-U__nonnull", "-std=gnu11", "-D_GNU_SOURCE"]
MACOS_FLAGS += ["-fsyntax-only"]
MACOS_FLAGS += ["-Wall", "-Wextra", "-Wno-unused-parameter", "-Werror", '-DEDGE_VERSION_STRING="0"']
SYSCTL_STAND_IN = "#include <stddef.h>\nint sysctlbyname(const char *, void *, size_t *, void *, size_t);\n"


def macos_sources() -> list[Path]:
    """The sources CMake compiles for arm64 (the x86-only *_avx2.c / *_avx512.c left out; no CUDA)."""
    sources = sorted((ROOT / "native" / "src").rglob("*.c"))
    return [s for s in sources if not s.name.endswith(("_avx2.c", "_avx512.c"))]


@pytest.mark.skipif(shutil.which("clang") is None, reason="clang is not installed (Debian package clang)")
def test_macos_branches_compile_for_apple_silicon(tmp_path: Path) -> None:
    stand_in = tmp_path / "macos" / "sys"
    stand_in.mkdir(parents=True)
    (stand_in / "sysctl.h").write_text(SYSCTL_STAND_IN)
    native = ROOT / "native"
    includes = [f"-I{native / 'include'}", f"-I{native / 'src' / 'core'}", f"-I{native / 'src'}"]
    includes += ["-isystem", str(tmp_path / "macos"), "-isystem", "/usr/aarch64-linux-gnu/include"]
    checked = []
    for src in macos_sources():
        # each ISA file with the flags CMake gives it (the plain NEON files: the ARMv8.0 baseline)
        isa = ["-march=armv8-a"] if src.name.endswith("_neon.c") else []
        isa = ["-march=armv8.2-a+dotprod"] if src.name.endswith("_dotprod_neon.c") else isa
        run = subprocess.run(
            ["clang", *MACOS_FLAGS, *isa, *includes, str(src)], capture_output=True, text=True, timeout=300
        )
        assert run.returncode == 0, f"{src.relative_to(ROOT)}:\n{run.stdout}{run.stderr}"
        checked.append(src.name)
    expected = {"cpu.c", "gguf.c", "threadpool.c", "dot_neon.c", "dot_dotprod_neon.c", "attention_neon.c"}
    assert expected <= set(checked)

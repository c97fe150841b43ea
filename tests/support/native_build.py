"""Configure and build native/ with CMake into a cached directory under build/ (for the tests that need
a build other than the installed one: sanitizers, CUDA on/off)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD_ROOT = ROOT / "build"


def cmake_exe() -> str | None:
    return shutil.which("cmake") or shutil.which("cmake", path=str(Path(sys.executable).parent))


def _generator() -> list[str]:
    ninja = shutil.which("ninja") or shutil.which("ninja", path=str(Path(sys.executable).parent))
    return ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"] if ninja else ["-G", "Unix Makefiles"]


def cmake_build(name: str, defines: dict[str, str], targets: list[str], timeout: float = 900) -> Path:
    """Configure ROOT (the top-level CMakeLists.txt) into build/<name> with `defines` and build `targets`.

    Reuses the directory when it was configured the same way, so reruns only rebuild what changed.
    Raises AssertionError with CMake's output when configuring or building fails.
    """
    cmake = cmake_exe()
    assert cmake is not None, "cmake is not on PATH"
    build = BUILD_ROOT / name
    args = [f"-D{k}={v}" for k, v in sorted(defines.items())]
    stamp = build / "grok-edge-test-config.txt"
    wanted = "\n".join([*args, *_generator()])
    if build.exists() and (not stamp.exists() or stamp.read_text() != wanted):
        shutil.rmtree(build)
    build.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)}
    if not (build / "CMakeCache.txt").exists() or not stamp.exists():
        configure = subprocess.run(
            [cmake, "-S", str(ROOT), "-B", str(build), *_generator(), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
        assert configure.returncode == 0, configure.stdout + configure.stderr
        stamp.write_text(wanted)
    built = subprocess.run(
        [cmake, "--build", str(build), "--target", *targets],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    assert built.returncode == 0, built.stdout[-6000:] + built.stderr[-6000:]
    return build


def library_path(build: Path) -> Path:
    for name in ("libedge.so", "libedge.dylib"):
        found = list(build.rglob(name))
        if found:
            return found[0]
    raise AssertionError(f"no libedge in {build}")


def asan_test_program() -> Path:
    """native/tests' edge_test_gguf and libedge built with ASan + UBSan (build/asan).

    Without cmake (a fresh machine where only the package build had it, in pip's isolated
    environment), the reader's own sources are compiled directly with the C compiler instead."""
    if cmake_exe() is None:
        return asan_test_program_direct()
    build = cmake_build(
        "asan",
        {"EDGE_SANITIZE": "ON", "EDGE_BUILD_TESTS": "ON", "EDGE_CUDA": "OFF", "CMAKE_BUILD_TYPE": "Debug"},
        ["edge_test_gguf"],
    )
    program = next((p for p in build.rglob("edge_test_gguf") if p.is_file()), None)
    assert program is not None, f"edge_test_gguf not found in {build}"
    return program


SANITIZER_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:halt_on_error=1:detect_stack_use_after_return=1",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
}
SANITIZER_REPORTS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:", "SUMMARY: ")


def c_compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    assert cc is not None, "no C compiler"
    return cc


def asan_cflags() -> list[str]:
    """cc flags for native/ sources built directly (no CMake) with ASan + UBSan."""
    native = ROOT / "native"
    return [
        "-std=c11",
        "-D_GNU_SOURCE",
        "-g",
        "-O1",
        "-fsanitize=address,undefined",
        "-fno-omit-frame-pointer",
        "-fno-sanitize-recover=all",
        f"-I{native / 'include'}",
        f"-I{native / 'src' / 'core'}",
        f"-I{native / 'src'}",
    ]


def asan_test_program_direct() -> Path:
    """edge_test_gguf with the GGUF reader and the core it needs, compiled by cc with ASan + UBSan."""
    native = ROOT / "native"
    sources = [
        native / "src" / "core" / "status.c",
        native / "src" / "core" / "types.c",
        *sorted((native / "src" / "gguf").glob("*.c")),
        native / "tests" / "test_gguf.c",
    ]
    out_dir = BUILD_ROOT / "asan-direct"
    out_dir.mkdir(parents=True, exist_ok=True)
    program = out_dir / "edge_test_gguf"
    cmd = [c_compiler(), *asan_cflags(), *map(str, sources), "-o", str(program), "-lm"]
    built = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout + built.stderr
    return program


def asan_engine_driver(driver_name: str = "engine_asan_driver.c") -> Path:
    """tests/support/engine_asan_driver.c (or another driver there) linked with every native source,
    built with ASan + UBSan."""
    native = ROOT / "native"
    cc, common = c_compiler(), asan_cflags()
    out = BUILD_ROOT / "engine-asan"
    out.mkdir(parents=True, exist_ok=True)
    isa_flags = {
        "_avx2.c": ["-mavx2", "-mfma", "-mf16c"],
        "_avx512.c": [
            "-mavx512f",
            "-mavx512bw",
            "-mavx512vl",
            "-mavx512dq",
            "-mavx512vnni",
            "-mavx2",
            "-mfma",
        ]
        + ["-mf16c"],
    }
    objects = []
    for src in sorted((native / "src").rglob("*.c")):
        if src.name.endswith("_neon.c") or (src.parent.name == "cuda" and src.name != "cuda_stub.c"):
            continue
        flags = next((f for suffix, f in isa_flags.items() if src.name.endswith(suffix)), [])
        obj = out / (src.relative_to(native / "src").as_posix().replace("/", "_") + ".o")
        built = subprocess.run(
            [cc, *common, *flags, "-c", str(src), "-o", str(obj)], capture_output=True, text=True
        )
        assert built.returncode == 0, built.stderr
        objects.append(str(obj))
    driver = Path(__file__).with_name(driver_name)
    program = out / driver.stem
    cmd = [cc, *common, str(driver), *objects, "-o", str(program), "-lm", "-lpthread"]
    built = subprocess.run(cmd, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    return program

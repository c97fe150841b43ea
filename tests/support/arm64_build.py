"""Cross-building grok-edge for aarch64 (cmake/aarch64-linux-gnu.cmake, Debian's gcc-aarch64-linux-gnu) and
running the results under qemu-aarch64 (Debian's qemu-user): shared by tests/test_arm64.py and
bench/arm64_instructions.py."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from native_build import ROOT, cmake_build, cmake_exe

CROSS_CC = "aarch64-linux-gnu-gcc"
QEMU = "qemu-aarch64"
SYSROOT = Path("/usr/aarch64-linux-gnu")
TOOLCHAIN = ROOT / "cmake" / "aarch64-linux-gnu.cmake"
# The CPU models the tests run on: qemu's "max" (every extension qemu knows: dotprod, i8mm, ...) and a
# Cortex-A57 (ARMv8.0: Advanced SIMD without dotprod), with whether the dotprod path must be offered.
CPU_MODELS = {"max": True, "cortex-a57": False}


def missing_tools() -> str | None:
    """Why the aarch64 cross build or its emulation cannot run here, or None."""
    needs = {
        CROSS_CC: "gcc-aarch64-linux-gnu",
        QEMU: "qemu-user",
        "aarch64-linux-gnu-objdump": "binutils-aarch64-linux-gnu",
    }
    for tool, package in needs.items():
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian package {package})"
    if not (SYSROOT / "lib").is_dir():
        return f"no aarch64 C library in {SYSROOT} (Debian package libc6-dev-arm64-cross)"
    if cmake_exe() is None:
        return "cmake is not on PATH"
    return None


def cross_build() -> Path:
    """libedge cross-built for aarch64 (build/arm64, CMake with the toolchain file); returns the build dir."""
    return cmake_build("arm64", {"CMAKE_TOOLCHAIN_FILE": str(TOOLCHAIN), "EDGE_CUDA": "OFF"}, ["edge"])


def library_dir(build: Path) -> Path:
    return build / "native"


def cross_program(build: Path, sources: list[Path], out: Path, flags: list[str] | None = None) -> Path:
    """A C program cross-compiled for aarch64 against build's libedge (public header only unless flags add
    internal include paths)."""
    lib = library_dir(build)
    cmd = [
        CROSS_CC,
        "-std=c11",
        "-O2",
        "-Wall",
        "-Wextra",
        *(flags or []),
        f"-I{ROOT / 'native' / 'include'}",
        *map(str, sources),
        "-o",
        str(out),
        f"-L{lib}",
        "-ledge",
        "-lm",
        f"-Wl,-rpath,{lib}",
    ]
    built = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout + built.stderr
    return out


def qemu_command(cpu: str, program: Path, args: list[str], plugin: Path | None = None) -> list[str]:
    plug = ["-plugin", str(plugin)] if plugin else []
    return [QEMU, "-L", str(SYSROOT), "-cpu", cpu, *plug, str(program), *args]


def run_qemu(
    cpu: str, program: Path, args: list[str], plugin: Path | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QEMU_")}
    return subprocess.run(
        qemu_command(cpu, program, args, plugin), capture_output=True, text=True, timeout=timeout, env=env
    )

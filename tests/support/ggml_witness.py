"""llama.cpp's ggml base library, shipped inside llama-cpp-python (the test extra): the independent
witness that some tests call directly through ctypes (GGUF parser, type sizes, quantizer)."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest


def ggml_base_library() -> ctypes.CDLL:
    """libggml-base from the installed llama-cpp-python; skips the calling test without it."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python (the test extra) is not installed")
    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    candidates = sorted(lib_dir.glob("libggml-base.*")) or sorted(lib_dir.glob("libggml.*"))
    if not candidates:
        pytest.skip(f"no libggml-base in {lib_dir}")
    return ctypes.CDLL(str(candidates[0]))

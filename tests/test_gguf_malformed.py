"""Malformed GGUF files are rejected with an error naming the file, the problem and the byte position.

Malformed GGUF files: each violation is rejected with EdgeFormatError naming the file, the problem
and the byte position, and nothing is read outside the file (the corpus also runs under ASan/UBSan in
test_sanitizers.py and seeds the fuzzer in tests/fuzz/)."""

from __future__ import annotations

import ctypes
from pathlib import Path

import gguf
import pytest
from ggml_witness import ggml_base_library
from gguf_cases import TRUNCATION_WORDS, Malformed, base_file, malformed_cases, section_bounds, truncations

from edge._native import EdgeError, EdgeFormatError
from edge.gguf import GGUFFile

CASES = malformed_cases()


def test_base_file_is_valid_for_gguf_py_and_us(tmp_path: Path) -> None:
    path = tmp_path / "base.gguf"
    path.write_bytes(base_file())
    reader = gguf.GGUFReader(path)
    with GGUFFile(path) as f:
        assert [t.name for t in f.tensors] == [t.name for t in reader.tensors]
        assert f.metadata["tokenizer.ggml.tokens"] == ["<pad>", "a", "bc"]
        # the last tensor ends exactly at the end of the file: every truncation cuts something
        last = f.tensors[-1]
        assert f.data_offset + last.offset + last.nbytes == len(base_file())


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_malformed_file_gives_its_clean_error(case: Malformed, tmp_path: Path) -> None:
    path = tmp_path / f"{case.name}.gguf"
    path.write_bytes(case.data)
    with pytest.raises(EdgeFormatError) as err:
        GGUFFile(path)
    message = str(err.value)
    assert isinstance(err.value, EdgeError) and err.value.status == "EDGE_ERR_FORMAT"
    assert message.startswith(f"{path}: "), message
    assert case.expect in message, message
    assert "(at byte " in message and "\n" not in message


def test_every_truncation_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "truncated.gguf"
    sections_seen = set()
    for section, n, data in truncations():
        path.write_bytes(data)
        with pytest.raises(EdgeFormatError) as err:
            GGUFFile(path)
        message = str(err.value)
        assert message.startswith(f"{path}: ") and "(at byte " in message, (n, message)
        assert any(w in message for w in TRUNCATION_WORDS), (section, n, message)
        if section in ("data", "padding"):  # header and infos complete: the tensors run past the end
            assert "ends past the end of the file" in message, (n, message)
        if section == "header":
            assert "file ends inside the" in message, (n, message)
        sections_seen.add(section)
    assert sections_seen == set(section_bounds()) | {"padding"}


# Where llama.cpp's own parser (gguf_init_from_file with no_alloc) is more lenient than ours: it
# takes n_dims = 0 as a scalar (its writers never emit one), and with no_alloc it does not check the
# data section against the file size (llama.cpp checks that later, when it loads the weights).
GGML_ACCEPTS = {"n_dims_0", "size_past_end"}


def _ggml_gguf_parser() -> ctypes.CDLL:
    ggml = ggml_base_library()
    ggml.gguf_init_from_file.restype = ctypes.c_void_p
    ggml.gguf_init_from_file.argtypes = [ctypes.c_char_p, _GGUFInitParams]
    ggml.gguf_free.argtypes = [ctypes.c_void_p]
    return ggml


class _GGUFInitParams(ctypes.Structure):
    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.c_void_p)]


def test_llama_cpp_parser_agrees(tmp_path: Path) -> None:
    """The second witness: llama.cpp's GGUF parser accepts the base file and rejects the malformed ones."""
    ggml = _ggml_gguf_parser()

    def accepts(data: bytes) -> bool:
        path = tmp_path / "witness.gguf"
        path.write_bytes(data)
        ctx = ggml.gguf_init_from_file(str(path).encode(), _GGUFInitParams(True, None))
        if ctx:
            ggml.gguf_free(ctx)
        return bool(ctx)

    assert accepts(base_file())
    accepted = {case.name for case in CASES if accepts(case.data)}
    assert accepted == GGML_ACCEPTS

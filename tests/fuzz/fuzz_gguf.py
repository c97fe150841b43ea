"""atheris fuzzer of the native GGUF reader.

    python tests/fuzz/fuzz_gguf.py [CORPUS_DIR ...] [libFuzzer flags, e.g. -max_total_time=40]

Each input is written to an in-memory file and opened with edge.gguf.GGUFFile (edge_gguf_open).
Opening must either succeed or raise EdgeFormatError; on success every accessor is exercised: every
metadata entry and string, every tensor's data (each byte is read), the name lookups and the typed
getters. Any other exception, or a crash in the native code, is a finding.

Coverage: the Python layer is instrumented; libedge is not (gcc has no libFuzzer coverage, and gcc's
ASan runtime cannot be preloaded next to atheris' libFuzzer without breaking coverage). To steer the
search anyway, each rejection reason reached is its own line in note_rejection(), and a custom
mutator writes edge values (0, 2^32, 2^63, ...) into 4- and 8-byte fields. Memory errors are
caught by replaying every input the fuzzer kept through the ASan/UBSan build of
native/tests/test_gguf.c (`edge_test_gguf --any DIR`), as tests/test_fuzz.py does.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile

import atheris
import numpy as np

with atheris.instrument_imports():
    from edge import _native
    from edge.gguf import GGUFFile


def _input_file() -> tuple[int, str]:
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("fuzz.gguf")
        return fd, f"/proc/self/fd/{fd}"
    fd, path = tempfile.mkstemp(suffix=".gguf")
    return fd, path


FD, PATH = _input_file()


def note_rejection(message: str) -> None:
    """One line per rejection reason, so that the fuzzer keeps inputs reaching a new one."""
    if "magic" in message:
        return
    if "version" in message:
        return
    if "metadata count" in message:
        return
    if "tensor count" in message:
        return
    if "of the key of" in message or "empty key" in message:
        return
    if "unknown value type" in message:
        return
    if "unknown element type" in message or "nested arrays" in message:
        return
    if "metadata string array" in message or "of metadata array" in message:
        return
    if "metadata array" in message:
        return
    if "duplicate metadata key" in message:
        return
    if "general.alignment" in message:
        return
    if "empty name" in message or "the name of tensor" in message:
        return
    if "dimensions, expected" in message or "dimension count" in message:
        return
    if "is 0" in message or "overflows int64" in message:
        return
    if "unknown type" in message:
        return
    if "block size" in message:
        return
    if "byte size" in message:
        return
    if "not a multiple of the alignment" in message:
        return
    if "ends past the end of the file" in message:
        return
    if "duplicate tensor name" in message:
        return
    if "file ends inside" in message:
        return
    return


def exercise(path: str) -> None:
    """Open `path` and use everything the reader offers; EdgeFormatError is the only allowed failure."""
    try:
        f = GGUFFile(path)
    except _native.EdgeFormatError as err:
        if not str(err).startswith(f"{path}: ") or "(at byte " not in str(err):
            raise AssertionError(f"unclear error message: {err}") from None
        note_rejection(str(err))
        return
    ffi, lib = _native.ffi, _native.lib
    with f:
        g = f._handle.ptr  # type: ignore[union-attr]
        checksum = 0
        for t in f.tensors:
            view = f.array(t)
            checksum ^= int(view.view(np.uint8).sum())
            assert view.nbytes == t.nbytes
            assert f.data_offset + t.offset + t.nbytes <= f.file_size
        idx = ffi.new("int64_t *")
        iv, fv = ffi.new("int64_t *"), ffi.new("double *")
        s, n = ffi.new("const char **"), ffi.new("uint64_t *")
        assert len(f.metadata) == f.n_kv  # distinct keys in the file stay distinct in Python
        for i, key in enumerate(f.metadata):
            raw = key.encode("utf-8", "surrogateescape")  # the key's bytes in the file
            if b"\0" in raw:
                continue  # not expressible as a C string
            _native.check(lib.edge_gguf_find_key(g, raw, idx))
            assert idx[0] == i
            lib.edge_gguf_get_int(g, raw, iv)
            lib.edge_gguf_get_float(g, raw, fv)
            lib.edge_gguf_get_str(g, raw, s, n)
            lib.edge_gguf_kv_string(g, i, 0, s, n)
        for t in f.tensors:
            raw = t.name.encode("utf-8", "surrogateescape")
            if b"\0" not in raw:
                _native.check(lib.edge_gguf_find_tensor(g, raw, idx))
                assert idx[0] == t.index
        del checksum


# Integers that sit on the edges the reader checks (counts, lengths, dims, offsets, types, alignment).
INTERESTING = [0, 1, 2, 3, 4, 5, 8, 12, 13, 24, 31, 32, 33, 64, 255, 256, 4096]
INTERESTING += [2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**61, 2**62, 2**63 - 1, 2**63, 2**64 - 1]


def mutate(data: bytes, max_size: int, seed: int) -> bytes:
    """Half of the time libFuzzer's own mutation; otherwise overwrite a 4- or 8-byte little-endian field
    at a random position with an edge value (GGUF fields are unaligned, so any position may be one)."""
    rng = random.Random(seed)
    if rng.random() < 0.5 or len(data) < 8:
        return atheris.Mutate(data, max_size)
    buf = bytearray(data)
    width = rng.choice((4, 8))
    pos = rng.randrange(0, len(buf) - width + 1)
    value = (rng.choice(INTERESTING) + rng.choice((-1, 0, 0, 1))) % (1 << (8 * width))
    buf[pos : pos + width] = value.to_bytes(width, "little")
    return bytes(buf[:max_size])


def test_one_input(data: bytes) -> None:
    os.ftruncate(FD, 0)
    os.pwrite(FD, data, 0)
    exercise(PATH)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input, custom_mutator=mutate)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

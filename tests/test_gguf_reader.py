"""The native GGUF reader reads every file gguf-py writes as gguf-py's own GGUFReader does.

The native GGUF reader (through edge.gguf) against gguf-py's GGUFReader on files written by gguf-py:
every metadata value type, every tensor type, GGUF v2 and v3; zero-copy views; typed getters."""

from __future__ import annotations

import ctypes
import gc
import sys
import weakref
from pathlib import Path

import gguf
import ml_dtypes
import numpy as np
import pytest
from ggml_witness import ggml_base_library
from gguf_cases import (
    GGUF_PY_TYPE_SIZE_BUGS,
    T_F32,
    TENSOR_TYPE_NAMES,
    U32,
    as_version,
    base_file,
    every_type_file,
    gguf_bytes,
    kv,
    scalar,
    tensor_info,
)

from edge import _native
from edge.gguf import GGUFFile, tensor_class, type_block, type_name

ffi, lib = _native.ffi, _native.lib


@pytest.fixture(scope="module")
def every_type(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gguf") / "every_type.gguf"
    every_type_file(path)
    return path


@pytest.fixture(scope="module", params=[3, 2], ids=["v3", "v2"])
def versioned(
    request: pytest.FixtureRequest, every_type: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    if request.param == 3:
        return every_type
    path = tmp_path_factory.mktemp("gguf") / "every_type_v2.gguf"
    path.write_bytes(as_version(every_type.read_bytes(), 2))
    return path


def _ggml_type_sizes() -> dict[str, tuple[int, int]]:
    """(block elements, block bytes) per type from llama.cpp's ggml (the llama-cpp-python wheel)."""
    ggml = ggml_base_library()
    ggml.ggml_type_size.restype = ctypes.c_size_t
    ggml.ggml_blck_size.restype = ctypes.c_int64
    qt = gguf.GGMLQuantizationType
    return {n: (ggml.ggml_blck_size(int(qt[n])), ggml.ggml_type_size(int(qt[n]))) for n in TENSOR_TYPE_NAMES}


def test_type_sizes_match_ggml() -> None:
    sizes = _ggml_type_sizes()
    for name, (block, nbytes) in sizes.items():
        t = int(gguf.GGMLQuantizationType[name])
        assert type_block(t) == (block, nbytes), name
        if name not in GGUF_PY_TYPE_SIZE_BUGS:
            assert gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[name]] == (block, nbytes), name


def test_type_list_covers_every_native_type() -> None:
    known = []
    for t in range(64):
        status = lib.edge_type_info(t, ffi.NULL, ffi.NULL, ffi.NULL)
        if status == lib.EDGE_OK:
            known.append(type_name(t))
    assert sorted(known) == sorted(TENSOR_TYPE_NAMES)


def test_metadata_matches_gguf_py(versioned: Path) -> None:
    reader = gguf.GGUFReader(versioned)
    with GGUFFile(versioned) as f:
        assert f.version == int(reader.fields["GGUF.version"].parts[0][0])
        fields = {k: v for k, v in reader.fields.items() if not k.startswith("GGUF.")}
        assert list(f.metadata) == list(fields)  # same keys, same order
        covered = set()
        for key, field in fields.items():
            ours = f.metadata[key]
            types = f.metadata_types[key]
            main = field.types[0]
            assert types[0] == main.name, key
            if main == gguf.GGUFValueType.ARRAY:
                assert types[1] == field.types[-1].name, key
                covered.add(("ARRAY", types[1]))
                expected = field.contents()
                if isinstance(ours, np.ndarray):
                    assert ours.tolist() == expected, key
                else:
                    assert ours == expected, key
            else:
                assert types[1] is None
                covered.add((types[0], None))
                assert ours == field.contents(), key
                assert type(ours) is type(field.contents()) or types[0] == "BOOL", key
        scalar_names = [t.name for t in gguf.GGUFValueType if t != gguf.GGUFValueType.ARRAY]
        assert covered == {(n, None) for n in scalar_names} | {("ARRAY", n) for n in scalar_names}


def test_tensors_match_gguf_py(versioned: Path) -> None:
    reader = gguf.GGUFReader(versioned)
    with GGUFFile(versioned) as f:
        assert f.alignment == reader.alignment
        assert f.data_offset == reader.data_offset
        assert [t.name for t in f.tensors] == [t.name for t in reader.tensors]
        seen = set()
        for ours, theirs in zip(f.tensors, reader.tensors, strict=True):
            assert ours.type == int(theirs.tensor_type), ours.name
            assert ours.type_name == theirs.tensor_type.name
            assert ours.ne == tuple(int(n) for n in theirs.shape), ours.name
            assert ours.shape == tuple(reversed(ours.ne))
            assert ours.n_elements == theirs.n_elements
            assert f.data_offset + ours.offset == theirs.data_offset, ours.name
            view = f.array(ours)
            theirs_bytes = np.ascontiguousarray(theirs.data).tobytes()
            if ours.type_name in GGUF_PY_TYPE_SIZE_BUGS:
                block, block_bytes = type_block(ours.type)
                assert ours.nbytes == ours.n_elements // block * block_bytes
                assert view.tobytes() == theirs_bytes[: ours.nbytes]
                seen.add(ours.type_name)
                continue
            assert ours.nbytes == theirs.n_bytes, ours.name
            assert view.tobytes() == theirs_bytes, ours.name  # the same bytes
            if ours.type_name in ("F32", "F16", "F64", "I8", "I16", "I32", "I64"):
                assert view.dtype == theirs.data.dtype and view.shape == theirs.data.shape
                np.testing.assert_array_equal(view, theirs.data)
            elif ours.type_name == "BF16":
                assert view.dtype == np.dtype(ml_dtypes.bfloat16) and view.shape == ours.shape
            else:  # quantized: rows of bytes, the shape gguf-py uses too
                assert view.dtype == np.uint8 and view.shape == theirs.data.shape, ours.name
            seen.add(ours.type_name)
        assert seen == set(TENSOR_TYPE_NAMES)
        assert f.tensor("t.f32_3d").shape == (2, 3, 4)
        assert f.tensor("t.f32_4d").ne == (4, 3, 1, 2)


def test_views_are_zero_copy_and_read_only(every_type: Path) -> None:
    with GGUFFile(every_type) as f:
        info = f.tensor("t.f32")
        view = f.array("t.f32")
        handle = f._handle
        assert handle is not None
        c_info = ffi.new("edge_gguf_tensor_info *")
        _native.check(lib.edge_gguf_tensor(handle.ptr, info.index, c_info))
        assert view.ctypes.data == int(ffi.cast("uintptr_t", c_info.data))  # the mapping itself
        assert not view.flags.writeable and not view.flags.owndata
        with pytest.raises(ValueError):
            view[0, 0] = 1.0
        if sys.platform == "linux":  # a MAP_PRIVATE page not written by us shows later writes to the file
            before = view[0, 0]
            with open(every_type, "r+b") as fp:
                fp.seek(f.data_offset + info.offset)
                fp.write(np.float32(12345.5).tobytes())
            assert view[0, 0] == np.float32(12345.5)
            with open(every_type, "r+b") as fp:
                fp.seek(f.data_offset + info.offset)
                fp.write(np.float32(before).tobytes())


def test_views_keep_the_mapping_alive_after_close(tmp_path: Path) -> None:
    path = tmp_path / "base.gguf"
    path.write_bytes(base_file())
    f = GGUFFile(path)
    handle_ref = weakref.ref(f._handle)  # type: ignore[arg-type]
    view = f.array("token_embd.weight")
    expected = view.copy()
    f.close()
    assert f.closed
    with pytest.raises(_native.EdgeError, match="closed"):
        f.array("token_embd.weight")
    del f
    gc.collect()
    assert handle_ref() is not None  # the view still holds the mapping
    np.testing.assert_array_equal(view, expected)
    del view
    gc.collect()
    assert handle_ref() is None  # the last view gone: unmapped


def test_unknown_tensor_is_a_clear_key_error(tmp_path: Path) -> None:
    path = tmp_path / "base.gguf"
    path.write_bytes(base_file())
    with GGUFFile(path) as f, pytest.raises(KeyError, match=r"base\.gguf: no tensor named 'nope'"):
        f.tensor("nope")


def test_typed_getters_and_lookups(every_type: Path) -> None:
    with GGUFFile(every_type) as f:
        g = f._handle.ptr  # type: ignore[union-attr]
        iv, fv = ffi.new("int64_t *"), ffi.new("double *")
        s, n = ffi.new("const char **"), ffi.new("uint64_t *")
        for key, expected in [("test.i8", -128), ("test.u32", 4294967295), ("test.i64", -(2**63))]:
            _native.check(lib.edge_gguf_get_int(g, key.encode(), iv))
            assert iv[0] == expected
        _native.check(lib.edge_gguf_get_int(g, b"test.bool_true", iv))
        assert iv[0] == 1
        _native.check(lib.edge_gguf_get_float(g, b"test.f32", fv))
        assert fv[0] == 3.25
        _native.check(lib.edge_gguf_get_float(g, b"grok.context_length", fv))
        assert fv[0] == 8192.0
        _native.check(lib.edge_gguf_get_str(g, b"test.string", s, n))
        assert ffi.unpack(s[0], n[0]).decode() == "héllo, wörld ✓"
        with pytest.raises(_native.EdgeFormatError, match="'test.u64' does not fit in int64"):
            _native.check(lib.edge_gguf_get_int(g, b"test.u64", iv))
        with pytest.raises(_native.EdgeFormatError, match="'test.string' is STRING, expected an integer"):
            _native.check(lib.edge_gguf_get_int(g, b"test.string", iv))
        with pytest.raises(_native.EdgeFormatError, match="'test.arr.f32' is ARRAY, expected a number"):
            _native.check(lib.edge_gguf_get_float(g, b"test.arr.f32", fv))
        with pytest.raises(_native.EdgeFormatError, match="'test.u8' is UINT8, expected a STRING"):
            _native.check(lib.edge_gguf_get_str(g, b"test.u8", s, n))
        with pytest.raises(
            _native.EdgeFormatError, match=r"every_type\.gguf: metadata key 'absent' is missing"
        ):
            _native.check(lib.edge_gguf_get_int(g, b"absent", iv))
        idx = ffi.new("int64_t *")
        for i, key in enumerate(f.metadata):
            _native.check(lib.edge_gguf_find_key(g, key.encode(), idx))
            assert idx[0] == i
        for t in f.tensors:
            _native.check(lib.edge_gguf_find_tensor(g, t.name.encode(), idx))
            assert idx[0] == t.index
        _native.check(lib.edge_gguf_find_tensor(g, b"absent", idx))
        assert idx[0] == -1
        arr = list(f.metadata).index("test.arr.string")
        with pytest.raises(_native.EdgeRangeError, match="element 4 of metadata array 'test.arr.string'"):
            _native.check(lib.edge_gguf_kv_string(g, arr, 4, s, n))
        with pytest.raises(_native.EdgeRangeError, match="tensor index 999 out of range"):
            _native.check(lib.edge_gguf_tensor(g, 999, ffi.new("edge_gguf_tensor_info *")))


def test_io_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(_native.EdgeError, match=r"missing\.gguf: cannot open: No such file"):
        GGUFFile(tmp_path / "missing.gguf")
    with pytest.raises(_native.EdgeError, match="not a regular file"):
        GGUFFile(tmp_path)


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("token_embd.weight", "embeddings"),
        ("output.weight", "embeddings"),
        ("output_norm.weight", "norms"),
        ("blk.0.attn_q.weight", "attention"),
        ("blk.12.attn_k.weight", "attention"),
        ("blk.3.attn_v.weight", "attention"),
        ("blk.63.attn_output.weight", "attention"),
        ("blk.0.attn_output_norm.weight", "norms"),
        ("blk.0.attn_norm.weight", "norms"),
        ("blk.0.ffn_norm.weight", "norms"),
        ("blk.0.layer_output_norm.weight", "norms"),
        ("blk.0.ffn_gate_inp.weight", "router"),
        ("blk.0.ffn_gate_exps.weight", "experts"),
        ("blk.0.ffn_up_exps.weight", "experts"),
        ("blk.0.ffn_down_exps.weight", "experts"),
        ("rope_freqs.weight", "other"),
    ],
)
def test_tensor_class(name: str, cls: str) -> None:
    assert tensor_class(name) == cls


def test_non_utf8_names_stay_distinct_and_round_trip(tmp_path: Path) -> None:
    """Keys that differ only in bytes that are not UTF-8 stay distinct (found by the fuzzer)."""
    keys = [b"general.\xccrchitecture", b"general.\xffrchitecture"]
    data = gguf_bytes(
        [kv(k, U32, scalar(U32, i)) for i, k in enumerate(keys)],
        [tensor_info(b"t\xe9", [1], T_F32, 0)],  # a Latin-1 (not UTF-8) name
        b"\0" * 4,
    )
    path = tmp_path / "bytes.gguf"
    path.write_bytes(data)
    with GGUFFile(path) as f:
        assert len(f.metadata) == f.n_kv == 2
        raw_keys = [k.encode("utf-8", "surrogateescape") for k in f.metadata]
        assert raw_keys == keys and list(f.metadata.values()) == [0, 1]
        name = f.tensors[0].name
        assert name.encode("utf-8", "surrogateescape") == b"t\xe9"
        assert f.tensor(name).index == 0

"""Read GGUF files through the native reader (edge_gguf_* in edge.h).

Strings (keys, values, tensor names) are decoded as UTF-8 with "surrogateescape": bytes that are not
valid UTF-8 survive as lone surrogates, so distinct keys stay distinct and ``s.encode("utf-8",
"surrogateescape")`` gives back the exact bytes of the file.

The file is memory-mapped and validated by C at open. ``GGUFFile.metadata`` holds plain Python values
(copied out of the mapping); ``GGUFFile.array`` returns zero-copy, read-only numpy views of tensor data
that keep the mapping alive for as long as they exist, so closing the file never leaves a view
pointing at unmapped memory: the mapping is released when the file is closed *and* the last view is gone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from edge._native import EdgeError, check, ffi, lib

# edge_gguf_value_type -> name, and numpy dtype of the fixed-size ones (little-endian on disk).
VALUE_TYPE_NAMES: dict[int, str] = {
    0: "UINT8",
    1: "INT8",
    2: "UINT16",
    3: "INT16",
    4: "UINT32",
    5: "INT32",
    6: "FLOAT32",
    7: "BOOL",
    8: "STRING",
    9: "ARRAY",
    10: "UINT64",
    11: "INT64",
    12: "FLOAT64",
}
_VALUE_DTYPES: dict[int, np.dtype[Any]] = {
    0: np.dtype("<u1"),
    1: np.dtype("<i1"),
    2: np.dtype("<u2"),
    3: np.dtype("<i2"),
    4: np.dtype("<u4"),
    5: np.dtype("<i4"),
    6: np.dtype("<f4"),
    7: np.dtype("<u1"),  # BOOL: one byte, nonzero = true
    10: np.dtype("<u8"),
    11: np.dtype("<i8"),
    12: np.dtype("<f8"),
}
_BOOL, _STRING, _ARRAY = 7, 8, 9

# Element dtypes of the unquantized tensor types (ggml numbering); others are exposed as raw bytes.
_TENSOR_DTYPES: dict[int, np.dtype[Any]] = {
    0: np.dtype("<f4"),  # F32
    1: np.dtype("<f2"),  # F16
    24: np.dtype("<i1"),  # I8
    25: np.dtype("<i2"),  # I16
    26: np.dtype("<i4"),  # I32
    27: np.dtype("<i8"),  # I64
    28: np.dtype("<f8"),  # F64
    30: np.dtype(ml_dtypes.bfloat16),  # BF16
}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a GGUF file. ``ne`` is in ggml order (ne[0] = row length); ``shape`` is numpy order."""

    name: str
    type: int
    type_name: str
    ne: tuple[int, ...]
    shape: tuple[int, ...]
    nbytes: int
    offset: int  # from the start of the data section
    index: int

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.ne, dtype=np.int64))


def type_name(type_id: int) -> str:
    """Name of a ggml tensor type ("Q4_K"); EdgeUnsupportedError for unknown types."""
    name = ffi.new("const char **")
    check(lib.edge_type_info(type_id, ffi.NULL, ffi.NULL, name))
    return ffi.string(name[0]).decode()


def type_block(type_id: int) -> tuple[int, int]:
    """(elements per block, bytes per block) of a ggml tensor type."""
    elems, nbytes = ffi.new("int64_t *"), ffi.new("int64_t *")
    check(lib.edge_type_info(type_id, elems, nbytes, ffi.NULL))
    return int(elems[0]), int(nbytes[0])


_LAYER_PREFIX = re.compile(r"^blk\.\d+\.")
TENSOR_CLASSES = ("embeddings", "attention", "router", "experts", "norms", "other")


def tensor_class(name: str) -> str:
    """Class of a llama.cpp tensor name (grok layout).

    One of embeddings, attention, router, experts, norms, other."""
    base = _LAYER_PREFIX.sub("", name)
    for suffix in (".weight", ".bias"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    if base.endswith("_norm"):
        return "norms"
    if base in ("token_embd", "output"):
        return "embeddings"
    if base in ("attn_q", "attn_k", "attn_v", "attn_output", "attn_qkv"):
        return "attention"
    if base == "ffn_gate_inp":
        return "router"
    if base.startswith("ffn_") and base.endswith("_exps"):
        return "experts"
    return "other"


class _Handle:
    """Owns one edge_gguf*; closes it when the last reference (the file or a view) goes away."""

    def __init__(self, path: str) -> None:
        out = ffi.new("edge_gguf **")
        check(lib.edge_gguf_open(path.encode(), out))
        self.ptr: Any = out[0]

    def __del__(self) -> None:
        ptr = getattr(self, "ptr", None)
        if ptr is not None:
            lib.edge_gguf_close(ptr)
            self.ptr = None


class _MappedBytes:
    """A read-only byte range of the mapping exposed to numpy; holds the handle alive."""

    def __init__(self, handle: _Handle, address: int, nbytes: int) -> None:
        self._handle = handle
        self.__array_interface__ = {
            "shape": (nbytes,),
            "typestr": "|u1",
            "data": (address, True),
            "version": 3,
        }


class GGUFFile:
    """A GGUF file opened with the native reader. Use as ``with GGUFFile(path) as f: ...``."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._handle: _Handle | None = _Handle(self.path)
        ptr = self._handle.ptr
        version, n_kv, n_tensors = ffi.new("uint32_t *"), ffi.new("int64_t *"), ffi.new("int64_t *")
        alignment, data_offset, file_size = (
            ffi.new("uint64_t *"),
            ffi.new("uint64_t *"),
            ffi.new("uint64_t *"),
        )
        check(lib.edge_gguf_header(ptr, version, n_kv, n_tensors, alignment, data_offset, file_size))
        self.version = int(version[0])
        self.alignment = int(alignment[0])
        self.data_offset = int(data_offset[0])
        self.file_size = int(file_size[0])
        self.n_kv = int(n_kv[0])
        self.metadata: dict[str, Any] = {}
        self.metadata_types: dict[str, tuple[str, str | None]] = {}
        for i in range(int(n_kv[0])):
            key, value, types = self._read_kv(ptr, i)
            self.metadata[key] = value
            self.metadata_types[key] = types
        self.tensors: list[TensorInfo] = [self._read_tensor_info(ptr, i) for i in range(int(n_tensors[0]))]
        self._by_name = {t.name: t for t in self.tensors}

    # -- reading -------------------------------------------------------------------------------------

    @staticmethod
    def _strings(ptr: Any, i: int, count: int) -> list[str]:
        """Elements 0..count-1 of string entry i (count = 1 for a single string)."""
        s, n = ffi.new("const char **"), ffi.new("uint64_t *")
        get, unpack, out = lib.edge_gguf_kv_string, ffi.unpack, []
        for j in range(count):
            check(get(ptr, i, j, s, n))
            out.append(unpack(s[0], n[0]).decode("utf-8", "surrogateescape"))
        return out

    def _read_kv(self, ptr: Any, i: int) -> tuple[str, Any, tuple[str, str | None]]:
        key, key_len = ffi.new("const char **"), ffi.new("uint64_t *")
        vtype, etype, n, data = (
            ffi.new("int *"),
            ffi.new("int *"),
            ffi.new("uint64_t *"),
            ffi.new("const void **"),
        )
        check(lib.edge_gguf_kv(ptr, i, key, key_len, vtype, etype, n, data))
        name = ffi.unpack(key[0], int(key_len[0])).decode("utf-8", "surrogateescape")
        t, count = int(vtype[0]), int(n[0])
        if t == _STRING:
            return name, self._strings(ptr, i, 1)[0], ("STRING", None)
        if t == _ARRAY:
            e = int(etype[0])
            types = ("ARRAY", VALUE_TYPE_NAMES[e])
            if e == _STRING:
                return name, self._strings(ptr, i, count), types
            dtype = _VALUE_DTYPES[e]
            raw = ffi.buffer(ffi.cast("const char *", data[0]), count * dtype.itemsize)
            values = np.frombuffer(raw, dtype=dtype)
            return name, (values != 0) if e == _BOOL else values.copy(), types
        dtype = _VALUE_DTYPES[t]
        raw = ffi.buffer(ffi.cast("const char *", data[0]), dtype.itemsize)
        value = np.frombuffer(raw, dtype=dtype)[0].item()
        if t == _BOOL:
            value = value != 0
        return name, value, (VALUE_TYPE_NAMES[t], None)

    @staticmethod
    def _read_tensor_info(ptr: Any, i: int) -> TensorInfo:
        info = ffi.new("edge_gguf_tensor_info *")
        check(lib.edge_gguf_tensor(ptr, i, info))
        ne = tuple(int(info.ne[d]) for d in range(int(info.n_dims)))
        return TensorInfo(
            name=ffi.unpack(info.name, int(info.name_len)).decode("utf-8", "surrogateescape"),
            type=int(info.type),
            type_name=type_name(int(info.type)),
            ne=ne,
            shape=tuple(reversed(ne)),
            nbytes=int(info.nbytes),
            offset=int(info.offset),
            index=i,
        )

    # -- public API ----------------------------------------------------------------------------------

    def tensor(self, name: str) -> TensorInfo:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"{self.path}: no tensor named {name!r} ({len(self.tensors)} tensors)") from None

    def array(self, tensor: str | TensorInfo) -> np.ndarray:
        """A read-only view of a tensor's data in the mapping (no copy), shaped in numpy order.

        F32/F16/BF16/F64/I8..I64 come typed with ``shape``; quantized types as uint8 of shape
        ``(*shape[:-1], row_bytes)``. The view keeps the mapping alive after ``close()``.
        """
        handle = self._require_open()
        info = self.tensor(tensor) if isinstance(tensor, str) else tensor
        c_info = ffi.new("edge_gguf_tensor_info *")
        check(lib.edge_gguf_tensor(handle.ptr, info.index, c_info))
        address = int(ffi.cast("uintptr_t", c_info.data))
        raw = np.asarray(_MappedBytes(handle, address, info.nbytes))
        dtype = _TENSOR_DTYPES.get(info.type)
        if dtype is not None:
            return raw.view(dtype).reshape(info.shape)
        row_bytes = info.nbytes // (info.n_elements // info.ne[0])
        return raw.reshape((*info.shape[:-1], row_bytes))

    def _require_open(self) -> _Handle:
        if self._handle is None:
            raise EdgeError("EDGE_ERR_STATE", f"{self.path}: the GGUF file is closed")
        return self._handle

    def close(self) -> None:
        """Release this object's hold on the mapping; views from array() keep it until they go away."""
        self._handle = None

    @property
    def closed(self) -> bool:
        return self._handle is None

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        counts = f"{len(self.metadata)} keys, {len(self.tensors)} tensors"
        return f"GGUFFile({self.path!r}, v{self.version}, {counts})"

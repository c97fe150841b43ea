"""GGUF test files: a byte-level builder (full control over every field, for malformed files), a
gguf-py-written file covering every metadata value type and every tensor type, and the corpus of
malformed files with the problem each must be reported as.

Shared by test_gguf_reader.py, test_gguf_malformed.py, test_info_cli.py, test_sanitizers.py and the
fuzzer's seed corpus (tests/fuzz/).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# gguf value types
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
_FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<?"}
_FMT.update({U64: "<Q", I64: "<q", F64: "<d"})

# ggml tensor types used by the builder
T_F32, T_Q4_0, T_I8, T_F64 = 0, 2, 24, 28

U64_MAX = 2**64 - 1


# ---------------------------------------------------------------------------------------------- builder


def u32(v: int) -> bytes:
    return struct.pack("<I", v)


def u64(v: int) -> bytes:
    return struct.pack("<Q", v)


def gstr(s: str | bytes, length: int | None = None) -> bytes:
    """A GGUF string; `length` overrides the length prefix (to lie)."""
    b = s.encode() if isinstance(s, str) else s
    return u64(len(b) if length is None else length) + b


def scalar(vtype: int, value: object) -> bytes:
    if vtype == STRING:
        return gstr(value)  # type: ignore[arg-type]
    return struct.pack(_FMT[vtype], value)


def array(elem: int, values: list[object], count: int | None = None) -> bytes:
    body = b"".join(scalar(elem, v) for v in values)
    return u32(elem) + u64(len(values) if count is None else count) + body


def kv(key: str | bytes, vtype: int, payload: bytes, key_len: int | None = None) -> bytes:
    return gstr(key, key_len) + u32(vtype) + payload


def tensor_info(
    name: str | bytes, ne: list[int], ttype: int, offset: int, n_dims: int | None = None
) -> bytes:
    return (
        gstr(name)
        + u32(len(ne) if n_dims is None else n_dims)
        + b"".join(u64(n) for n in ne)
        + u32(ttype)
        + u64(offset)
    )


def gguf_bytes(
    kvs: list[bytes],
    infos: list[bytes],
    data: bytes,
    *,
    version: int = 3,
    magic: bytes = b"GGUF",
    n_kv: int | None = None,
    n_tensors: int | None = None,
    alignment: int = 32,
    pad: bool = True,
) -> bytes:
    head = magic + u32(version) + u64(len(infos) if n_tensors is None else n_tensors)
    head += u64(len(kvs) if n_kv is None else n_kv)
    body = head + b"".join(kvs) + b"".join(infos)
    if pad:
        body += b"\0" * (-len(body) % alignment)
    return body + data


# The baseline valid file the malformed corpus is derived from (also checked against gguf-py).
BASE_KVS = [
    kv("general.architecture", STRING, scalar(STRING, "grok")),
    kv("general.alignment", U32, scalar(U32, 32)),
    kv("grok.block_count", U32, scalar(U32, 1)),
    kv("tokenizer.ggml.tokens", ARRAY, array(STRING, ["<pad>", "a", "bc"])),
    kv("tokenizer.ggml.scores", ARRAY, array(F32, [0.0, -1.0, -2.0])),
]
# (name, ne, type, offset, nbytes): F32 [32, 2] = 256 B; Q4_0 [64, 2] = 4 blocks × 18 = 72 B (padded to 96);
# I8 [16] = 16 B, ending exactly at the end of the file.
BASE_TENSORS = [
    ("token_embd.weight", [32, 2], T_F32, 0, 256),
    ("blk.0.attn_q.weight", [64, 2], T_Q4_0, 256, 72),
    ("blk.0.attn_norm.weight", [16], T_I8, 352, 16),
]
BASE_DATA_SIZE = 368


def base_data() -> bytes:
    return bytes((i * 7 + 3) % 251 for i in range(BASE_DATA_SIZE))


def base_infos() -> list[bytes]:
    return [tensor_info(n, ne, t, off) for n, ne, t, off, _ in BASE_TENSORS]


def base_file(**kw: object) -> bytes:
    return gguf_bytes(BASE_KVS, base_infos(), base_data(), **kw)  # type: ignore[arg-type]


def section_bounds() -> dict[str, tuple[int, int]]:
    """[begin, end) byte ranges of each section of base_file()."""
    kv_end = 24 + sum(len(k) for k in BASE_KVS)
    ti_end = kv_end + sum(len(t) for t in base_infos())
    data_begin = ti_end + (-ti_end % 32)
    return {
        "header": (0, 24),
        "metadata": (24, kv_end),
        "tensor_info": (kv_end, ti_end),
        "data": (data_begin, data_begin + BASE_DATA_SIZE),
    }


# ---------------------------------------------------------------------------------------------- malformed


@dataclass(frozen=True)
class Malformed:
    name: str
    data: bytes
    expect: str  # a distinctive substring of the error message


def _with_tensor(i: int, info: bytes) -> bytes:
    infos = base_infos()
    infos[i] = info
    return gguf_bytes(BASE_KVS, infos, base_data())


def _with_kv(i: int, entry: bytes) -> bytes:
    kvs = list(BASE_KVS)
    kvs[i] = entry
    return gguf_bytes(kvs, base_infos(), base_data())


def malformed_cases() -> list[Malformed]:
    """Every structural violation, each with the words its error must contain."""
    f = base_file()
    cases = [
        Malformed("empty", b"", "file ends inside the magic"),
        Malformed("bad_magic", b"GGUX" + f[4:], "not a GGUF file: magic is 'GGUX'"),
        Malformed("version_1", base_file(version=1), "GGUF version 1 is not supported"),
        Malformed("version_4", base_file(version=4), "unknown GGUF version 4"),
        Malformed("big_endian", f[:4] + struct.pack(">I", 3) + f[8:], "big-endian GGUF v3"),
        Malformed("n_kv_huge", base_file(n_kv=2**63), "metadata count 9223372036854775808 needs at least"),
        Malformed("n_kv_u64_max", base_file(n_kv=U64_MAX), "metadata count 18446744073709551615"),
        Malformed(
            "n_tensors_huge", base_file(n_tensors=2**62), "tensor count 4611686018427387904 needs at least"
        ),
        Malformed(
            "n_kv_plus_one_no_tensors",
            gguf_bytes(BASE_KVS, [], b"", n_kv=len(BASE_KVS) + 1, pad=False),
            "file ends inside the key of metadata entry 5",
        ),
        Malformed(
            "empty_key",  # one more entry than written: the zero padding reads as an empty key
            gguf_bytes(BASE_KVS, [], b"", n_kv=len(BASE_KVS) + 1),
            "metadata entry 5 has an empty key",
        ),
        Malformed(
            "n_tensors_plus_one",
            gguf_bytes(BASE_KVS, base_infos(), b"\0" * 4096, n_tensors=4),
            "tensor 3 has an empty name",  # the zero padding after the infos reads as an empty name
        ),
        Malformed(
            "key_length_huge",
            _with_kv(0, kv("general.architecture", STRING, scalar(STRING, "grok"), key_len=U64_MAX)),
            "length 18446744073709551615 of the key of metadata entry 0 exceeds",
        ),
        Malformed(
            "key_length_past_eof",
            _with_kv(0, kv("general.architecture", STRING, scalar(STRING, "grok"), key_len=len(f))),
            f"length {len(f)} of the key of metadata entry 0 exceeds",
        ),
        Malformed(
            "string_value_length_huge",
            _with_kv(0, kv("general.architecture", STRING, gstr("grok", 2**40))),
            "length 1099511627776 of the value of metadata 'general.architecture' exceeds",
        ),
        Malformed(
            "unknown_value_type",
            _with_kv(2, kv("grok.block_count", 13, scalar(U32, 1))),
            "metadata 'grok.block_count' has unknown value type 13",
        ),
        Malformed(
            "unknown_array_element_type",
            _with_kv(4, kv("tokenizer.ggml.scores", ARRAY, u32(77) + u64(0))),
            "metadata array 'tokenizer.ggml.scores' has unknown element type 77",
        ),
        Malformed(
            "nested_array",
            _with_kv(4, kv("tokenizer.ggml.scores", ARRAY, u32(ARRAY) + u64(1) + array(F32, [1.0]))),
            "nested arrays are not supported",
        ),
        Malformed(
            "numeric_array_count_huge",
            _with_kv(4, kv("tokenizer.ggml.scores", ARRAY, array(F32, [0.0, -1.0, -2.0], count=2**62))),
            "metadata array 'tokenizer.ggml.scores' claims 4611686018427387904 FLOAT32 elements",
        ),
        Malformed(
            "numeric_array_count_overflow",
            _with_kv(4, kv("tokenizer.ggml.scores", ARRAY, array(F64, [0.0], count=2**61 + 1))),
            "claims 2305843009213693953 FLOAT64 elements",
        ),
        Malformed(
            "string_array_count_huge",
            _with_kv(3, kv("tokenizer.ggml.tokens", ARRAY, array(STRING, ["<pad>", "a", "bc"], count=2**60))),
            "metadata string array 'tokenizer.ggml.tokens' claims 1152921504606846976 elements",
        ),
        Malformed(
            "string_array_element_length_huge",
            _with_kv(
                3, kv("tokenizer.ggml.tokens", ARRAY, u32(STRING) + u64(2) + gstr("x") + gstr("y", 2**33))
            ),
            "element 1 of metadata array 'tokenizer.ggml.tokens' exceeds",
        ),
        Malformed(
            "duplicate_key",
            _with_kv(2, kv("general.architecture", U32, scalar(U32, 1))),
            "duplicate metadata key 'general.architecture' (entries 0 and 2)",
        ),
        Malformed(
            "alignment_zero",
            _with_kv(1, kv("general.alignment", U32, scalar(U32, 0))),
            "general.alignment 0 is not a nonzero power of two",
        ),
        Malformed(
            "alignment_not_power_of_two",
            _with_kv(1, kv("general.alignment", U32, scalar(U32, 48))),
            "general.alignment 48 is not a nonzero power of two",
        ),
        Malformed(
            "alignment_wrong_type",
            _with_kv(1, kv("general.alignment", U64, scalar(U64, 32))),
            "general.alignment must be a UINT32, found UINT64",
        ),
        Malformed(
            "unknown_tensor_type",
            _with_tensor(0, tensor_info("token_embd.weight", [32, 2], 4, 0)),
            "tensor 'token_embd.weight' has unknown type 4",
        ),
        Malformed(
            "unknown_tensor_type_large",
            _with_tensor(0, tensor_info("token_embd.weight", [32, 2], 0xFFFFFFFF, 0)),
            "has unknown type 4294967295",
        ),
        Malformed(
            "n_dims_0",
            _with_tensor(2, tensor_info("blk.0.attn_norm.weight", [], T_I8, 352)),
            "tensor 'blk.0.attn_norm.weight' has 0 dimensions, expected 1 to 4",
        ),
        Malformed(
            "n_dims_5",
            _with_tensor(2, tensor_info("blk.0.attn_norm.weight", [16, 1, 1, 1, 1], T_I8, 352)),
            "has 5 dimensions, expected 1 to 4",
        ),
        Malformed(
            "zero_dim",
            _with_tensor(0, tensor_info("token_embd.weight", [32, 0], T_F32, 0)),
            "dimension 1 of tensor 'token_embd.weight' is 0",
        ),
        Malformed(
            "dims_product_overflows_u64",
            _with_tensor(0, tensor_info("token_embd.weight", [2**32, 2**32, 2], T_F32, 0)),
            "the element count of tensor 'token_embd.weight' overflows int64 at dimension 1",
        ),
        Malformed(
            "dims_product_overflows_int64",
            _with_tensor(0, tensor_info("token_embd.weight", [2**32, 2**31], T_F32, 0)),
            "overflows int64 at dimension 1",
        ),
        Malformed(
            "dim_above_int64",
            _with_tensor(0, tensor_info("token_embd.weight", [2**63], T_F32, 0)),
            "overflows int64 at dimension 0",
        ),
        Malformed(
            "byte_size_overflows",
            _with_tensor(0, tensor_info("token_embd.weight", [2**62], T_F64, 0)),
            "the byte size of tensor 'token_embd.weight' (F64) overflows",
        ),
        Malformed(
            "row_not_multiple_of_block",
            _with_tensor(1, tensor_info("blk.0.attn_q.weight", [48, 2], T_Q4_0, 256)),
            "rows of 48 elements, not a multiple of the Q4_0 block size 32",
        ),
        Malformed(
            "offset_past_end",
            _with_tensor(2, tensor_info("blk.0.attn_norm.weight", [16], T_I8, 2**20)),
            "tensor 'blk.0.attn_norm.weight' data (offset 1048576",
        ),
        Malformed(
            "offset_overflows",
            _with_tensor(2, tensor_info("blk.0.attn_norm.weight", [16], T_I8, U64_MAX - 31)),
            "ends past the end of the file",
        ),
        Malformed(
            "size_past_end",
            _with_tensor(2, tensor_info("blk.0.attn_norm.weight", [32], T_I8, 352)),
            "offset 352 + 32 bytes in the data section",
        ),
        Malformed(
            "offset_misaligned",
            _with_tensor(2, tensor_info("blk.0.attn_norm.weight", [16], T_I8, 344)),
            "data offset 344 is not a multiple of the alignment 32",
        ),
        Malformed(
            "duplicate_tensor_name",
            _with_tensor(2, tensor_info("token_embd.weight", [16], T_I8, 352)),
            "duplicate tensor name 'token_embd.weight' (tensors 0 and 2)",
        ),
    ]
    return cases


def truncations() -> Iterator[tuple[str, int, bytes]]:
    """(section, length, prefix) for every proper prefix of base_file(): each must be rejected."""
    f = base_file()
    bounds = section_bounds()
    for n in range(len(f)):
        section = next((s for s, (b, e) in bounds.items() if b <= n < e), "padding")
        yield section, n, f[:n]


# Words the error for a truncated file may use (every one names what was cut short or ran past the end).
TRUNCATION_WORDS = (
    "file ends inside",
    "exceeds the",
    "more than the",
    "ends past the end of the file",
)


# ---------------------------------------------------------------------------------------------- gguf-py


def every_type_file(path: Path, seed: int = 0) -> None:
    """Write, with gguf-py, a file holding every metadata value type (scalar and array) and every
    tensor type the native type table knows (quantized ones as random bytes of the right shape)."""
    import gguf

    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "grok")
    vt = gguf.GGUFValueType
    scalars = {
        "test.u8": (255, vt.UINT8),
        "test.i8": (-128, vt.INT8),
        "test.u16": (65535, vt.UINT16),
        "test.i16": (-32768, vt.INT16),
        "test.u32": (4294967295, vt.UINT32),
        "test.i32": (-2147483648, vt.INT32),
        "test.f32": (3.25, vt.FLOAT32),
        "test.bool_true": (True, vt.BOOL),
        "test.bool_false": (False, vt.BOOL),
        "test.string": ("héllo, wörld ✓", vt.STRING),
        "test.u64": (2**64 - 1, vt.UINT64),
        "test.i64": (-(2**63), vt.INT64),
        "test.f64": (-1.0e300, vt.FLOAT64),
    }
    for key, (value, t) in scalars.items():
        w.add_key_value(key, value, t)
    arrays = {
        "test.arr.u8": ([0, 1, 255], vt.UINT8),
        "test.arr.i8": ([-128, 0, 127], vt.INT8),
        "test.arr.u16": ([0, 65535], vt.UINT16),
        "test.arr.i16": ([-32768, 32767], vt.INT16),
        "test.arr.u32": ([0, 4294967295, 7], vt.UINT32),
        "test.arr.i32": ([-2147483648, 2147483647], vt.INT32),
        "test.arr.f32": ([0.5, -1.5, 1e30], vt.FLOAT32),
        "test.arr.bool": ([True, False, True], vt.BOOL),
        "test.arr.string": (["", "a", "ünïcode", "x" * 300], vt.STRING),
        "test.arr.u64": ([0, 2**64 - 1], vt.UINT64),
        "test.arr.i64": ([-(2**63), 2**63 - 1], vt.INT64),
        "test.arr.f64": ([1e-300, -2.5], vt.FLOAT64),
    }
    for key, (values, t) in arrays.items():
        w.add_key_value(key, values, vt.ARRAY, sub_type=t)
    w.add_uint32("grok.block_count", 1)
    w.add_context_length(8192)
    w.add_tokenizer_model("llama")
    w.add_token_list(["<pad>", "<eos>", "<bos>", "hello"])
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)

    qt = gguf.GGMLQuantizationType
    for name in TENSOR_TYPE_NAMES:
        t = qt[name]
        block, type_size = gguf.GGML_QUANT_SIZES[t]
        ne0 = 2 * block if block > 1 else 8
        shape = (3, ne0)  # numpy order
        tname = f"t.{name.lower()}"
        if name == "F32":
            w.add_tensor(tname, rng.standard_normal(shape).astype(np.float32))
        elif name == "F16":
            w.add_tensor(tname, rng.standard_normal(shape).astype(np.float16))
        elif name == "F64":
            w.add_tensor(tname, rng.standard_normal(shape))
        elif name in ("I8", "I16", "I32", "I64"):
            dtype = np.dtype(name.lower().replace("i", "int"))
            w.add_tensor(tname, rng.integers(-100, 100, shape).astype(dtype))
        elif name == "BF16":
            w.add_tensor(tname, rng.integers(0, 2**16, shape, dtype=np.uint16), raw_dtype=t)
        else:  # quantized: random bytes in the byte shape gguf-py expects
            nbytes_row = ne0 // block * type_size
            w.add_tensor(tname, rng.integers(0, 256, (3, nbytes_row), dtype=np.uint8), raw_dtype=t)
    # A 3-D and a 4-D tensor (experts are stacked 3-D).
    w.add_tensor("t.f32_3d", rng.standard_normal((2, 3, 4)).astype(np.float32))
    w.add_tensor("t.f32_4d", rng.standard_normal((2, 1, 3, 4)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# gguf-py's GGML_QUANT_SIZES gives Q8_1 40-byte blocks (two f32 scales); ggml's block_q8_1 has two f16
# scales (36 bytes), as native/src/core/blocks.h and llama.cpp's own ggml_type_size say. For these types
# gguf-py's n_bytes is wrong and the comparison is made against ggml instead.
GGUF_PY_TYPE_SIZE_BUGS = {"Q8_1"}

# Every tensor type of native/src/core/types.c (ggml numbering).
TENSOR_TYPE_NAMES = [
    "F32",
    "F16",
    "Q4_0",
    "Q4_1",
    "Q5_0",
    "Q5_1",
    "Q8_0",
    "Q8_1",
    "Q2_K",
    "Q3_K",
    "Q4_K",
    "Q5_K",
    "Q6_K",
    "Q8_K",
    "IQ4_NL",
    "IQ4_XS",
    "I8",
    "I16",
    "I32",
    "I64",
    "F64",
    "BF16",
]


def as_version(data: bytes, version: int) -> bytes:
    """The same file with another version number (v2 and v3 share the layout on little-endian)."""
    return data[:4] + u32(version) + data[8:]


def write_corpus(directory: Path, gguf_py_file: Path | None = None) -> tuple[int, int]:
    """Write ok_* and bad_* files for the native corpus test (native/tests/test_gguf.c)."""
    directory.mkdir(parents=True, exist_ok=True)
    n_ok = n_bad = 0
    valid = {
        "ok_base.gguf": base_file(),
        "ok_base_v2.gguf": as_version(base_file(), 2),
        "ok_no_tensors.gguf": gguf_bytes(BASE_KVS, [], b""),
        "ok_empty_model.gguf": gguf_bytes([], [], b""),
        "ok_align_64.gguf": gguf_bytes(
            [kv("general.alignment", U32, scalar(U32, 64))],
            [tensor_info("a", [3], T_F32, 0), tensor_info("b", [1], T_F32, 64)],
            b"\1" * 68,
            alignment=64,
        ),
    }
    if gguf_py_file is not None:
        valid["ok_every_type.gguf"] = gguf_py_file.read_bytes()
    for name, data in valid.items():
        (directory / name).write_bytes(data)
        n_ok += 1
    for case in malformed_cases():
        (directory / f"bad_{case.name}.gguf").write_bytes(case.data)
        n_bad += 1
    for section, n, data in truncations():
        (directory / f"bad_truncated_{section}_{n:04d}.gguf").write_bytes(data)
        n_bad += 1
    return n_ok, n_bad

"""Release pickles for the hostile-input fuzzer: seeds, the reproducers of issue 27, a mutator, a target.

The mutator works on opcodes (pickletools cuts the pickle into one chunk per opcode): it deletes,
duplicates, swaps and repeats chunks, inserts chunks from a dictionary of the opcodes and globals the
release uses (and some it must refuse), splices runs from other inputs, rewrites integer arguments with
edge values; a quarter of the time it flips or overwrites bytes instead. The target reads the file with
the safe unpickler (``read_leaf``) and touches every array byte of what it returns.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import random
import struct
import tempfile
from collections.abc import Sequence
from pathlib import Path

import ml_dtypes
import numpy as np
from edge.convert.safe_pickle import QuantizedWeight8bit, read_leaf, write_leaf


def _short(s: str) -> bytes:
    b = s.encode()
    return b"\x8c" + bytes([len(b)]) + b


def _global(module: str, name: str) -> bytes:
    return _short(module) + _short(name) + b"\x93"


def _long1(v: int) -> bytes:
    n = (v.bit_length() + 8) // 8 if v else 0
    return b"\x8a" + bytes([n]) + v.to_bytes(n, "little", signed=True)


_DTYPE_F4 = (
    _global("numpy", "dtype") + _short("f4") + b"\x89\x88\x87R"  # dtype('f4', False, True)
    b"(K\x03" + _short("<") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
)


def array_pickle(shape: bytes, data: bytes, fortran: bytes = b"\x89") -> bytes:
    """A protocol-4 ndarray pickle opcode by opcode, with the shape and data arguments given as opcodes
    (the reproducers put there what the release never does)."""
    return (
        b"\x80\x04"
        + _global("numpy.core.multiarray", "_reconstruct")
        + _global("numpy", "ndarray")
        + b"K\x00\x85C\x01b\x87R"  # _reconstruct(ndarray, (0,), b'b')
        + b"(K\x01"
        + shape
        + _DTYPE_F4
        + fortran
        + data
        + b"tb."
    )


def dag_pickle(levels: int, use: str) -> bytes:
    """Issue 27's denial of service: a tuple holding the previous tuple twice, ``levels`` deep (a DAG of
    a few hundred bytes whose repr is 2^levels long), placed where a NEWOBJ class or a dtype spec is
    expected."""
    out = b"\x80\x04N\x94"
    for i in range(levels):
        out += b"h" + bytes([i]) + b"h" + bytes([i]) + b"\x86\x94"
    if use == "newobj":
        return out + b")\x81."
    return out + _global("numpy", "dtype") + b"h" + bytes([levels]) + b"NN\x87R."


def nested_pickle(depth: int) -> bytes:
    """Nested 1-tuples ``depth`` deep as a NEWOBJ class (the repr of it raised RecursionError)."""
    return b"\x80\x04N" + b"\x85" * depth + b")\x81."


def reproducers() -> dict[str, tuple[bytes, str]]:
    """Issue 27's hostile pickles: name -> (bytes, a fragment of the error each must give)."""
    one_float = b"K\x01\x85"  # shape (1,)
    span = b"C\x04\x00\x00\x80?"  # 4 raw bytes: the VM's own span
    return {
        "repro_dag_newobj": (dag_pickle(80, "newobj"), "unexpected NEWOBJ of a tuple of 2 items"),
        "repro_dag_dtype": (dag_pickle(80, "dtype"), "unexpected array dtype a tuple of 2 items"),
        "repro_nested_newobj": (nested_pickle(5000), "unexpected NEWOBJ of a tuple of 1 items"),
        "repro_dim_2_64": (
            array_pickle(_long1(2**64) + b"\x85", span),
            "dim 0 is the int 18446744073709551616",
        ),
        "repro_dim_2_63": (array_pickle(_long1(2**63) + b"\x85", span), "not an int in 0..2^63-1"),
        "repro_dim_bools": (array_pickle(b"\x88\x88\x86", span), "dim 0 is the bool True"),
        "repro_data_str_offset": (array_pickle(one_float, _short("x") + b"K\x04\x86"), "data is a tuple"),
        "repro_data_none_offset": (array_pickle(one_float, b"NK\x04\x86"), "data is a tuple"),
        "repro_data_offset_2_64": (array_pickle(one_float, _long1(2**64) + b"K\x04\x86"), "data is a tuple"),
        "repro_fortran_int": (array_pickle(one_float, span, fortran=b"K\x07"), "order flag is the int 7"),
    }


def seeds() -> dict[str, bytes]:
    """Valid release pickles: what the writer emits and what CPython's pickler makes of numpy arrays."""
    out: dict[str, bytes] = {}
    leaves = {
        "ok_f32": np.arange(6, dtype=np.float32).reshape(2, 3),
        "ok_i8": np.arange(-4, 4, dtype=np.int8),
        "ok_bf16": np.linspace(-1, 1, 4).astype(ml_dtypes.bfloat16).reshape(2, 2),
        "ok_quantized": QuantizedWeight8bit(
            np.arange(8, dtype=np.int8).reshape(2, 4), np.ones((1, 4), dtype=ml_dtypes.bfloat16)
        ),
        "ok_empty": np.zeros((0, 3), dtype=np.float32),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, leaf in leaves.items():
            write_leaf(Path(tmp) / name, leaf)
            out[name] = (Path(tmp) / name).read_bytes()
    a = np.arange(4, dtype=np.float32).reshape(2, 2)
    out["ok_cpython_p4"] = pickle.dumps(a, protocol=4)
    out["ok_cpython_p3_fortran"] = pickle.dumps(np.asfortranarray(a), protocol=3)
    quantized = QuantizedWeight8bit(np.ones((2, 2), np.int8), np.ones((1, 2), ml_dtypes.bfloat16))
    out["ok_cpython_p3_quantized"] = pickle.dumps(quantized, protocol=3).replace(
        b"cedge.convert.safe_pickle\n",
        b"c__main__\n",  # as the release's own dataclass
    )
    return out


def exercise(path: str) -> None:
    """Read one release file and touch every byte of the arrays it holds."""
    leaf = read_leaf(path)
    arrays = [leaf.weight, leaf.scales] if isinstance(leaf, QuantizedWeight8bit) else [leaf]
    total = 0
    for a in arrays:
        assert isinstance(a, np.ndarray)
        total += int(a.view(np.uint8).sum()) if a.size and a.flags.c_contiguous else int(a.size)
    del total


# -- mutator ----------------------------------------------------------------------------------------------

INTERESTING_INTS = [0, 1, 2, 3, 4, 255, 256, 65535, 2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64, -1]

DICTIONARY = [
    b"N", b")", b"\x94", b"h\x00", b"h\x01", b"h\x02", b"j\x00\x00\x00\x00", b"(", b"t", b"\x85", b"\x86",
    b"\x87", b"\x88", b"\x89", b"}", b"s", b"u", b"R", b"\x81", b"b", b"0", b"2", b"q\x05",
    b"K\x00", b"K\x01", b"K\xff", b"M\xff\xff", b"J\xff\xff\xff\xff", b"J\xff\xff\xff\x7f",
    _long1(2**63), _long1(2**64), _long1(-1), b"C\x04abcd", b"C\x00", b"B\xff\xff\xff\x7f",
    b"\x8e" + b"\xff" * 8,
    _global("numpy", "dtype"), _global("numpy", "ndarray"), _global("numpy.core.multiarray", "_reconstruct"),
    _global("numpy._core.multiarray", "_reconstruct"), _global("__main__", "QuantizedWeight8bit"),
    _global("ml_dtypes", "bfloat16"), _global("os", "system"), _global("builtins", "eval"),
    b"cnumpy\ndtype\n", b"cos\nsystem\n", _short("f4"), _short("i1"), _short("u1"), _short("<"), _short(">"),
    _short("weight"), _short("scales"), b"X\xff\xff\xff\x7f", b"\x95\x08\x00\x00\x00\x00\x00\x00\x00",
    b"\x80\x04", b"\x80\x09", b".", b"\xff", b"I1\n", b"\x8c\x02\xff\xfe",
]  # fmt: skip


def _chunks(data: bytes) -> list[bytes] | None:
    try:
        positions = [pos for _, _, pos in pickletools.genops(io.BytesIO(data))]
    except Exception:  # noqa: BLE001  (a mutant that pickletools cannot walk: mutate its bytes)
        return None
    positions.append(len(data))
    return [data[a:b] for a, b in zip(positions, positions[1:], strict=False) if b > a]


def _int_chunk(rng: random.Random) -> bytes:
    v = rng.choice(INTERESTING_INTS) + rng.choice((-1, 0, 0, 1))
    if 0 <= v < 256:
        return b"K" + bytes([v])
    if 0 <= v < 65536:
        return b"M" + struct.pack("<H", v)
    if -(2**31) <= v < 2**31:
        return b"J" + struct.pack("<i", v)
    return _long1(v)


def _mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data or b"\x80")
    for _ in range(rng.randint(1, 4)):
        choice = rng.random()
        pos = rng.randrange(len(buf))
        if choice < 0.4:
            buf[pos] ^= 1 << rng.randrange(8)
        elif choice < 0.7:
            buf[pos] = rng.randrange(256)
        elif choice < 0.85 and len(buf) >= 4:
            pos = rng.randrange(len(buf) - 3)
            v = rng.choice(INTERESTING_INTS) % 2**32
            buf[pos : pos + 4] = v.to_bytes(4, "little")
        else:
            del buf[pos:]
            if not buf:
                buf = bytearray(b"\x80")
    return bytes(buf)


def mutate(data: bytes, rng: random.Random, pool: Sequence[bytes]) -> bytes:
    chunks = _chunks(data)
    if chunks is None or len(chunks) < 2 or rng.random() < 0.25:
        return _mutate_bytes(data, rng)
    for _ in range(rng.randint(1, 3)):
        n = len(chunks)
        i = rng.randrange(n)
        op = rng.random()
        if op < 0.15:
            del chunks[i]
        elif op < 0.3:
            chunks.insert(i, chunks[i])
        elif op < 0.4:
            j = rng.randrange(n)
            chunks[i], chunks[j] = chunks[j], chunks[i]
        elif op < 0.65:
            chunks.insert(i, rng.choice(DICTIONARY))
        elif op < 0.8:
            if chunks[i][:1] in (b"K", b"M", b"J", b"\x8a"):
                chunks[i] = _int_chunk(rng)
            else:
                chunks.insert(i, _int_chunk(rng))
        elif op < 0.9:
            other = _chunks(rng.choice(pool)) or [b"N"]
            a = rng.randrange(len(other))
            chunks[i:i] = other[a : a + rng.randint(1, 8)]
        else:
            run = chunks[i : i + rng.randint(1, 6)]
            chunks[i:i] = run * rng.randint(2, 40)
        if not chunks:
            chunks = [b"."]
    return b"".join(chunks)[:65536]

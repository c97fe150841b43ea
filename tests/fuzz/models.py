"""Grok GGUF models for the hostile-input fuzzer: a micro model, a structure-aware mutator, a target.

The mutator parses a GGUF into its metadata (key, type, value) and tensor infos (name, dims, type,
offset), changes them the way a broken or hostile converter would, and writes a file again:

- metadata (``grok.*`` and ``tokenizer.*`` keys three times as often as others): edge values of the same
  type (0, -1, 2^31, 2^63, NaN, +-inf, ...), another type (a scalar where an array is expected and the
  reverse, bool, string), arrays shortened, lengthened or retyped, keys dropped, duplicated or renamed;
- tensor infos: a dim changed, added, dropped or swapped, the ggml type, the data offset;
- the data: truncated, or bytes overwritten (NaN/inf weights);
- a tenth of the time, bytes of the serialized file (the header's counts and lengths).

The target loads the file as ``edge.Model`` and uses it: logits, save/load_state (and hostile variants of
the saved state, each of which must be refused), tokenize/detokenize of hostile strings, generate.
"""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from harness import in_contract

# What the target uses, imported by the parent of the forked children (not once in each child).
import edge
import edge.gguf  # noqa: F401
import edge.sampling  # noqa: F401
import edge.state  # noqa: F401
import edge.tokenizer  # noqa: F401

U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
_FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<?"}
_FMT.update({U64: "<Q", I64: "<q", F64: "<d"})
_INT_TYPES = (U8, I8, U16, I16, U32, I32, U64, I64)
_BITS = {U8: (0, 8), I8: (1, 8), U16: (0, 16), I16: (1, 16), U32: (0, 32), I32: (1, 32)}
_BITS.update({U64: (0, 64), I64: (1, 64)})
T_F32, T_F16 = 0, 1
SPACE = "\u2581"


@dataclass
class Tensor:
    name: bytes
    dims: list[int]
    ttype: int
    offset: int


@dataclass
class Gguf:
    version: int = 3
    kvs: list[tuple[bytes, int, object]] = field(default_factory=list)  # (key, type, value)
    tensors: list[Tensor] = field(default_factory=list)
    data: bytes = b""

    def alignment(self) -> int:
        for key, vtype, value in self.kvs:
            alignment = key == b"general.alignment" and vtype == U32 and isinstance(value, int)
            if alignment and value > 0 and value & (value - 1) == 0:  # type: ignore[operator]
                return value  # type: ignore[return-value]
        return 32


# -- reading and writing ----------------------------------------------------------------------------------


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError("truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> object:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> bytes:
        return self.take(int(self.unpack("<Q")))  # type: ignore[arg-type]

    def value(self, vtype: int, depth: int = 0) -> object:
        if vtype == STRING:
            return self.string()
        if vtype == ARRAY:
            elem, n = self.unpack("<I"), self.unpack("<Q")
            if depth or n > 1 << 20:  # type: ignore[operator]
                raise ValueError("not a file this mutator rewrites")
            return (elem, [self.value(elem, 1) for _ in range(n)])  # type: ignore[arg-type]
        if vtype not in _FMT:
            raise ValueError("unknown type")
        return self.unpack(_FMT[vtype])


def parse(data: bytes) -> Gguf:
    """The structure of a well-formed GGUF (ValueError for anything else: then mutate bytes instead)."""
    r = _Reader(data)
    if r.take(4) != b"GGUF":
        raise ValueError("magic")
    g = Gguf(version=int(r.unpack("<I")))  # type: ignore[arg-type]
    n_tensors, n_kv = r.unpack("<Q"), r.unpack("<Q")
    if n_tensors > 4096 or n_kv > 4096:  # type: ignore[operator]
        raise ValueError("counts")
    for _ in range(n_kv):  # type: ignore[call-overload]
        key = r.string()
        vtype = int(r.unpack("<I"))  # type: ignore[arg-type]
        g.kvs.append((key, vtype, r.value(vtype)))
    for _ in range(n_tensors):  # type: ignore[call-overload]
        name = r.string()
        n_dims = int(r.unpack("<I"))  # type: ignore[arg-type]
        if n_dims > 8:
            raise ValueError("dims")
        dims = [int(r.unpack("<Q")) for _ in range(n_dims)]  # type: ignore[arg-type]
        ttype, offset = int(r.unpack("<I")), int(r.unpack("<Q"))  # type: ignore[arg-type]
        g.tensors.append(Tensor(name, dims, ttype, offset))
    align = g.alignment()
    start = -(-r.pos // align) * align
    g.data = data[start:]
    return g


def _scalar(vtype: int, value: object) -> bytes:
    if vtype == STRING:
        b = value if isinstance(value, bytes) else str(value).encode()
        return struct.pack("<Q", len(b)) + b
    return struct.pack(_FMT[vtype], value)


def _value(vtype: int, value: object) -> bytes:
    if vtype == ARRAY:
        elem, items = value  # type: ignore[misc]
        return struct.pack("<IQ", elem, len(items)) + b"".join(_scalar(elem, v) for v in items)
    return _scalar(vtype, value)


def serialize(g: Gguf) -> bytes:
    out = bytearray(b"GGUF" + struct.pack("<IQQ", g.version, len(g.tensors), len(g.kvs)))
    for key, vtype, value in g.kvs:
        out += struct.pack("<Q", len(key)) + key + struct.pack("<I", vtype) + _value(vtype, value)
    for t in g.tensors:
        out += struct.pack("<Q", len(t.name)) + t.name + struct.pack("<I", len(t.dims))
        out += b"".join(struct.pack("<Q", d) for d in t.dims) + struct.pack("<IQ", t.ttype, t.offset)
    align = g.alignment()
    out += b"\0" * (-len(out) % align)
    return bytes(out + g.data)


# -- the micro model ----------------------------------------------------------------------------------------

D, N_HEAD, N_HEAD_KV, HEAD_DIM, N_FF, N_EXPERT = 16, 2, 1, 8, 16, 2


def vocabulary(byte_fallback: bool = True) -> tuple[list[str], list[float], list[int]]:
    """A small SentencePiece-style vocabulary: specials, characters, merges (two of them UNUSED, so that
    re-segmentation runs) and, with ``byte_fallback``, the 256 byte pieces."""
    pieces = ["[PAD]", "[BOS]", "[EOS]", "[UNK]", SPACE, "a", "b", "c", "d", "e"]
    types = [3, 3, 3, 2, 1, 1, 1, 1, 1, 1]
    for merged, kind in (("ab", 1), ("ba", 5), ("aa", 5), (SPACE + "a", 1), ("aba", 1), ("abab", 4)):
        pieces.append(merged)
        types.append(kind)
    if byte_fallback:
        pieces += [f"<0x{b:02X}>" for b in range(256)]
        types += [6] * 256
    scores = [0.0] * 4 + [-float(i) for i in range(len(pieces) - 4)]
    return pieces, scores, types


def micro_model(seed: int = 0, *, f16: bool = False, byte_fallback: bool = False) -> bytes:
    """A valid one-layer Grok GGUF (d 16, 2 experts, 16 or 272 tokens) of 10-22 KB with a tokenizer."""
    rng = np.random.default_rng(seed)
    pieces, scores, types = vocabulary(byte_fallback)
    n_vocab = len(pieces)
    g = Gguf()
    g.kvs = [
        (b"general.architecture", STRING, b"grok"),
        (b"general.alignment", U32, 32),
        (b"grok.context_length", U32, 64),
        (b"grok.embedding_length", U32, D),
        (b"grok.block_count", U32, 1),
        (b"grok.feed_forward_length", U32, N_FF),
        (b"grok.attention.head_count", U32, N_HEAD),
        (b"grok.attention.head_count_kv", U32, N_HEAD_KV),
        (b"grok.attention.key_length", U32, HEAD_DIM),
        (b"grok.attention.value_length", U32, HEAD_DIM),
        (b"grok.attention.layer_norm_rms_epsilon", F32, 1e-5),
        (b"grok.expert_count", U32, N_EXPERT),
        (b"grok.expert_used_count", U32, 2),
        (b"grok.rope.freq_base", F32, 10000.0),
        (b"grok.embedding_scale", F32, 78.38367176906169),
        (b"grok.output_scale", F32, 0.5773502691896257),
        (b"grok.attention.output_multiplier", F32, 0.08838834764831845),
        (b"grok.attn_logit_softcapping", F32, 30.0),
        (b"tokenizer.ggml.model", STRING, b"llama"),
        (b"tokenizer.ggml.tokens", ARRAY, (STRING, [p.encode() for p in pieces])),
        (b"tokenizer.ggml.scores", ARRAY, (F32, scores)),
        (b"tokenizer.ggml.token_type", ARRAY, (I32, types)),
        (b"tokenizer.ggml.bos_token_id", U32, 1),
        (b"tokenizer.ggml.eos_token_id", U32, 2),
        (b"tokenizer.ggml.unknown_token_id", U32, 3),
        (b"tokenizer.ggml.padding_token_id", U32, 0),
        (b"tokenizer.ggml.add_space_prefix", BOOL, True),
    ]
    shapes = {  # GGUF dims: the row (input) length first
        "token_embd.weight": [D, n_vocab],
        "output_norm.weight": [D],
        "blk.0.attn_norm.weight": [D],
        "blk.0.attn_q.weight": [D, N_HEAD * HEAD_DIM],
        "blk.0.attn_k.weight": [D, N_HEAD_KV * HEAD_DIM],
        "blk.0.attn_v.weight": [D, N_HEAD_KV * HEAD_DIM],
        "blk.0.attn_output.weight": [N_HEAD * HEAD_DIM, D],
        "blk.0.attn_output_norm.weight": [D],
        "blk.0.ffn_norm.weight": [D],
        "blk.0.ffn_gate_inp.weight": [D, N_EXPERT],
        "blk.0.ffn_gate_exps.weight": [D, N_FF, N_EXPERT],
        "blk.0.ffn_up_exps.weight": [D, N_FF, N_EXPERT],
        "blk.0.ffn_down_exps.weight": [N_FF, D, N_EXPERT],
        "blk.0.layer_output_norm.weight": [D],
    }
    data = bytearray()
    for name, dims in shapes.items():
        size = math.prod(dims)
        if len(dims) == 1:
            x = (1.0 + 0.1 * rng.standard_normal(size)).astype(np.float32)
        else:
            x = (rng.standard_normal(size) / math.sqrt(dims[0])).astype(np.float32)
        ttype = T_F32
        if f16 and len(dims) > 1 and "gate_inp" not in name:
            x, ttype = x.astype(np.float16), T_F16
        data += b"\0" * (-len(data) % 32)
        g.tensors.append(Tensor(name.encode(), dims, ttype, len(data)))
        data += x.tobytes()
    g.data = bytes(data)
    return serialize(g)


def seeds() -> dict[str, bytes]:
    return {"model_f32": micro_model(0), "model_f16_bytes": micro_model(1, f16=True, byte_fallback=True)}


# -- mutator ------------------------------------------------------------------------------------------------

EDGE_INTS = [0, 1, 2, 3, 7, 8, 31, 32, 33, 64, 255, 256, 4096, 65536, 2**31 - 1, 2**31, 2**32 - 1]
EDGE_INTS += [2**32, 2**62, 2**63 - 1, 2**63, 2**64 - 1, -1, -(2**31), -(2**63)]
EDGE_FLOATS = [0.0, -0.0, 1.0, -1.0, 1e-45, 1e38, -1e38, 3.5e38, float("nan"), float("inf"), float("-inf")]


def _fit(vtype: int, v: int) -> int:
    signed, bits = _BITS[vtype]
    v %= 1 << bits
    return v - (1 << bits) if signed and v >= 1 << (bits - 1) else v


def _random_value(vtype: int, rng: random.Random) -> object:
    if vtype in _INT_TYPES:
        return _fit(vtype, rng.choice(EDGE_INTS))
    if vtype in (F32, F64):
        v = rng.choice(EDGE_FLOATS)
        return v if vtype == F64 or not math.isfinite(v) or abs(v) < 3.4e38 else math.copysign(3.4e38, v)
    if vtype == BOOL:
        return rng.random() < 0.5
    if vtype == STRING:
        return rng.choice([b"", b"llama", b"grok", b"gpt2", b"\xff\xfe", b"a" * 300, SPACE.encode() * 3])
    elem = rng.choice([U8, I32, U32, F32, BOOL, STRING, I64, F64])
    return (elem, [_random_value(elem, rng) for _ in range(rng.choice([0, 1, 2, 5]))])


def _mutate_value(vtype: int, value: object, rng: random.Random) -> tuple[int, object]:
    r = rng.random()
    if r < 0.25:  # another type altogether
        new = rng.randrange(13)
        return new, _random_value(new, rng)
    if vtype == ARRAY:
        elem, items = value  # type: ignore[misc]
        items = list(items)
        if r < 0.4 and items:
            return vtype, (elem, items[: rng.randrange(len(items))])
        if r < 0.5:
            return vtype, (elem, items + items[: rng.randint(1, 300)])
        if r < 0.6 and items:  # elements of another type, converted where they fit
            new = rng.choice([U8, I32, U32, I64, F32, F64, BOOL, STRING])
            return vtype, (new, [_random_value(new, rng) for _ in items])
        if items:
            for _ in range(rng.randint(1, 3)):
                items[rng.randrange(len(items))] = _random_value(elem, rng)
        return vtype, (elem, items)
    if vtype in _INT_TYPES and isinstance(value, int) and r < 0.6:
        return vtype, _fit(vtype, value + rng.choice([-1, 1, value, -value, 1 << rng.randrange(40)]))
    return vtype, _random_value(vtype, rng)


def _pick_kv(g: Gguf, rng: random.Random) -> int:
    weights = [3 if k.startswith((b"grok.", b"tokenizer.")) else 1 for k, _, _ in g.kvs]
    return rng.choices(range(len(g.kvs)), weights)[0]


def _mutate_structure(g: Gguf, rng: random.Random) -> None:
    r = rng.random()
    if r < 0.5 and g.kvs:
        i = _pick_kv(g, rng)
        key, vtype, value = g.kvs[i]
        g.kvs[i] = (key, *_mutate_value(vtype, value, rng))
    elif r < 0.58 and g.kvs:
        del g.kvs[_pick_kv(g, rng)]
    elif r < 0.62 and g.kvs:
        g.kvs.append(g.kvs[_pick_kv(g, rng)])
    elif r < 0.66 and g.kvs:
        i = _pick_kv(g, rng)
        key, vtype, value = g.kvs[i]
        g.kvs[i] = (rng.choice([key + b"x", key[:-1], key.replace(b"grok", b"llama"), b""]), vtype, value)
    elif r < 0.86 and g.tensors:
        t = rng.choice(g.tensors)
        what = rng.random()
        if what < 0.35 and t.dims:
            j = rng.randrange(len(t.dims))
            t.dims[j] = rng.choice([0, 1, t.dims[j] - 1, t.dims[j] + 1, 2 * t.dims[j], rng.choice(EDGE_INTS)])
            t.dims[j] %= 1 << 64
        elif what < 0.45:
            t.dims = t.dims + [rng.choice([1, 2])] if rng.random() < 0.5 else t.dims[:-1]
        elif what < 0.55 and len(t.dims) > 1:
            t.dims = t.dims[::-1]
        elif what < 0.75:
            t.ttype = rng.choice([0, 1, 2, 3, 6, 7, 8, 10, 12, 13, 14, 24, 28, 30, 39, 40, 2**31])
        else:
            t.offset = rng.choice([0, t.offset + 32, t.offset - 32, t.offset + 1, len(g.data), 2**63]) % (
                1 << 64
            )
    elif r < 0.9 and len(g.tensors) > 1:
        a, b = rng.sample(g.tensors, 2)
        a.name, b.name = b.name, a.name
    elif r < 0.93 and g.tensors:
        g.tensors.remove(rng.choice(g.tensors))
    elif r < 0.96:
        g.data = g.data[: rng.randrange(len(g.data) + 1)]
    else:  # NaN / inf / huge weights
        buf = bytearray(g.data)
        for _ in range(rng.randint(1, 16)):
            pos = rng.randrange(max(1, len(buf) - 4))
            buf[pos : pos + 4] = struct.pack("<f", rng.choice([math.nan, math.inf, -math.inf, 1e30, -1e30]))
        g.data = bytes(buf)


def _mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        width = rng.choice((1, 4, 8))
        pos = rng.randrange(0, min(len(buf), 4096) - width)  # the header region, mostly
        value = rng.choice(EDGE_INTS) % (1 << (8 * width))
        buf[pos : pos + width] = value.to_bytes(width, "little")
    return bytes(buf)


def mutate(data: bytes, rng: random.Random, pool: Sequence[bytes]) -> bytes:
    try:
        g = parse(data)
    except (ValueError, struct.error, UnicodeDecodeError):
        return _mutate_bytes(data, rng)
    if rng.random() < 0.1:
        return _mutate_bytes(data, rng)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        _mutate_structure(g, rng)
    try:
        return serialize(g)
    except (struct.error, OverflowError, ValueError, TypeError):
        return _mutate_bytes(data, rng)


# -- target -------------------------------------------------------------------------------------------------

HOSTILE_TEXTS = [
    "",
    "abab ba aa",
    "b" + "a" * 300,
    SPACE * 50,
    "aba" * 100,
    "\x00\xff\u2581\U0010ffff",
    "e\u0301\ufeff\u200d",
]


def _hostile_states(state: bytes, other: bytes, n_vocab: int, n_ctx: int) -> list[bytes]:
    """Variants of a saved state of 4 tokens that load_state must refuse (``other`` holds 2 tokens)."""
    head = 24  # magic, version, flags, count
    ids_end, other_end = head + 4 * 4, head + 4 * 2
    return [
        state[:10],
        b"XXXXXXXX" + state[8:],
        state[:8] + (2).to_bytes(4, "little") + state[12:],
        state[:16] + (n_ctx + 1).to_bytes(8, "little") + state[24:],
        state[:16] + (2**63).to_bytes(8, "little") + state[24:],
        state[:head] + n_vocab.to_bytes(4, "little") + state[head + 4 :],
        state[:head] + (2**32 - 1).to_bytes(4, "little") + state[head + 4 :],
        state[:-1],
        state[:16] + (5).to_bytes(8, "little") + state[head:ids_end] + b"\1\0\0\0" + state[ids_end:],
        other[:other_end] + state[ids_end:],  # 2 token ids, the KV state of 4 positions
        state[:ids_end] + other[other_end:],  # 4 token ids, the KV state of 2 positions
    ]


def exercise(path: str) -> None:
    """Load ``path`` as edge.Model and use what it offers; every hostile saved state must be refused."""
    with edge.Model(path, n_ctx=16, n_batch=8, n_threads=1, kv_type="f32") as m:
        n = m.n_vocab
        tokens = [1 % n, 4 % n, 5 % n, 6 % n]
        m.logits(tokens)
        state = m.save_state()
        m.reset()
        m.eval(tokens[:2])
        other = m.save_state()
        m.load_state(state)
        assert m.tokens == tokens and m.n_past == 4, "load_state did not restore the saved tokens"
        for bad in _hostile_states(state, other, n, m.n_ctx):
            try:
                m.load_state(bad)
            except Exception as exc:  # noqa: BLE001
                if not in_contract(exc):
                    raise
                assert m.n_past == len(m.tokens), "a refused state left the cache and tokens apart"
            else:
                raise AssertionError(f"load_state accepted a hostile state of {len(bad)} bytes")
        if m.tokenizer is None:
            return
        for text in HOSTILE_TEXTS:
            ids = m.tokenize(text)
            m.detokenize(ids)
        m.reset()
        m.generate("ab", max_tokens=3, temperature=0.0)

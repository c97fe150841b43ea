"""SentencePiece ``tokenizer.model`` → GGUF ``tokenizer.ggml.*`` metadata.

The model file is a protobuf (``sentencepiece_model.proto``). Only a handful of fields matter here, so
this module reads the protobuf wire format directly instead of depending on ``protobuf``:

    ModelProto       1: pieces (repeated SentencePiece)   2: trainer_spec   3: normalizer_spec
    SentencePiece    1: piece (string)   2: score (float)   3: type (enum, default NORMAL)
    TrainerSpec      3: model_type   35: byte_fallback   40..43: unk/bos/eos/pad id   24: whitespace suffix
    NormalizerSpec   1: name   2: precompiled_charsmap   3: add_dummy_prefix   4: remove_extra_whitespaces
                     5: escape_whitespaces

Token types use llama.cpp's numbering, which equals SentencePiece's enum (NORMAL=1, UNKNOWN=2, CONTROL=3,
USER_DEFINED=4, UNUSED=5, BYTE=6).

What is written to the GGUF, and why (see ``gguf_token_types``): llama.cpp cuts USER_DEFINED tokens out
of the raw text *before* it escapes spaces, and it inserts the dummy-prefix space again in front of the
text after every such token. SentencePiece does neither. For Grok-1's user-defined runs of ``"\\n"``,
``"\\t"``, spaces and the digits ``0``-``9`` this would change the ids of nearly every line of code and
every number, so those pieces are written as NORMAL (llama.cpp's own ``convert_hf_to_gguf.py`` writes every
user-defined SentencePiece piece as NORMAL). That is exact, not an approximation, when:

- the piece contains a space: both tokenizers replace " " by "▁" before matching, so it never matches;
- the piece is a run of one character c, the user-defined runs of c are c×1 … c×K with one score, no
  NORMAL or UNUSED piece contains c and no other user-defined piece starts with c: then nothing can merge
  with c, BPE (highest score, leftmost first) grows runs left to right exactly like SentencePiece's
  longest match, and the remaining user-defined pieces (cut out first) are found at the same places.

Every other user-defined piece (Grok-1: ``<|separator|>``, ``<|mask|>``, ``<|controlN|>``) stays
USER_DEFINED, so both llama.cpp and ``edge.tokenizer`` keep it atomic. llama.cpp still differs from
SentencePiece around those (the dummy prefix after them): a genuine llama.cpp behaviour, pinned in
tests/test_tokenizer.py. So does llama.cpp on models with UNUSED pieces (it does not split them back as
SentencePiece does; Grok-1 has none). Models llama.cpp cannot tokenize at all (not BPE, a normalizer
that rewrites text, no byte fallback) are refused with a one-line ValueError.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import gguf

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
_MODEL_TYPE_BPE = 2
_MODEL_TYPE_NAMES = {1: "UNIGRAM", 2: "BPE", 3: "WORD", 4: "CHAR"}


@dataclass
class SentencePieceVocab:
    """The parts of a SentencePiece model that tokenization needs."""

    pieces: list[str]
    scores: list[float]
    types: list[int]  # llama.cpp token types (NORMAL=1 … BYTE=6)
    bos_id: int
    eos_id: int
    unk_id: int
    pad_id: int
    model_type: int = _MODEL_TYPE_BPE
    byte_fallback: bool = False
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True
    escape_whitespaces: bool = True
    treat_whitespace_as_suffix: bool = False
    normalizer_name: str = ""
    precompiled_charsmap: bytes = field(default=b"", repr=False)


class _WireError(Exception):
    """Malformed protobuf bytes (internal; turned into ValueError naming the file)."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise _WireError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _WireError("varint longer than 10 bytes")


def _fields(buf: bytes) -> list[tuple[int, int, int | bytes]]:
    """Split one protobuf message into (field number, wire type, value) triples.

    Varints come back as int, fixed32/fixed64 as their raw bytes, length-delimited fields as bytes.
    """
    out: list[tuple[int, int, int | bytes]] = []
    pos = 0
    n = len(buf)
    while pos < n:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _WireError("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos)
            out.append((number, wire, value))
        elif wire == 1 or wire == 5:
            width = 8 if wire == 1 else 4
            if pos + width > n:
                raise _WireError("truncated fixed-width field")
            out.append((number, wire, buf[pos : pos + width]))
            pos += width
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > n:
                raise _WireError(f"field {number}: length {length} runs past the end")
            out.append((number, wire, buf[pos : pos + length]))
            pos += length
        else:
            raise _WireError(f"unsupported wire type {wire} (field {number})")
    return out


def _as_int32(value: int | bytes) -> int:
    if not isinstance(value, int):
        raise _WireError("expected a varint")
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def _as_bool(value: int | bytes) -> bool:
    return bool(_as_int32(value))


def _as_float(value: int | bytes) -> float:
    if not isinstance(value, bytes) or len(value) != 4:
        raise _WireError("expected a 32-bit float")
    return struct.unpack("<f", value)[0]


def _as_str(value: int | bytes) -> str:
    if not isinstance(value, bytes):
        raise _WireError("expected a string")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _WireError(f"invalid UTF-8 in a string field ({e.reason})") from None


def _as_charsmap(value: int | bytes) -> bytes:
    if not isinstance(value, bytes):
        raise _WireError("precompiled_charsmap is not bytes")
    return value


# field number -> (key, decoder) of TrainerSpec and NormalizerSpec fields this reader uses
_TRAINER_FIELDS = {
    3: ("model_type", _as_int32),
    35: ("byte_fallback", _as_bool),
    40: ("unk", _as_int32),
    41: ("bos", _as_int32),
    42: ("eos", _as_int32),
    43: ("pad", _as_int32),
    24: ("suffix", _as_bool),
}
_NORMALIZER_FIELDS = {
    1: ("name", _as_str),
    2: ("charsmap", _as_charsmap),
    3: ("dummy", _as_bool),
    4: ("extra_ws", _as_bool),
    5: ("escape", _as_bool),
}


def _read_fields(
    fields: list[tuple[int, int, int | bytes]],
    out: dict[str, object],
    table: dict[int, tuple[str, Callable[[int | bytes], object]]],
) -> None:
    """Decode the fields of `table` present in a message into `out` (the last occurrence wins)."""
    for number, _wire, value in fields:
        if number in table:
            key, decode = table[number]
            out[key] = decode(value)


def _parse(data: bytes) -> SentencePieceVocab:
    pieces: list[str] = []
    scores: list[float] = []
    types: list[int] = []
    trainer: list[tuple[int, int, int | bytes]] = []
    normalizer: list[tuple[int, int, int | bytes]] | None = None
    for number, _wire, value in _fields(data):
        if number == 1:
            if not isinstance(value, bytes):
                raise _WireError("piece is not a message")
            piece, score, kind = None, 0.0, NORMAL
            for pn, _pw, pv in _fields(value):
                if pn == 1:
                    piece = _as_str(pv)
                elif pn == 2:
                    score = _as_float(pv)
                elif pn == 3:
                    kind = _as_int32(pv)
            if piece is None:
                raise _WireError(f"piece {len(pieces)} has no text")
            if kind not in (NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE):
                raise _WireError(f"piece {len(pieces)} has unknown type {kind}")
            pieces.append(piece)
            scores.append(score)
            types.append(kind)
        elif number == 2:
            if not isinstance(value, bytes):
                raise _WireError("trainer_spec is not a message")
            trainer = _fields(value)
        elif number == 3:
            if not isinstance(value, bytes):
                raise _WireError("normalizer_spec is not a message")
            normalizer = _fields(value)

    # proto2 defaults (sentencepiece_model.proto), then the fields present, by field number
    t: dict[str, object] = {
        "model_type": 1,
        "byte_fallback": False,
        "unk": 0,
        "bos": 1,
        "eos": 2,
        "pad": -1,
        "suffix": False,
    }
    _read_fields(trainer, t, _TRAINER_FIELDS)
    norm: dict[str, object] = {"name": "", "charsmap": b"", "dummy": True, "extra_ws": True, "escape": True}
    if normalizer is not None:
        _read_fields(normalizer, norm, _NORMALIZER_FIELDS)

    if not pieces:
        raise _WireError("no pieces")
    return SentencePieceVocab(
        pieces=pieces,
        scores=scores,
        types=types,
        bos_id=int(t["bos"]),
        eos_id=int(t["eos"]),
        unk_id=int(t["unk"]),
        pad_id=int(t["pad"]),
        model_type=int(t["model_type"]),
        byte_fallback=bool(t["byte_fallback"]),
        add_dummy_prefix=bool(norm["dummy"]),
        remove_extra_whitespaces=bool(norm["extra_ws"]),
        escape_whitespaces=bool(norm["escape"]),
        treat_whitespace_as_suffix=bool(t["suffix"]),
        normalizer_name=str(norm["name"]),
        precompiled_charsmap=bytes(norm["charsmap"]),  # type: ignore[arg-type]
    )


def _check(vocab: SentencePieceVocab) -> str | None:
    """Why this vocabulary cannot be a SentencePiece model at all (None when it is consistent)."""
    n = len(vocab.pieces)
    if vocab.unk_id < 0 or vocab.unk_id >= n or vocab.types[vocab.unk_id] != UNKNOWN:
        return f"unk_id {vocab.unk_id} is not an UNKNOWN piece"
    for name, tid in (("bos_id", vocab.bos_id), ("eos_id", vocab.eos_id), ("pad_id", vocab.pad_id)):
        if tid >= n or tid < -1:
            return f"{name} {tid} out of range for {n} pieces"
    seen: set[str] = set()
    for i, piece in enumerate(vocab.pieces):
        if piece in seen:
            return f"piece {i} {piece!r} is defined twice"
        seen.add(piece)
    return None


def read_sentencepiece(path: str | os.PathLike[str]) -> SentencePieceVocab:
    """Read a SentencePiece ``tokenizer.model``.

    Raises ValueError("<path>: not a SentencePiece model: <why>") for an unreadable or corrupt file.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ValueError(f"{os.fspath(path)}: not a SentencePiece model: {e.strerror or e}") from None
    try:
        vocab = _parse(data)
    except _WireError as e:
        raise ValueError(f"{os.fspath(path)}: not a SentencePiece model: {e}") from None
    problem = _check(vocab)
    if problem is not None:
        raise ValueError(f"{os.fspath(path)}: not a SentencePiece model: {problem}")
    return vocab


def _unsupported(vocab: SentencePieceVocab) -> str | None:
    """Why llama.cpp's "llama" (SPM) tokenizer could not reproduce this model (None when it can)."""
    if vocab.model_type != _MODEL_TYPE_BPE:
        return f"model type {_MODEL_TYPE_NAMES.get(vocab.model_type, vocab.model_type)} (only BPE)"
    if vocab.precompiled_charsmap:
        return f"normalizer {vocab.normalizer_name!r} rewrites text (only identity)"
    if vocab.remove_extra_whitespaces:
        return "remove_extra_whitespaces"
    if not vocab.escape_whitespaces:
        return "escape_whitespaces=false"
    if vocab.treat_whitespace_as_suffix:
        return "treat_whitespace_as_suffix"
    if not vocab.byte_fallback or vocab.types.count(BYTE) != 256:
        # llama.cpp's SPM tokenizer looks up <0xXX> pieces for every character outside the vocabulary
        # and aborts the process (std::out_of_range) when they are missing.
        return "no byte fallback (llama.cpp needs the 256 <0xXX> pieces)"
    return None


def gguf_token_types(vocab: SentencePieceVocab) -> list[int]:
    """Token types as written to the GGUF: the model's, except user-defined pieces that llama.cpp
    tokenizes exactly like SentencePiece only as NORMAL (rules in the module docstring)."""
    out = list(vocab.types)
    runs: dict[str, list[int]] = {}  # character → ids of the user-defined runs of it
    for i, (piece, kind) in enumerate(zip(vocab.pieces, vocab.types, strict=True)):
        if kind != USER_DEFINED or not piece:
            continue
        if " " in piece:
            out[i] = NORMAL
        elif len(set(piece)) == 1:
            runs.setdefault(piece[0], []).append(i)
    if not runs:
        return out
    blocked: set[str] = set()  # characters some other piece could join with (see the module docstring)
    for piece, kind in zip(vocab.pieces, vocab.types, strict=True):
        if kind in (NORMAL, UNUSED):
            blocked.update(runs.keys() & set(piece))
        elif kind == USER_DEFINED and piece and piece[0] in runs and len(set(piece)) > 1:
            blocked.add(piece[0])
    for c, ids in runs.items():
        lengths = sorted(len(vocab.pieces[i]) for i in ids)
        if (
            c in blocked
            or lengths != list(range(1, len(ids) + 1))
            or len({vocab.scores[i] for i in ids}) != 1
        ):
            continue
        for i in ids:
            out[i] = NORMAL
    return out


def add_tokenizer(writer: gguf.GGUFWriter, path: str | os.PathLike[str]) -> None:
    """Write ``tokenizer.ggml.*`` for the SentencePiece model at ``path`` into ``writer``.

    add_bos_token/add_eos_token are false: Grok-1's official encoding adds neither.
    """
    vocab = read_sentencepiece(path)
    problem = _unsupported(vocab)
    if problem is not None:
        raise ValueError(f"{os.fspath(path)}: unsupported SentencePiece model: {problem}")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(vocab.pieces)
    writer.add_token_scores(vocab.scores)
    writer.add_token_types(gguf_token_types(vocab))
    writer.add_bos_token_id(vocab.bos_id)
    writer.add_eos_token_id(vocab.eos_id)
    writer.add_unk_token_id(vocab.unk_id)
    if vocab.pad_id >= 0:
        writer.add_pad_token_id(vocab.pad_id)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(vocab.add_dummy_prefix)
    writer.add_remove_extra_whitespaces(vocab.remove_extra_whitespaces)

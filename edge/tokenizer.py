"""SentencePiece-BPE tokenizer built from a GGUF vocabulary (``tokenizer.ggml.*``, model "llama").

``encode`` reproduces SentencePiece's BPE ``encode`` exactly (identity normalizer):

1. Normalize: empty text stays empty; otherwise prepend "▁" (``add_space_prefix``) and replace every
   " " with "▁".
2. USER_DEFINED pieces are atomic: scanning left to right, the longest user-defined piece starting at a
   position is cut out and never merged (SentencePiece's prefix matcher).
3. Everything else is BPE over characters: repeatedly merge the adjacent pair whose concatenation is a
   piece (NORMAL, USER_DEFINED or UNUSED) with the highest score; ties go to the leftmost pair. UNUSED
   pieces are split back into the two pieces they were merged from.
4. A resulting piece that is not in the vocabulary becomes one ``<0xXX>`` BYTE piece per UTF-8 byte
   (byte fallback), or the unknown id when the vocabulary has no byte pieces.

Speed: merges can only join characters that are adjacent somewhere inside a vocabulary piece, so the
text is first cut wherever two neighbouring characters never touch inside any piece. The chunks (about
one word each) are merged independently with a heap and a linked list, O(n log n), and their ids are
cached, so repeated words cost one dictionary lookup.

``decode`` follows SentencePiece's ``decode``: CONTROL pieces vanish, "▁" becomes " ", the first
non-control piece loses one leading "▁" when ``add_space_prefix``, runs of BYTE pieces are read as UTF-8
with one U+FFFD per byte that does not start a valid character. The UNKNOWN piece decodes as its own
text (SentencePiece shows ``trainer_spec.unk_surface``, for Grok-1 the same "[UNK]"; GGUF has no key
for it). ``StreamDecoder`` gives the same text
piece by piece and holds back bytes until they form a whole character.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

SPACE = "\u2581"  # "▁", SentencePiece's escaped space
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
_MERGEABLE = (NORMAL, USER_DEFINED, UNUSED)  # SentencePiece's pieces_ map; the rest are "reserved"
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_CACHE_LIMIT = 1 << 16  # chunk → ids entries kept before the cache is cleared


class Tokenizer:
    """Encoder/decoder over a SentencePiece-BPE vocabulary (pieces, scores, llama.cpp token types)."""

    def __init__(
        self,
        pieces: Sequence[str],
        scores: Sequence[float],
        types: Sequence[int],
        bos_id: int,
        eos_id: int,
        unk_id: int,
        pad_id: int = -1,
        add_space_prefix: bool = True,
    ) -> None:
        n = len(pieces)
        if n == 0:
            raise ValueError("tokenizer vocabulary is empty")
        if len(scores) != n or len(types) != n:
            raise ValueError(
                f"tokenizer vocabulary: {n} pieces but {len(scores)} scores and {len(types)} types"
            )
        for name, tid in (("bos_id", bos_id), ("eos_id", eos_id), ("unk_id", unk_id)):
            if not 0 <= tid < n:
                raise ValueError(f"tokenizer vocabulary: {name} {tid} out of range for {n} pieces")
        self._pieces: list[str] = [str(p) for p in pieces]
        self._types: list[int] = [int(t) for t in types]
        self.bos_id = int(bos_id)
        self.eos_id = int(eos_id)
        self.unk_id = int(unk_id)
        self.pad_id = int(pad_id)
        self.add_space_prefix = bool(add_space_prefix)

        self._ids: dict[str, int] = {}  # mergeable pieces (first definition wins)
        self._reserved: dict[str, int] = {}  # CONTROL / UNKNOWN / BYTE pieces
        self._score: dict[str, float] = {}
        self._byte_of: dict[int, int] = {}  # id of a BYTE piece → its byte
        byte_ids: list[int | None] = [None] * 256
        user_defined: list[str] = []
        bigrams: set[str] = set()
        for i, (piece, score, kind) in enumerate(zip(self._pieces, scores, self._types, strict=True)):
            if kind in _MERGEABLE:
                if piece in self._ids:
                    continue
                self._ids[piece] = i
                self._score[piece] = float(score)
                if kind == USER_DEFINED and piece:
                    user_defined.append(piece)
                for j in range(len(piece) - 1):
                    bigrams.add(piece[j : j + 2])
            else:
                self._reserved.setdefault(piece, i)
                if kind == BYTE:
                    m = _BYTE_PIECE.fullmatch(piece)
                    if m is None:
                        raise ValueError(f"tokenizer vocabulary: BYTE piece {i} {piece!r} is not <0xXX>")
                    b = int(m.group(1), 16)
                    self._byte_of[i] = b
                    if byte_ids[b] is None:
                        byte_ids[b] = i
        self._byte_ids: list[int] | None = None
        if all(b is not None for b in byte_ids):
            self._byte_ids = [int(b) for b in byte_ids]  # type: ignore[arg-type]
        self._bigrams = bigrams
        self._unused = frozenset(p for p, i in self._ids.items() if self._types[i] == UNUSED)
        # Longest first: re's alternation takes the first alternative that matches at the leftmost position.
        self._user_defined = (
            re.compile("|".join(re.escape(p) for p in sorted(user_defined, key=len, reverse=True)))
            if user_defined
            else None
        )
        self._cache: dict[str, tuple[int, ...]] = {}

    # -- construction ----------------------------------------------------------------------------------

    @classmethod
    def from_gguf(cls, gguf_file: Any) -> Tokenizer:
        """From an ``edge.gguf.GGUFFile`` (or anything with a ``.metadata`` mapping, a plain mapping of
        GGUF keys, or a ``gguf.GGUFReader``). Every ``tokenizer.ggml.*`` key is type- and range-checked
        here, once: ValueError naming the file and the key when one is missing or wrong."""
        name = str(getattr(gguf_file, "path", "GGUF metadata"))
        metadata = _metadata_of(gguf_file)

        def fail(key: str, problem: str) -> ValueError:
            return ValueError(f"{name}: {key} {problem}")

        key = "tokenizer.ggml.model"
        if key not in metadata:
            raise ValueError(f"{name}: missing tokenizer key {key!r}")
        model = metadata[key]
        if not isinstance(model, str) or model != "llama":
            shown = repr(model[:40]) if isinstance(model, str) else _kind(model)
            raise fail(key, f"is {shown}; only 'llama' (SentencePiece) is supported")
        key = "tokenizer.ggml.tokens"
        if key not in metadata:
            raise ValueError(f"{name}: missing tokenizer key {key!r}")
        pieces = metadata[key]
        if not isinstance(pieces, (list, tuple)) or not all(type(p) is str for p in pieces):
            raise fail(key, "is not an array of strings")
        n = len(pieces)
        if n == 0:
            raise fail(key, "is empty")
        scores = _number_array(metadata, "tokenizer.ggml.scores", n, fail, integer=False)
        types = _number_array(metadata, "tokenizer.ggml.token_type", n, fail, integer=True)
        if scores is None:
            scores = [0.0] * n
        if types is None:
            types = [NORMAL] * n
        elif any(not 0 <= t <= BYTE for t in types):
            bad = next(i for i, t in enumerate(types) if not 0 <= t <= BYTE)
            raise fail("tokenizer.ggml.token_type", f"[{bad}] is {types[bad]}, not a token type 0..{BYTE}")
        ids = {}
        for role, key, default, low in (
            ("bos_id", "tokenizer.ggml.bos_token_id", 1, 0),
            ("eos_id", "tokenizer.ggml.eos_token_id", 2, 0),
            ("unk_id", "tokenizer.ggml.unknown_token_id", 0, 0),
            ("pad_id", "tokenizer.ggml.padding_token_id", -1, -1),
        ):
            value = metadata.get(key, default)
            if not _is_int(value):
                raise fail(key, f"is {_kind(value)}, not an integer token id")
            value = int(value)
            if not low <= value < n:
                raise fail(key, f"is {value}, outside 0..{n - 1} (the vocabulary has {n} pieces)")
            ids[role] = value
        key = "tokenizer.ggml.add_space_prefix"
        add_space_prefix = metadata.get(key, True)
        if not isinstance(add_space_prefix, (bool, np.bool_)):
            raise fail(key, f"is {_kind(add_space_prefix)}, not a bool")
        try:
            return cls(pieces, scores, types, add_space_prefix=bool(add_space_prefix), **ids)
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None

    # -- vocabulary ------------------------------------------------------------------------------------

    @property
    def n_vocab(self) -> int:
        return len(self._pieces)

    def piece(self, token_id: int) -> str:
        """The vocabulary piece as stored ("▁the", "<0x0A>", "[BOS]")."""
        return self._pieces[self._check_id(token_id)]

    def token_type(self, token_id: int) -> int:
        return self._types[self._check_id(token_id)]

    def token_to_piece(self, token_id: int) -> bytes:
        """The bytes this token contributes to text in the middle of a stream: "▁" as a space, a BYTE
        piece as its byte, CONTROL pieces as nothing."""
        kind = self._types[self._check_id(token_id)]
        if kind == CONTROL:
            return b""
        if kind == BYTE:
            return bytes([self._byte_of[token_id]])
        return self._pieces[token_id].replace(SPACE, " ").encode("utf-8")

    def _check_id(self, token_id: int) -> int:
        if not 0 <= token_id < len(self._pieces):
            raise ValueError(f"token id {token_id} out of range for a vocabulary of {len(self._pieces)}")
        return token_id

    # -- encoding --------------------------------------------------------------------------------------

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        """Token ids of ``text``, identical to SentencePiece's ``encode(text)`` for the same model."""
        out: list[int] = [self.bos_id] if add_bos else []
        if not text:
            return out
        normalized = text.replace(" ", SPACE)
        if self.add_space_prefix:
            normalized = SPACE + normalized
        if self._user_defined is None:
            self._encode_segment(normalized, out)
        else:
            start = 0
            for m in self._user_defined.finditer(normalized):
                if m.start() > start:
                    self._encode_segment(normalized[start : m.start()], out)
                out.append(self._ids[m.group()])
                start = m.end()
            if start < len(normalized):
                self._encode_segment(normalized[start:], out)
        if self._byte_ids is None and self.unk_id in out:
            # Without byte fallback SentencePiece reports a run of unknown pieces as one unknown id.
            out = [t for i, t in enumerate(out) if t != self.unk_id or i == 0 or out[i - 1] != self.unk_id]
        return out

    def _encode_segment(self, segment: str, out: list[int]) -> None:
        """BPE of text without user-defined pieces, chunk by chunk (chunks never merge with each other)."""
        bigrams = self._bigrams
        cache = self._cache
        start = 0
        n = len(segment)
        for i in range(1, n + 1):
            if i < n and segment[i - 1 : i + 1] in bigrams:
                continue
            chunk = segment[start:i]
            start = i
            ids = cache.get(chunk)
            if ids is None:
                ids = self._chunk_ids(chunk)
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                cache[chunk] = ids
            out.extend(ids)

    def _chunk_ids(self, chunk: str) -> tuple[int, ...]:
        ids: list[int] = []
        for piece in self._bpe(chunk):
            tid = self._reserved.get(piece)
            if tid is None:
                tid = self._ids.get(piece, self.unk_id)
            if tid == self.unk_id and self._byte_ids is not None:
                ids.extend(self._byte_ids[b] for b in piece.encode("utf-8"))
            else:
                ids.append(tid)
        return tuple(ids)

    def _bpe(self, chunk: str) -> list[str]:
        """SentencePiece's BPE merge loop (bpe_model.cc) on one chunk of characters."""
        n = len(chunk)
        if n == 1:
            return [chunk]
        score = self._score
        sym = list(chunk)
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        prv = list(range(-1, n - 1))
        heap: list[tuple[float, int, int, str]] = []
        rev_merge: dict[str, tuple[str, str]] = {}
        unused = self._unused
        heappush = heapq.heappush

        def push(left: int, right: int) -> None:
            merged = sym[left] + sym[right]
            s = score.get(merged)
            if s is None:
                return
            heappush(heap, (-s, left, right, merged))
            if unused and merged in unused:
                rev_merge[merged] = (sym[left], sym[right])

        for i in range(n - 1):
            merged = chunk[i : i + 2]
            s = score.get(merged)
            if s is not None:
                heap.append((-s, i, i + 1, merged))
                if unused and merged in unused:
                    rev_merge[merged] = (chunk[i], chunk[i + 1])
        heapq.heapify(heap)
        while heap:
            _, left, right, merged = heapq.heappop(heap)
            a, b = sym[left], sym[right]
            # Stale entry: one side was merged away or grew since the pair was pushed.
            if not a or not b or len(a) + len(b) != len(merged):
                continue
            sym[left] = merged
            sym[right] = ""
            after = nxt[right]
            nxt[left] = after
            if after != -1:
                prv[after] = left
            if prv[left] != -1:
                push(prv[left], left)
            if after != -1:
                push(left, after)

        out: list[str] = []
        i = 0
        while i != -1:
            if unused:
                self._resegment(sym[i], rev_merge, out)
            else:
                out.append(sym[i])
            i = nxt[i]
        return out

    def _resegment(self, piece: str, rev_merge: dict[str, tuple[str, str]], out: list[str]) -> None:
        """Split an UNUSED piece back into the pieces it was merged from, left to right (a stack, not
        recursion: the depth of the split tree is up to the vocabulary)."""
        stack = [piece]
        unused = self._unused
        while stack:
            top = stack.pop()
            split = rev_merge.get(top) if top in unused else None
            if split is None:
                out.append(top)
            else:
                stack.append(split[1])
                stack.append(split[0])

    # -- decoding --------------------------------------------------------------------------------------

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``, identical to SentencePiece's ``decode``."""
        stream = self.stream_decoder()
        parts = [stream.feed(int(t)) for t in ids]
        parts.append(stream.flush())
        return "".join(parts)

    def stream_decoder(self, continuation: bool = False) -> StreamDecoder:
        """A decoder fed one id at a time. ``continuation=True`` keeps the leading space of the first
        piece (for tokens that continue text already shown, e.g. generation after a prompt)."""
        return StreamDecoder(self, strip_leading_space=self.add_space_prefix and not continuation)


class StreamDecoder:
    """Incremental ``decode``: ``feed(id)`` returns the text that is final after this token; bytes of a
    character split across BYTE pieces are held until the character is complete (or proven invalid).
    ``"".join(feed(t) for t in ids) + flush() == tokenizer.decode(ids)``."""

    def __init__(self, tokenizer: Tokenizer, strip_leading_space: bool) -> None:
        self._tok = tokenizer
        self._at_start = strip_leading_space
        self._pending = bytearray()  # bytes of an incomplete UTF-8 character

    def feed(self, token_id: int) -> str:
        tok = self._tok
        kind = tok._types[tok._check_id(token_id)]
        if kind == CONTROL:
            return ""
        # SentencePiece strips one "▁" from the first non-control piece, and only from a text piece.
        strip = self._at_start and kind not in (BYTE, UNKNOWN)
        self._at_start = False
        if kind == BYTE:
            self._pending.append(tok._byte_of[token_id])
            return _take_utf8(self._pending, final=False)
        text = _take_utf8(self._pending, final=True)
        piece = tok._pieces[token_id]
        if strip and piece.startswith(SPACE):
            piece = piece[1:]
        return text + piece.replace(SPACE, " ")

    def flush(self) -> str:
        """Text still held (bytes of an unfinished character, each shown as U+FFFD like decode does)."""
        return _take_utf8(self._pending, final=True)


def _utf8_length(lead: int) -> int:
    if lead < 0x80:
        return 1
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 0  # continuation byte or a byte that never starts a character


def _second_byte_range(lead: int) -> tuple[int, int]:
    """Allowed second byte after a lead byte (RFC 3629: no overlongs, no surrogates, max U+10FFFF)."""
    return {0xE0: (0xA0, 0xBF), 0xED: (0x80, 0x9F), 0xF0: (0x90, 0xBF), 0xF4: (0x80, 0x8F)}.get(
        lead, (0x80, 0xBF)
    )


def _could_complete(buf: bytearray) -> bool:
    """True when ``buf`` (shorter than its lead byte says) is a prefix of some valid UTF-8 character."""
    if len(buf) >= 2:
        low, high = _second_byte_range(buf[0])
        if not low <= buf[1] <= high:
            return False
    return all(0x80 <= b <= 0xBF for b in buf[2:])


def _take_utf8(buf: bytearray, final: bool) -> str:
    """Decode and remove the complete characters at the front of ``buf``; a byte that cannot start a
    valid character becomes U+FFFD (one per byte, SentencePiece's rule). Unless ``final``, an unfinished
    character at the end stays in ``buf``."""
    if not buf:
        return ""
    out: list[str] = []
    i = 0
    n = len(buf)
    while i < n:
        length = _utf8_length(buf[i])
        if length == 0:
            out.append("\ufffd")
            i += 1
            continue
        if i + length > n:
            if not final and _could_complete(buf[i:]):
                break
            out.append("\ufffd")
            i += 1
            continue
        try:
            out.append(bytes(buf[i : i + length]).decode("utf-8"))
            i += length
        except UnicodeDecodeError:
            out.append("\ufffd")
            i += 1
    del buf[:i]
    return "".join(out)


def _kind(value: Any) -> str:
    """What a metadata value is, for a message (never the whole value: it may be a huge array)."""
    if isinstance(value, (bool, np.bool_)):
        return f"the bool {bool(value)}"
    if isinstance(value, (int, np.integer)):
        return f"the integer {int(value)}"
    if isinstance(value, (float, np.floating)):
        return f"the float {float(value)!r}"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, np.ndarray):
        return f"an array of {value.size} values"
    if isinstance(value, (list, tuple)):
        return f"an array of {len(value)} values"
    return f"a {type(value).__name__}"


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _number_array(
    metadata: Mapping[str, Any], key: str, n: int, fail: Any, *, integer: bool
) -> list[Any] | None:
    """The array at ``key`` as a list of n ints (``integer``) or n finite floats; None when absent."""
    if key not in metadata:
        return None
    value = metadata[key]
    if isinstance(value, np.ndarray):
        arr = value
    elif isinstance(value, (list, tuple)) and all(
        type(v) is int or (not integer and type(v) is float) for v in value
    ):
        arr = np.array(value, dtype=np.int64 if integer else np.float64)
    else:
        raise fail(key, f"is {_kind(value)}, not an array of {'integers' if integer else 'numbers'}")
    allowed = "iu" if integer else "iuf"
    if arr.ndim != 1 or arr.dtype.kind not in allowed:
        what = "integers" if integer else "numbers"
        raise fail(key, f"is an array of {arr.dtype} (shape {arr.shape}), not of {what}")
    if len(arr) != n:
        raise fail(key, f"has {len(arr)} values for {n} tokens")
    if integer:
        return [int(v) for v in arr.tolist()]
    floats = arr.astype(np.float64)
    if not np.isfinite(floats).all():
        bad = int(np.flatnonzero(~np.isfinite(floats))[0])
        raise fail(key, f"[{bad}] is {float(floats[bad])!r}, not a finite score")
    return floats.tolist()


def _metadata_of(gguf_file: Any) -> Mapping[str, Any]:
    metadata = getattr(gguf_file, "metadata", None)
    if isinstance(metadata, Mapping):
        return metadata
    if isinstance(gguf_file, Mapping):
        return gguf_file
    fields = getattr(gguf_file, "fields", None)  # gguf-py's GGUFReader
    if isinstance(fields, Mapping):
        return {key: field.contents() for key, field in fields.items() if key.startswith("tokenizer.")}
    raise TypeError(
        f"Tokenizer.from_gguf: expected a GGUFFile, a metadata mapping or a GGUFReader, got {gguf_file!r}"
    )

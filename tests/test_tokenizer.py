"""Tokenizer: the converter's tokenizer.ggml.* metadata and edge.tokenizer vs SentencePiece and llama.cpp.

Witnesses: sentencepiece's own encoder/decoder on the real Grok-1 tokenizer.model, and llama.cpp
(llama-cpp-python, vocab_only) on a GGUF written with edge.convert.tokenizer.add_tokenizer.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import gguf
import numpy as np
import pytest
import sentencepiece as spm
from edge.convert.tokenizer import (
    BYTE,
    CONTROL,
    NORMAL,
    UNKNOWN,
    USER_DEFINED,
    add_tokenizer,
    gguf_token_types,
    read_sentencepiece,
)

from edge.gguf import GGUFFile
from edge.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER_MODEL = Path(
    os.environ.get("GROK1_TOKENIZER", ROOT.parent / "shared" / "grok-1" / "tokenizer.model")
).resolve()

pytestmark = pytest.mark.skipif(
    not TOKENIZER_MODEL.is_file(), reason=f"the Grok-1 tokenizer is absent: {TOKENIZER_MODEL}"
)

RUN_PY_PROMPT = "The answer to life the universe and everything is of course"

STRESS_TEXT = (
    "Emoji: 😀 🦜 🫠 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🇯🇵 — ZWJ and skin tones.\n"
    "CJK: 日本語のテキスト、中文文本，한국어 텍스트. 龘 𠜎 (astral CJK).\n"
    "RTL: العربية نص عربي — עברית טקסט.\n"
    "Combining: e\u0301 a\u0308 o\u0302\u0323 Z\u0351\u0354\u0355 — precomposed é ä ộ.\n"
    "Controls: " + "".join(chr(c) for c in range(0x20)) + " DEL\x7f NBSP\u00a0 ZWSP\u200b BOM\ufeff.\n"
    "Line endings: a\r\nb\rc\n\n\n\nd\n\n\n\n\n\n\n\n\n\n\n\n\n\n\ne\r\n\r\n"
    "Tabs:\t\t\tx\t\t\t\t\t\t\t\t\t\ty\n"
    "Spaces: a" + " " * 40 + "b" + " " * 3 + "c " + "\n"
    "Absent from the vocabulary (byte fallback): 𓀀 ℵ \U0010fffd \U000e0041 \ufffe \u2581 ▁▁ x\u2581y.\n"
    "Digits: 3.14159265358979 1,000,000 0x1F 2026-11-23 ١٢٣ ４５.\n"
    "    leading and trailing spaces    "
)


def _corpus() -> dict[str, str]:
    texts = {
        "run.py prompt": RUN_PY_PROMPT,
        "stress": STRESS_TEXT,
        "empty": "",
        "one space": " ",
        "spaces only": "     ",
        "newlines only": "\n\n\n\n\n\n\n\n\n\n\n\n",
        "leading/trailing spaces": "  hello world  ",
        "underscore block": "\u2581",
        "digits": "1a 22b 0123456789",
    }
    for rel in (
        "README.md",
        "pyproject.toml",
        "edge/cli.py",
        "edge/_native.py",
        "edge/tokenizer.py",
        "convert/tokenizer.py",
        "native/include/edge.h",
        "native/src/core/types.c",
        "native/src/core/cpu.c",
        "CMakeLists.txt",
    ):
        path = ROOT / rel
        assert path.is_file(), f"corpus file missing: {path}"
        texts[rel] = path.read_text(encoding="utf-8")
    return texts


CORPUS = _corpus()


def _random_texts(n: int, seed: int) -> list[str]:
    """Random strings over an alphabet that stresses merges: spaces, newlines, tabs, digits, letters,
    punctuation, CJK, emoji (byte fallback), combining marks, controls."""
    alphabet = list("  \n\t\r0123456789abcdeABCxyz.,;:-_'\"()[]{}<>|/\\=+*#") + list(
        "日本語中文한éü\u0301\u0308😀🦜ℵ𓀀\x00\x01\x1b\x7f\u00a0\u2581"
    )
    rng = random.Random(seed)
    words = ["the", " the", "hello", "world", "▁", "\n\n", "    ", "def ", "return", "1234", "ing", "tion"]
    out = []
    for _ in range(n):
        parts = [
            rng.choice(words) if rng.random() < 0.3 else rng.choice(alphabet)
            for _ in range(rng.randrange(1, 40))
        ]
        out.append("".join(parts))
    return out


RANDOM_TEXTS = _random_texts(300, seed=1234)


@pytest.fixture(scope="module")
def sp() -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_file=str(TOKENIZER_MODEL))


def _write_vocab_gguf(path: Path, types_override: list[int] | None = None) -> Path:
    """A vocab-only GGUF: general.architecture grok, a few grok hparams llama.cpp reads, the tokenizer."""
    writer = gguf.GGUFWriter(str(path), "grok")
    writer.add_context_length(8192)
    writer.add_embedding_length(64)
    writer.add_block_count(1)
    writer.add_feed_forward_length(128)
    writer.add_head_count(2)
    writer.add_head_count_kv(1)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_expert_count(8)
    writer.add_expert_used_count(2)
    writer.add_vocab_size(131072)
    if types_override is None:
        add_tokenizer(writer, TOKENIZER_MODEL)
    else:  # the same metadata with other token types (to show why add_tokenizer chooses its types)
        vocab = read_sentencepiece(TOKENIZER_MODEL)
        writer.add_tokenizer_model("llama")
        writer.add_token_list(vocab.pieces)
        writer.add_token_scores(vocab.scores)
        writer.add_token_types(types_override)
        writer.add_bos_token_id(vocab.bos_id)
        writer.add_eos_token_id(vocab.eos_id)
        writer.add_unk_token_id(vocab.unk_id)
        writer.add_pad_token_id(vocab.pad_id)
        writer.add_add_bos_token(False)
        writer.add_add_eos_token(False)
        writer.add_add_space_prefix(True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def vocab_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_vocab_gguf(tmp_path_factory.mktemp("tokenizer") / "grok-vocab.gguf")


@pytest.fixture(scope="module")
def tok(vocab_gguf: Path) -> Tokenizer:
    with GGUFFile(vocab_gguf) as f:
        return Tokenizer.from_gguf(f)


def _llama(path: Path):  # -> llama_cpp.Llama (imported lazily)
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)


@pytest.fixture(scope="module")
def llama(vocab_gguf: Path):
    return _llama(vocab_gguf)


def _llama_ids(llama, text: str) -> list[int]:
    return list(llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))


# -- converter: tokenizer.model → metadata ---------------------------------------------------------------


def test_read_sentencepiece_matches_the_protobuf(sp: spm.SentencePieceProcessor) -> None:
    pb2 = pytest.importorskip("sentencepiece.sentencepiece_model_pb2")
    proto = pb2.ModelProto()
    proto.ParseFromString(TOKENIZER_MODEL.read_bytes())
    vocab = read_sentencepiece(TOKENIZER_MODEL)
    assert vocab.pieces == [p.piece for p in proto.pieces]
    assert vocab.scores == [p.score for p in proto.pieces]  # both are the stored float32 values
    assert vocab.types == [p.type for p in proto.pieces]  # SentencePiece's enum == llama.cpp's numbering
    assert len(vocab.pieces) == sp.get_piece_size() == 131072
    assert (vocab.bos_id, vocab.eos_id, vocab.unk_id, vocab.pad_id) == (
        sp.bos_id(),
        sp.eos_id(),
        sp.unk_id(),
        0,
    )
    assert vocab.byte_fallback and vocab.add_dummy_prefix
    assert not vocab.remove_extra_whitespaces and not vocab.precompiled_charsmap
    assert vocab.types.count(BYTE) == 256
    assert [vocab.types[i] for i in (0, 1, 2, 3)] == [CONTROL, CONTROL, CONTROL, UNKNOWN]


def test_gguf_metadata(vocab_gguf: Path, sp: spm.SentencePieceProcessor) -> None:
    with GGUFFile(vocab_gguf) as f:
        md = f.metadata
    n = sp.get_piece_size()
    assert md["general.architecture"] == "grok"
    assert md["tokenizer.ggml.model"] == "llama"
    assert md["tokenizer.ggml.tokens"] == [sp.id_to_piece(i) for i in range(n)]
    np.testing.assert_array_equal(
        md["tokenizer.ggml.scores"], np.array([sp.get_score(i) for i in range(n)], np.float32)
    )
    assert md["tokenizer.ggml.bos_token_id"] == 1
    assert md["tokenizer.ggml.eos_token_id"] == 2
    assert md["tokenizer.ggml.unknown_token_id"] == 3
    assert md["tokenizer.ggml.padding_token_id"] == 0
    assert md["tokenizer.ggml.add_bos_token"] is False
    assert md["tokenizer.ggml.add_eos_token"] is False
    assert md["tokenizer.ggml.add_space_prefix"] is True
    types = np.asarray(md["tokenizer.ggml.token_type"])
    assert types.shape == (n,)
    for i in range(n):
        if sp.is_control(i):
            assert types[i] == CONTROL, i
        elif sp.is_unknown(i):
            assert types[i] == UNKNOWN, i
        elif sp.is_byte(i):
            assert types[i] == BYTE, i
    piece = {sp.id_to_piece(i): i for i in range(70)}
    # Runs of newlines/tabs/spaces and the digits are written NORMAL (see convert/tokenizer.py), the
    # other user-defined pieces USER_DEFINED.
    for text in ("\n", "\n" * 10, "\t" * 8, "  ", " " * 16, "0", "9"):
        assert types[piece[text]] == NORMAL, repr(text)
    for text in ("<|separator|>", "<|mask|>", "<|control1|>", "<|control20|>"):
        assert types[piece[text]] == USER_DEFINED, text
    assert int((types == USER_DEFINED).sum()) == 22


def test_corrupt_tokenizer_files_give_one_line_errors(tmp_path: Path) -> None:
    real = TOKENIZER_MODEL.read_bytes()
    cases = {
        "empty.model": b"",
        "truncated.model": real[: len(real) // 2],
        "garbage.model": b"\xff" * 64,
        "text.model": b"this is not a protobuf at all\n",
        "bad-wire-type.model": b"\x0f\x00\x00",
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        for call in (
            read_sentencepiece,
            lambda p: add_tokenizer(gguf.GGUFWriter(str(tmp_path / "x.gguf"), "grok"), p),
        ):
            with pytest.raises(ValueError) as err:
                call(path)
            message = str(err.value)
            assert message.startswith(f"{path}: not a SentencePiece model: "), message
            assert "\n" not in message, message
    missing = tmp_path / "missing.model"
    with pytest.raises(ValueError, match=r"missing\.model: not a SentencePiece model: No such file") as err:
        read_sentencepiece(missing)
    assert "\n" not in str(err.value)


# -- encoding: ours and llama.cpp's must equal SentencePiece's --------------------------------------------


@pytest.mark.parametrize("name", list(CORPUS))
def test_encode_equals_sentencepiece(name: str, tok: Tokenizer, sp: spm.SentencePieceProcessor) -> None:
    text = CORPUS[name]
    assert tok.encode(text) == sp.encode(text)
    assert tok.encode(text, add_bos=True) == [1, *sp.encode(text)]


def test_encode_random_texts_equals_sentencepiece(tok: Tokenizer, sp: spm.SentencePieceProcessor) -> None:
    for text in RANDOM_TEXTS:
        assert tok.encode(text) == sp.encode(text), repr(text)


def test_stress_text_exercises_byte_fallback_and_user_pieces(
    tok: Tokenizer, sp: spm.SentencePieceProcessor
) -> None:
    ids = sp.encode(STRESS_TEXT)
    pieces = {sp.id_to_piece(i) for i in ids}
    assert {"<0xF0>", "<0x00>", "<0x1F>"} <= pieces  # byte fallback for emoji and controls
    assert {"\n" * 10, "\t" * 8, "▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁"} <= pieces  # user-defined runs and whitespace pieces
    assert tok.encode(STRESS_TEXT) == ids


CONTROL_LIKE = re.compile(r"<\|(?:separator|mask|control\d+)\|>")  # Grok-1's USER_DEFINED pieces in the GGUF


def _llama_expected(text: str, sp: spm.SentencePieceProcessor) -> list[int]:
    """What llama.cpp gives: SentencePiece's ids, except that llama.cpp cuts the USER_DEFINED <|…|> pieces
    out first and encodes each text fragment separately (see test_llama_cpp_differs_around_…)."""
    out: list[int] = []
    start = 0
    for m in CONTROL_LIKE.finditer(text):
        out += sp.encode(text[start : m.start()]) + [sp.piece_to_id(m.group())]
        start = m.end()
    return out + sp.encode(text[start:])


@pytest.mark.parametrize("name", list(CORPUS))
def test_llama_cpp_encode_equals_sentencepiece(name: str, llama, sp: spm.SentencePieceProcessor) -> None:
    text = CORPUS[name]
    ids = _llama_ids(llama, text)
    if CONTROL_LIKE.search(text) is None:
        assert ids == sp.encode(text)
    else:  # this file spells out "<|separator|>" etc.: the pinned llama.cpp difference applies
        assert ids == _llama_expected(text, sp)
        assert ids != sp.encode(text)


def test_llama_cpp_random_texts_equal_sentencepiece(llama, sp: spm.SentencePieceProcessor) -> None:
    for text in RANDOM_TEXTS:
        assert _llama_ids(llama, text) == sp.encode(text), repr(text)


def test_llama_cpp_differs_around_literal_control_like_pieces(llama, tok: Tokenizer, sp) -> None:
    """A genuine llama.cpp behaviour no metadata changes (pinned, not hidden): llama.cpp cuts USER_DEFINED
    pieces out of the raw text first and tokenizes each remaining fragment as its own text, with its own
    dummy-prefix space; SentencePiece keeps one text. So around a literal "<|separator|>" (or any
    <|…|> piece) the ids differ: llama.cpp == encode(before) + [piece] + encode(after).
    Writing these pieces as NORMAL instead does not help: llama.cpp then splits them into several pieces."""
    sep = 47
    for before, after in (("a", "b"), ("", "x"), ("Hello ", " world"), ("", "")):
        text = before + "<|separator|>" + after
        expected_llama = sp.encode(before) + [sep] + sp.encode(after)
        assert _llama_ids(llama, text) == expected_llama, repr(text)
        assert tok.encode(text) == sp.encode(text)  # ours follows SentencePiece
    assert sp.encode("a<|separator|>b") == [327, sep, 130110]  # "▁a" "<|separator|>" "b"
    assert _llama_ids(llama, "a<|separator|>b") == [327, sep, 348]  # "▁a" "<|separator|>" "▁b"
    assert sp.encode("<|separator|>") == [130089, sep]  # "▁" "<|separator|>"
    assert _llama_ids(llama, "<|separator|>") == [sep]


def test_llama_cpp_needs_whitespace_and_digit_pieces_normal(
    tmp_path: Path, sp: spm.SentencePieceProcessor
) -> None:
    """Why add_tokenizer writes the user-defined newline/tab/space runs and digits as NORMAL: written as
    USER_DEFINED (what the .model says), llama.cpp re-adds the dummy-prefix space after each of them and
    splits "  " out of raw text, so ordinary code and numbers tokenize differently from SentencePiece."""
    faithful = read_sentencepiece(TOKENIZER_MODEL).types
    assert faithful != gguf_token_types(read_sentencepiece(TOKENIZER_MODEL))
    llama = _llama(_write_vocab_gguf(tmp_path / "faithful.gguf", types_override=faithful))
    assert _llama_ids(llama, "a\nb") != sp.encode("a\nb")
    assert _llama_ids(llama, "1a") != sp.encode("1a")
    assert _llama_ids(llama, "x  y") != sp.encode("x  y")


# -- decoding ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CORPUS))
def test_decode_round_trip_and_stream(name: str, tok: Tokenizer, sp: spm.SentencePieceProcessor) -> None:
    text = CORPUS[name]
    ids = sp.encode(text)
    decoded = tok.decode(ids)
    assert decoded == sp.decode(ids)
    if sp.decode(ids) == text:
        assert decoded == text
    stream = tok.stream_decoder()
    pieces = [stream.feed(t) for t in ids] + [stream.flush()]
    assert "".join(pieces) == decoded
    for piece in pieces:
        piece.encode("utf-8")  # whole characters only (a split surrogate pair or lone half would raise)
        if "\ufffd" not in text:
            assert "\ufffd" not in piece  # nothing shown before its character was complete


def test_every_corpus_text_round_trips(tok: Tokenizer, sp: spm.SentencePieceProcessor) -> None:
    # SentencePiece round-trips all of these (identity normalizer, byte fallback), so ours must too.
    for text in [*CORPUS.values(), *RANDOM_TEXTS]:
        if "\u2581" in text:  # "▁" is the escaped space: it decodes to " " in SentencePiece as well
            assert sp.decode(sp.encode(text)) == text.replace("\u2581", " ")
            assert tok.decode(tok.encode(text)) == text.replace("\u2581", " ")
            continue
        assert sp.decode(sp.encode(text)) == text
        assert tok.decode(tok.encode(text)) == text


def test_stream_holds_bytes_until_the_character_is_complete(tok: Tokenizer) -> None:
    ids = tok.encode("a😀b")
    assert [tok.piece(i) for i in ids] == ["▁a", "<0xF0>", "<0x9F>", "<0x98>", "<0x80>", "b"]
    stream = tok.stream_decoder()
    assert [stream.feed(i) for i in ids] == ["a", "", "", "", "😀", "b"]
    assert stream.flush() == ""
    # An unfinished character at the end becomes one U+FFFD per byte, like SentencePiece's decode.
    stream = tok.stream_decoder()
    assert [stream.feed(i) for i in ids[:3]] == ["a", "", ""]
    assert stream.flush() == "\ufffd\ufffd"
    # continuation=True keeps the space of the first piece (text continuing a prompt).
    stream = tok.stream_decoder(continuation=True)
    assert stream.feed(tok.encode("hello")[0]) == " hello"


def test_decode_random_ids_equals_sentencepiece(tok: Tokenizer, sp: spm.SentencePieceProcessor) -> None:
    """Random id sequences (many BYTE pieces forming invalid UTF-8, controls, user-defined pieces)."""
    rng = random.Random(7)
    for _ in range(2000):
        ids = [
            rng.randrange(131072) if rng.random() < 0.4 else rng.randrange(330)
            for _ in range(rng.randrange(12))
        ]
        expected = sp.decode(ids)
        assert tok.decode(ids) == expected, ids
        stream = tok.stream_decoder()
        assert "".join([stream.feed(i) for i in ids] + [stream.flush()]) == expected, ids


def test_token_to_piece(tok: Tokenizer) -> None:
    assert tok.n_vocab == 131072 and tok.bos_id == 1 and tok.eos_id == 2
    assert tok.token_to_piece(tok.encode("hello")[0]) == b" hello"
    assert tok.token_to_piece(69 + 0xF0) == b"\xf0"
    assert tok.token_to_piece(1) == b""
    assert tok.token_to_piece(4) == b"\n"
    with pytest.raises(ValueError, match="token id 131072 out of range"):
        tok.token_to_piece(131072)
    with pytest.raises(ValueError, match="token id -1 out of range"):
        tok.decode([5, -1])


def test_encode_refuses_lone_surrogates(tok: Tokenizer) -> None:
    # Not text (cannot be UTF-8 encoded); SentencePiece's binding refuses it as well.
    with pytest.raises(ValueError, match="surrogates not allowed"):
        tok.encode("a\ud800b")


def test_from_gguf_mapping_and_missing_keys(vocab_gguf: Path, tok: Tokenizer) -> None:
    with GGUFFile(vocab_gguf) as f:
        metadata = dict(f.metadata)
    from_mapping = Tokenizer.from_gguf(metadata)
    text = CORPUS["stress"]
    assert from_mapping.encode(text) == tok.encode(text)
    with pytest.raises(ValueError, match="tokenizer.ggml.tokens is not an array of strings"):
        Tokenizer.from_gguf({**metadata, "tokenizer.ggml.tokens": np.arange(4)})
    with pytest.raises(ValueError, match="only 'llama'"):
        Tokenizer.from_gguf({**metadata, "tokenizer.ggml.model": "gpt2"})
    metadata.pop("tokenizer.ggml.tokens")
    with pytest.raises(ValueError, match="missing tokenizer key 'tokenizer.ggml.tokens'"):
        Tokenizer.from_gguf(metadata)


# -- other SentencePiece models: small ones trained here, to reach the paths Grok-1 does not use --------

IDENTITY = {"normalization_rule_name": "identity", "remove_extra_whitespaces": False}
SYNTHETIC = {
    "byte_fallback": {"byte_fallback": True, **IDENTITY},
    "no_byte_fallback": {**IDENTITY},
    "user_defined": {
        "byte_fallback": True,
        "user_defined_symbols": ["\n", "\n\n", "\n\n\n", "0", "1", "  ", "<tag>", "def"],
        **IDENTITY,
    },
    "blocked_runs": {"byte_fallback": True, "user_defined_symbols": ["\n", "\n\n", "\nfoo"], **IDENTITY},
    "no_dummy_prefix": {"byte_fallback": True, "add_dummy_prefix": False, **IDENTITY},
    "unused_pieces": {"byte_fallback": True, **IDENTITY},  # then 30% of the merged pieces marked UNUSED
    "tied_scores": {"byte_fallback": True, **IDENTITY},  # then scores rounded so that many pairs tie
}
SYNTHETIC_TEXTS = [
    *_random_texts(150, seed=99),
    "abcd <tag>x",
    "xdefabc def==",
    "\n\nfoo\nfoo",
    "11<tag>0",
    "def f(x):\n\n\n\n    return x  # 10",
]


def _training_lines() -> list[str]:
    code = CORPUS["edge/_native.py"] + CORPUS["edge/cli.py"] + CORPUS["native/src/core/types.c"]
    return [line for line in code.splitlines() if line.strip()]


def _train(kind: str) -> bytes:
    import io

    lines = [
        line for line in CORPUS["README.md"].splitlines() + CORPUS["edge/_native.py"].splitlines() if line
    ]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        vocab_size=700,
        model_type="bpe",
        minloglevel=2,
        **SYNTHETIC[kind],
    )
    data = model.getvalue()
    if kind in ("unused_pieces", "tied_scores"):
        pb2 = pytest.importorskip("sentencepiece.sentencepiece_model_pb2")
        proto = pb2.ModelProto()
        proto.ParseFromString(data)
        rng = random.Random(5)
        for piece in proto.pieces:
            if (
                piece.type == NORMAL
                and kind == "unused_pieces"
                and len(piece.piece) > 1
                and rng.random() < 0.3
            ):
                piece.type = 5  # UNUSED
            if piece.type == NORMAL and kind == "tied_scores":
                piece.score = float(round(piece.score / 40))
        data = proto.SerializeToString()
    return data


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("synthetic")
    paths = {}
    for kind in SYNTHETIC:
        paths[kind] = directory / f"{kind}.model"
        paths[kind].write_bytes(_train(kind))
    return paths


def _tokenizer_of(model: Path) -> Tokenizer:
    vocab = read_sentencepiece(model)
    return Tokenizer(
        vocab.pieces, vocab.scores, vocab.types, vocab.bos_id, vocab.eos_id, vocab.unk_id, vocab.pad_id,
        vocab.add_dummy_prefix,
    )  # fmt: skip


@pytest.mark.parametrize("kind", list(SYNTHETIC))
def test_synthetic_models_encode_and_decode_like_sentencepiece(kind: str, synthetic: dict[str, Path]) -> None:
    sp = spm.SentencePieceProcessor(model_file=str(synthetic[kind]))
    tok = _tokenizer_of(synthetic[kind])
    if kind == "unused_pieces":
        assert read_sentencepiece(synthetic[kind]).types.count(5) > 10
    unk_surface = " \u2047 "  # SentencePiece's default unk_surface; ours decodes the piece text "<unk>"
    for text in SYNTHETIC_TEXTS:
        ids = sp.encode(text)
        assert tok.encode(text) == ids, repr(text)
        assert tok.decode(ids) == sp.decode(ids).replace(unk_surface, "<unk>"), repr(text)


@pytest.mark.parametrize("kind", ["byte_fallback", "no_dummy_prefix", "tied_scores", "user_defined"])
def test_synthetic_models_through_gguf_in_llama_cpp(
    kind: str, synthetic: dict[str, Path], tmp_path: Path
) -> None:
    sp = spm.SentencePieceProcessor(model_file=str(synthetic[kind]))
    path = tmp_path / f"{kind}.gguf"
    writer = gguf.GGUFWriter(str(path), "grok")
    for add in (writer.add_embedding_length, writer.add_block_count, writer.add_head_count):
        add(1 if add == writer.add_block_count else 64)
    add_tokenizer(writer, synthetic[kind])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    reader = gguf.GGUFReader(str(path))  # gguf-py's reader works as a metadata source too
    with GGUFFile(path) as f:
        ours, via_reader = Tokenizer.from_gguf(f), Tokenizer.from_gguf(reader)
    llama = _llama(path)
    # The non-run user-defined pieces stay atomic: llama.cpp encodes the text between them separately.
    atomic = re.compile("<tag>|def") if kind == "user_defined" else None
    for text in SYNTHETIC_TEXTS:
        ids = sp.encode(text)
        assert ours.encode(text) == ids == via_reader.encode(text), repr(text)
        if atomic is None:
            assert _llama_ids(llama, text) == ids, repr(text)
        else:
            expected, start = [], 0
            for m in atomic.finditer(text):
                expected += sp.encode(text[start : m.start()]) + [sp.piece_to_id(m.group())]
                start = m.end()
            assert _llama_ids(llama, text) == expected + sp.encode(text[start:]), repr(text)


def test_synthetic_token_types(synthetic: dict[str, Path]) -> None:
    vocab = read_sentencepiece(synthetic["user_defined"])
    types = dict(zip(vocab.pieces, gguf_token_types(vocab), strict=True))
    for piece in ("\n", "\n\n", "\n\n\n", "0", "1", "  "):
        assert types[piece] == NORMAL, repr(piece)
    assert types["<tag>"] == types["def"] == USER_DEFINED
    # "\nfoo" starts with "\n": SentencePiece's longest match at a "\n" could swallow its start, so the
    # "\n" runs must stay atomic (USER_DEFINED) to be exact.
    vocab = read_sentencepiece(synthetic["blocked_runs"])
    types = dict(zip(vocab.pieces, gguf_token_types(vocab), strict=True))
    assert types["\n"] == types["\n\n"] == types["\nfoo"] == USER_DEFINED


def test_unsupported_models_are_refused(synthetic: dict[str, Path], tmp_path: Path) -> None:
    import io

    unigram = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_training_lines()), model_writer=unigram, vocab_size=700,
        model_type="unigram", minloglevel=2, byte_fallback=True,
    )  # fmt: skip
    (tmp_path / "unigram.model").write_bytes(unigram.getvalue())
    cases = {
        tmp_path / "unigram.model": "model type UNIGRAM (only BPE)",
        synthetic["no_byte_fallback"]: "no byte fallback",
    }
    for model, why in cases.items():
        with pytest.raises(ValueError) as err:
            add_tokenizer(gguf.GGUFWriter(str(tmp_path / "x.gguf"), "grok"), model)
        assert str(err.value).startswith(f"{model}: unsupported SentencePiece model: {why}")
        assert "\n" not in str(err.value)

"""Encode/decode speed of edge.tokenizer vs SentencePiece and llama.cpp on the real Grok-1 tokenizer.

    python bench/tokenizer_speed.py [path/to/tokenizer.model]

Prints seconds and MB/s for ~100 KB texts: repository code (repetitive words, warm chunk cache),
multilingual prose built from random words (cold cache), a long unbroken alphanumeric blob and a long
run of spaces (the worst cases for the BPE merge loop: one chunk of 100 K characters).
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

import gguf
import sentencepiece as spm
from edge.convert.tokenizer import add_tokenizer

from edge.gguf import GGUFFile
from edge.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parent.parent
MODEL = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "grok-1" / "tokenizer.model"
SIZE = 100_000


def texts() -> dict[str, str]:
    code = "".join(p.read_text() for p in sorted(ROOT.glob("**/*.py")) if "build" not in p.parts)
    rng = random.Random(0)
    words = [
        "".join(
            rng.choice("abcdefghijklmnopqrstuvwxyzéöü日本語中文한국") for _ in range(rng.randrange(1, 12))
        )
        for _ in range(20000)
    ]
    prose = " ".join(rng.choice(words) for _ in range(SIZE // 6))
    blob = "".join(
        rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/") for _ in range(SIZE)
    )
    return {
        "code (warm cache)": (code * 4)[:SIZE],
        "random words (cold)": prose[:SIZE],
        "alnum blob": blob,
        "space run": " " * SIZE,
    }


def timed(fn, *args):  # noqa: ANN001, ANN201
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


def main() -> None:
    sp = spm.SentencePieceProcessor(model_file=str(MODEL))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vocab.gguf"
        writer = gguf.GGUFWriter(str(path), "grok")
        add_tokenizer(writer, MODEL)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.close()
        with GGUFFile(path) as f:
            tok, t_load = timed(Tokenizer.from_gguf, f)
        print(f"Tokenizer.from_gguf: {t_load:.2f} s")
        try:
            import llama_cpp

            llama = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
        except Exception as e:  # noqa: BLE001 - the bench still runs without llama.cpp
            print(f"llama.cpp unavailable: {e}")
            llama = None
        for name, text in texts().items():
            tok._cache.clear()
            if name.startswith("code"):
                tok.encode(text)  # warm
            ids, t_ours = timed(tok.encode, text)
            ref, t_sp = timed(sp.encode, text)
            _, t_dec = timed(tok.decode, ids)
            line = (
                f"{name:22s} {len(text.encode()) / 1e3:6.0f} KB {len(ids):6d} ids  edge {t_ours:6.3f} s"
                f"  sentencepiece {t_sp:6.3f} s  edge decode {t_dec:6.3f} s  same ids: {ids == ref}"
            )
            if llama is not None:
                lids, t_ll = timed(llama.tokenize, text.encode(), False, False)
                same = list(lids) == ref
                note = "" if same or "<|" not in text else ", text spells <|…|> pieces: see tests"
                line += f"  llama.cpp {t_ll:6.3f} s (same ids: {same}{note})"
            print(line)


if __name__ == "__main__":
    main()

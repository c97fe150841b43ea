"""The tiny test models' shared pieces: the tiny preset's head dim and a SentencePiece tokenizer
trained like Grok-1's (its special ids, byte fallback) at any vocabulary size."""

from __future__ import annotations

import random
from pathlib import Path

TINY_KEY_SIZE = 64  # the tiny preset's head dim (GGUF needs n_head * head_dim == d_model)


def train_tiny_tokenizer(prefix: Path, vocab_size: int) -> Path:
    """A BPE SentencePiece model with ``vocab_size`` pieces, Grok-1's special ids and byte fallback."""
    import sentencepiece as spm

    rng = random.Random(0)
    words = [
        "the",
        "answer",
        "to",
        "life",
        "universe",
        "and",
        "everything",
        "is",
        "of",
        "course",
        "grok",
        "model",
        "token",
        "expert",
        "router",
        "layer",
        "attention",
        "hello",
        "world",
        "number",
        "code",
        "print",
        "return",
        "value",
        "python",
    ]
    lines = [
        " ".join(rng.choice(words) + rng.choice(["", "s", "ed", "ing", "er"]) for _ in range(12))
        for _ in range(3000)
    ]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_prefix=str(prefix),
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        pad_id=0,
        bos_id=1,
        eos_id=2,
        unk_id=3,
        pad_piece="[PAD]",
        bos_piece="[BOS]",
        eos_piece="[EOS]",
        unk_piece="[UNK]",
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        minloglevel=2,
    )
    return prefix.with_suffix(".model")

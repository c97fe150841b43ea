"""The files beside model.onnx: genai_config.json, tokenizer.json + tokenizer_config.json, grok_edge.json.

- ``genai_config.json``: onnxruntime-genai's decoder description (input/output names, shapes, special ids,
  greedy search defaults).
- ``tokenizer.json`` (Hugging Face format, which onnxruntime-genai's tokenizer reads): the GGUF's
  SentencePiece-BPE vocabulary as a BPE model with byte fallback, "▁" for spaces and a "▁" prepended
  (SentencePiece's add_dummy_prefix). SentencePiece merges by the score of the merged piece, so the merge
  list is every split of every piece into two pieces, ordered by that score (the way Hugging Face's
  converter derives it). Control and unknown pieces are special added tokens, user-defined ones atomic
  added tokens.
- ``grok_edge.json``: what edge.onnx.runner needs (hyperparameters, precision, the tokenizer arrays exactly
  as in the GGUF, so that it tokenizes like ``grok-edge run``).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from edge.onnx.grok_gguf import GrokGGUF
from edge.tokenizer import BYTE, CONTROL, NORMAL, UNKNOWN, UNUSED, USER_DEFINED, Tokenizer

SPACE = "\u2581"


def _tokenizer_arrays(src: GrokGGUF) -> dict[str, Any]:
    meta = src.metadata
    tok = Tokenizer.from_gguf(src.file)  # validates the vocabulary (ValueError naming the file)
    n = tok.n_vocab
    return {
        "pieces": list(meta["tokenizer.ggml.tokens"]),
        "scores": [float(s) for s in meta.get("tokenizer.ggml.scores", [0.0] * n)],
        "types": [int(t) for t in meta.get("tokenizer.ggml.token_type", [NORMAL] * n)],
        "bos_id": tok.bos_id,
        "eos_id": tok.eos_id,
        "unk_id": tok.unk_id,
        "pad_id": tok.pad_id,
        "add_space_prefix": tok.add_space_prefix,
    }


def write_genai_config(out: Path, src: GrokGGUF, precision: str) -> None:
    from edge.onnx.exporter import MODEL_FILE

    hp = src.hp
    tok = _tokenizer_arrays(src)
    pad = tok["pad_id"] if tok["pad_id"] >= 0 else 0
    config = {
        "model": {
            "bos_token_id": tok["bos_id"],
            "context_length": hp.n_ctx,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": MODEL_FILE,
                "head_size": hp.head_dim,
                "hidden_size": hp.n_embd,
                "inputs": {
                    "input_ids": "input_ids",
                    "attention_mask": "attention_mask",
                    "past_key_names": "past_key_values.%d.key",
                    "past_value_names": "past_key_values.%d.value",
                },
                "outputs": {
                    "logits": "logits",
                    "present_key_names": "present.%d.key",
                    "present_value_names": "present.%d.value",
                },
                "num_attention_heads": hp.n_head,
                "num_hidden_layers": hp.n_layer,
                "num_key_value_heads": hp.n_head_kv,
            },
            "eos_token_id": tok["eos_id"],
            "pad_token_id": pad,
            "type": "llama",  # onnxruntime-genai's plain decoder-only path; the graph itself is Grok's
            "vocab_size": hp.n_vocab,
        },
        "search": {
            "diversity_penalty": 0.0,
            "do_sample": False,
            "early_stopping": True,
            "length_penalty": 1.0,
            "max_length": hp.n_ctx,
            "min_length": 0,
            "no_repeat_ngram_size": 0,
            "num_beams": 1,
            "num_return_sequences": 1,
            "past_present_share_buffer": False,
            "repetition_penalty": 1.0,
            "temperature": 1.0,
            "top_k": 1,
            "top_p": 1.0,
        },
    }
    (out / "genai_config.json").write_text(json.dumps(config, indent=2) + "\n")
    info = {
        "format": "grok-edge onnx export",
        "version": 1,
        "source": Path(src.path).name,
        "precision": precision,
        "hparams": dataclasses.asdict(hp),
        "tokenizer": tok,
    }
    (out / "grok_edge.json").write_text(json.dumps(info) + "\n")


def hf_tokenizer(tok: dict[str, Any]) -> dict[str, Any]:
    """A Hugging Face ``tokenizer.json`` for the SentencePiece-BPE vocabulary ``tok`` (grok_edge.json's)."""
    pieces: list[str] = tok["pieces"]
    scores: list[float] = tok["scores"]
    types: list[int] = tok["types"]
    vocab: dict[str, int] = {}
    for i, p in enumerate(pieces):
        vocab.setdefault(p, i)
    mergeable = {p: i for p, i in vocab.items() if types[i] in (NORMAL, USER_DEFINED, UNUSED)}
    merges: list[tuple[float, int, int, int, str, str]] = []
    for piece, i in mergeable.items():
        if types[i] == USER_DEFINED:
            continue
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in mergeable and right in mergeable:
                merges.append((-scores[i], i, vocab[left], vocab[right], left, right))
    merges.sort()
    added = [
        {
            "id": i,
            "content": pieces[i],
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": types[i] in (CONTROL, UNKNOWN),
        }
        for i in range(len(pieces))
        if types[i] in (CONTROL, UNKNOWN, USER_DEFINED)
    ]
    normalizers: list[dict[str, Any]] = [{"type": "Replace", "pattern": {"String": " "}, "content": SPACE}]
    decoders: list[dict[str, Any]] = [
        {"type": "Replace", "pattern": {"String": SPACE}, "content": " "},
        {"type": "ByteFallback"},
        {"type": "Fuse"},
    ]
    if tok["add_space_prefix"]:
        normalizers.insert(0, {"type": "Prepend", "prepend": SPACE})
        decoders.append({"type": "Strip", "content": " ", "start": 1, "stop": 0})
    unk = pieces[tok["unk_id"]]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": normalizers},
        "pre_tokenizer": None,
        "post_processor": None,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": unk,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": True,
            "byte_fallback": any(t == BYTE for t in types),
            "ignore_merges": False,
            "vocab": vocab,
            "merges": [[m[4], m[5]] for m in merges],
        },
    }


def write_tokenizer_files(out: Path, src: GrokGGUF) -> None:
    tok = _tokenizer_arrays(src)
    (out / "tokenizer.json").write_text(json.dumps(hf_tokenizer(tok), ensure_ascii=False) + "\n")
    pieces = tok["pieces"]

    def piece(i: int) -> str | None:
        return pieces[i] if 0 <= i < len(pieces) else None

    config = {
        "add_bos_token": False,  # Grok-1's runner encodes prompts without BOS
        "add_eos_token": False,
        "bos_token": piece(tok["bos_id"]),
        "eos_token": piece(tok["eos_id"]),
        "unk_token": piece(tok["unk_id"]),
        "pad_token": piece(tok["pad_id"]),
        "clean_up_tokenization_spaces": False,
        "legacy": True,
        "model_max_length": src.hp.n_ctx,
        "tokenizer_class": "LlamaTokenizer",
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")

"""The parts of a Grok GGUF the ONNX exporter reads: hyperparameters and one matrix at a time.

Hyperparameters follow the engine's reading (native/src/engine/model.c): the ``grok.*`` keys, our
constants where present, Grok-1's own values otherwise. Matrices come as GGUF stores them, [out, in]
rows, raw; stacked expert tensors ``ffn_*_exps`` [E, out, in] (or per-expert ``ffn_*.E``) one expert at
a time, so no more than one matrix is ever decoded at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.convert import grok1
from edge.gguf import GGUFFile, TensorInfo


@dataclass(frozen=True)
class GrokHparams:
    n_vocab: int
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_expert: int
    n_expert_used: int
    n_ctx: int
    rope_base: float
    rms_eps: float
    embedding_scale: float
    output_scale: float
    attn_multiplier: float
    softcap: float


def _first(meta: dict[str, Any], keys: tuple[str, ...], default: float) -> float:
    for key in keys:
        if key in meta:
            return float(meta[key])
    return float(default)


class GrokGGUF:
    """A Grok GGUF opened for export (validated shapes; ValueError naming the file otherwise)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        self.file = GGUFFile(self.path)
        meta = self.file.metadata
        self.metadata = meta
        arch = meta.get("general.architecture")
        if arch != "grok":
            raise ValueError(f"{self.path}: general.architecture is {arch!r}, not 'grok'")

        def need(key: str) -> int:
            if key not in meta:
                raise ValueError(f"{self.path}: missing metadata key {key!r}")
            return int(meta[key])

        d = need("grok.embedding_length")
        n_head = need("grok.attention.head_count")
        emb = self.info("token_embd.weight")
        self.hp = GrokHparams(
            n_vocab=int(emb.shape[0]),
            n_embd=d,
            n_layer=need("grok.block_count"),
            n_head=n_head,
            n_head_kv=need("grok.attention.head_count_kv"),
            head_dim=int(meta.get("grok.attention.key_length", d // max(n_head, 1))),
            n_ff=int(meta.get("grok.expert_feed_forward_length", need("grok.feed_forward_length"))),
            n_expert=need("grok.expert_count"),
            n_expert_used=need("grok.expert_used_count"),
            n_ctx=need("grok.context_length"),
            rope_base=_first(meta, ("grok.rope.freq_base",), grok1.ROPE_BASE),
            rms_eps=_first(meta, ("grok.attention.layer_norm_rms_epsilon",), grok1.RMS_EPS),
            embedding_scale=_first(meta, ("grok.embedding_scale",), grok1.EMBEDDING_MULTIPLIER),
            output_scale=_first(meta, ("grok.output_scale", "grok.logit_scale"), grok1.OUTPUT_MULTIPLIER),
            attn_multiplier=_first(
                meta,
                ("grok.attention.output_multiplier", "grok.attention.output_scale"),
                grok1.ATTN_OUTPUT_MULTIPLIER,
            ),
            softcap=_first(meta, ("grok.attn_logit_softcapping",), grok1.ATTN_LOGIT_CAP),
        )
        hp = self.hp
        if hp.n_head <= 0 or hp.n_head_kv <= 0 or hp.n_head % hp.n_head_kv:
            raise ValueError(f"{self.path}: {hp.n_head} query heads for {hp.n_head_kv} KV heads")
        if hp.head_dim % 2 or not 0 < hp.n_expert_used <= hp.n_expert:
            raise ValueError(
                f"{self.path}: head_dim {hp.head_dim}, {hp.n_expert_used} of {hp.n_expert} experts"
            )
        if emb.shape[1] != d:
            raise ValueError(f"{self.path}: token_embd.weight is {emb.shape}, n_embd {d}")

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> GrokGGUF:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def info(self, name: str) -> TensorInfo:
        try:
            return self.file.tensor(name)
        except KeyError:
            raise ValueError(f"{self.path}: no tensor {name!r}") from None

    def has(self, name: str) -> bool:
        return any(t.name == name for t in self.file.tensors)

    def matrix(self, name: str, rows: int, cols: int, expert: int | None = None) -> tuple[np.ndarray, str]:
        """(raw data [rows, ...], GGUF type name) of a matrix [rows, cols]; ``expert`` picks one expert of
        a stacked ``blk.N.ffn_*_exps`` tensor or its per-expert form ``blk.N.ffn_*.E``."""
        if expert is not None and not self.has(name):
            name = name.replace("_exps.weight", f".{expert}.weight")
            expert = None
        info = self.info(name)
        want = (rows, cols) if expert is None else (self.hp.n_expert, rows, cols)
        if tuple(info.shape) != want:
            raise ValueError(f"{self.path}: tensor {name!r} has shape {tuple(info.shape)}, expected {want}")
        raw = self.file.array(info)
        return (raw if expert is None else raw[expert]), info.type_name

    def vector(self, name: str, n: int) -> np.ndarray:
        info = self.info(name)
        if tuple(info.shape) != (n,):
            raise ValueError(f"{self.path}: tensor {name!r} has shape {tuple(info.shape)}, expected ({n},)")
        raw = self.file.array(info)
        if info.type_name in ("F32", "F16", "BF16"):
            return np.asarray(raw, dtype=np.float32)
        from edge import quant

        return quant.dequantize(np.asarray(raw), info.type_name, (n,))

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

import ml_dtypes
import numpy as np

from edge.convert import grok1
from edge.gguf import GGUFFile, TensorInfo

_FLOAT_TYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype(ml_dtypes.bfloat16)}


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
        self._fd = -1
        self.file = GGUFFile(self.path)
        self._fd = os.open(self.path, os.O_RDONLY)
        try:
            self._validate()
        except BaseException:
            self.close()
            raise

    def _validate(self) -> None:
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
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

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

    def _resolve(self, name: str, rows: int, cols: int, expert: int | None) -> tuple[TensorInfo, int]:
        """(tensor, byte offset in the file of the matrix) for a matrix [rows, cols]; ``expert`` picks one
        expert of a stacked ``blk.N.ffn_*_exps`` tensor or its per-expert form ``blk.N.ffn_*.E``."""
        if expert is not None and not self.has(name):
            name = name.replace("_exps.weight", f".{expert}.weight")
            expert = None
        info = self.info(name)
        want = (rows, cols) if expert is None else (self.hp.n_expert, rows, cols)
        if tuple(info.shape) != want:
            raise ValueError(f"{self.path}: tensor {name!r} has shape {tuple(info.shape)}, expected {want}")
        per_matrix = info.nbytes // (1 if expert is None else self.hp.n_expert)
        return info, self.file.data_offset + info.offset + (expert or 0) * per_matrix

    def rows(
        self,
        name: str,
        rows: int,
        cols: int,
        expert: int | None = None,
        start: int = 0,
        stop: int | None = None,
    ) -> tuple[np.ndarray, str]:
        """Rows ``start:stop`` of a matrix [rows, cols] (see _resolve) and its GGUF type name: typed
        [n, cols] for F32/F16/BF16, else raw bytes uint8 [n, row_bytes]. Read from the file, not the
        mapping, so the pages read do not stay in this process's resident memory."""
        info, offset = self._resolve(name, rows, cols, expert)
        stop = rows if stop is None else stop
        row_bytes = info.nbytes // (info.n_elements // cols)
        data = os.pread(self._fd, (stop - start) * row_bytes, offset + start * row_bytes)
        if len(data) != (stop - start) * row_bytes:
            raise ValueError(f"{self.path}: tensor {info.name!r} is cut short")
        dtype = _FLOAT_TYPES.get(info.type_name)
        if dtype is not None:
            return np.frombuffer(data, dtype=dtype).reshape(stop - start, cols), info.type_name
        return np.frombuffer(data, dtype=np.uint8).reshape(stop - start, row_bytes), info.type_name

    def matrix(self, name: str, rows: int, cols: int, expert: int | None = None) -> tuple[np.ndarray, str]:
        """A whole matrix (see rows)."""
        return self.rows(name, rows, cols, expert)

    def vector(self, name: str, n: int) -> np.ndarray:
        info = self.info(name)
        if tuple(info.shape) != (n,):
            raise ValueError(f"{self.path}: tensor {name!r} has shape {tuple(info.shape)}, expected ({n},)")
        raw = self.file.array(info)
        if info.type_name in ("F32", "F16", "BF16"):
            return np.asarray(raw, dtype=np.float32)
        from edge import quant

        return quant.dequantize(np.asarray(raw), info.type_name, (n,))

"""`edge.BatchContext`: one model and one context holding several sequences (KV cache slots), evaluated
together in one forward pass per step (edge.h's ``edge_batch_eval``).

    with edge.BatchContext("grok.gguf", n_seq=4, n_ctx=2048) as bc:
        logits = bc.eval([0, 0, 1], [11, 12, 21])   # seq 0 gets 11, 12; seq 1 gets 21
        # logits: [2, n_vocab], the last token of each sequence in the batch (by default)

Every matrix product of a step (attention projections, router, the selected experts, the output) runs once
over the tokens of all sequences, so the weights a step reads are read once for the batch; attention runs
per sequence over its own cache. Batch invariance: a sequence's logits are bit for bit those it gets when
evaluated alone (tested in tests/test_batch.py).

Not thread-safe: one thread drives a BatchContext (the server's scheduler does).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge._native import EdgeArgumentError, EdgeRangeError, check, ffi, lib
from edge.context_params import ContextParams, free_handles, open_context


class BatchContext:
    """A Grok GGUF model with ``n_seq`` sequence slots (1..1024) of ``n_ctx`` tokens each.

    Python keeps each slot's tokens (``tokens(seq)``) for prompt-prefix reuse. The other parameters are
    :class:`edge.Model`'s, with its defaults and checks (edge.context_params): ``n_ctx`` 0 is the model's
    context length, a larger value is clamped to it with a warning."""

    def __init__(
        self,
        path: str | Path,
        n_seq: int = 1,
        n_ctx: int = 0,
        n_batch: int = 512,
        n_threads: int | None = None,
        kv_type: str = "f16",
        isa: str = "auto",
        expert_cache: str | int | None = None,
        expert_policy: str = "lfu",
        prefetch: bool = True,
        device: str = "auto",
        gpu_memory: str | int | None = None,
    ) -> None:
        self.path = str(path)
        self._model: Any = ffi.NULL
        self._ctx: Any = ffi.NULL
        opened = open_context(
            self.path,
            ContextParams(
                n_ctx=n_ctx,
                n_batch=n_batch,
                n_threads=n_threads,
                kv_type=kv_type,
                isa=isa,
                n_seq=n_seq,
                expert_cache=expert_cache,
                expert_policy=expert_policy,
                prefetch=prefetch,
                device=device,
                gpu_memory=gpu_memory,
            ),
        )
        self._model, self._ctx, self.hparams = opened.model, opened.ctx, opened.hparams
        self.n_vocab = self.hparams.n_vocab
        self.n_ctx_train = self.hparams.n_ctx_train
        self.n_seq = int(n_seq)
        self.n_ctx, self.n_batch, self.n_threads = opened.n_ctx, opened.n_batch, opened.n_threads
        self.device = opened.device  # where it runs: "cpu" or "cuda"
        self._tokens: list[list[int]] = [[] for _ in range(self.n_seq)]

    # -- lifetime ------------------------------------------------------------------------------------

    def close(self) -> None:
        free_handles(self._model, self._ctx)
        self._model = self._ctx = ffi.NULL

    def __enter__(self) -> BatchContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def _require_open(self) -> Any:
        if self._ctx == ffi.NULL:
            raise ValueError(f"{self.path}: context is closed")
        return self._ctx

    # -- slots ---------------------------------------------------------------------------------------

    def tokens(self, seq: int) -> list[int]:
        """The tokens cached in sequence ``seq``."""
        return list(self._tokens[self._seq(seq)])

    def n_past(self, seq: int) -> int:
        out = ffi.new("int64_t *")
        check(lib.edge_seq_n_past(self._require_open(), int(seq), out))
        return int(out[0])

    def truncate(self, seq: int, n_past: int) -> None:
        """Keep the first ``n_past`` tokens of sequence ``seq`` (0 frees the slot)."""
        check(lib.edge_seq_truncate(self._require_open(), int(seq), int(n_past)))
        self._tokens[seq] = self._tokens[seq][: int(n_past)]

    def _seq(self, seq: int) -> int:
        if not 0 <= int(seq) < self.n_seq:
            raise EdgeArgumentError(
                "EDGE_ERR_INVALID_ARG", f"sequence {seq}: the context has 0..{self.n_seq - 1}"
            )
        return int(seq)

    # -- evaluation ----------------------------------------------------------------------------------

    def eval(
        self, seq_ids: Sequence[int], tokens: Sequence[int], want: Sequence[bool] | None = None
    ) -> np.ndarray:
        """Append ``tokens[i]`` to sequence ``seq_ids[i]`` (a sequence's tokens adjacent, in order), all in
        one pass per ``n_batch`` tokens. Returns float32 logits [n_wanted, n_vocab] for the tokens marked in
        ``want`` (default: the last token of each sequence's run), in batch order. A rejected call (bad
        id, overflow, a sequence in two runs) evaluates nothing."""
        ctx = self._require_open()
        seqs = np.ascontiguousarray(seq_ids, dtype=np.int32)
        toks = np.ascontiguousarray(tokens, dtype=np.int64)
        n = int(toks.size)
        if seqs.ndim != 1 or toks.ndim != 1 or seqs.size != n:
            raise EdgeArgumentError(
                "EDGE_ERR_INVALID_ARG", "seq_ids and tokens must be 1-D and of one length"
            )
        if n == 0:
            raise EdgeArgumentError("EDGE_ERR_INVALID_ARG", "eval: no tokens")
        bad = np.flatnonzero((toks < 0) | (toks >= self.n_vocab))
        if bad.size:
            i = int(bad[0])
            raise EdgeRangeError(
                "EDGE_ERR_RANGE",
                f"token id {int(toks[i])} at index {i} is out of range (n_vocab {self.n_vocab})",
            )
        toks32 = toks.astype(np.int32)
        if want is None:
            w = np.ones(n, dtype=np.uint8)
            w[:-1] = seqs[1:] != seqs[:-1]
        else:
            w = np.ascontiguousarray(want, dtype=np.uint8)
            if w.size != n:
                raise EdgeArgumentError("EDGE_ERR_INVALID_ARG", "want must have one entry per token")
        out = np.empty((int(np.count_nonzero(w)), self.n_vocab), dtype=np.float32)
        check(
            lib.edge_batch_eval(
                ctx,
                ffi.from_buffer("int32_t[]", seqs),
                ffi.from_buffer("int32_t[]", toks32),
                n,
                ffi.from_buffer("uint8_t[]", w),
                ffi.from_buffer("float[]", out) if out.size else ffi.NULL,
            )
        )
        for s, t in zip(seqs.tolist(), toks32.tolist(), strict=True):
            self._tokens[s].append(t)
        return out

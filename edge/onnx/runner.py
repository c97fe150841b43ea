"""``OnnxModel``: run an exported folder (edge.onnx.exporter) through onnxruntime, with edge.Model's API.

    with OnnxModel("grok-onnx") as model:              # CPU; providers=["CUDAExecutionProvider", ...]
        text = model.generate("The answer to life", max_tokens=32, temperature=0)

Plain onnxruntime (not onnxruntime-genai's loop), so the KV cache, the [PAD] mask and the sampler are
the ones edge.Model has: the attention mask is 0 for [PAD] (id 0) tokens (their keys are masked, as the
engine masks them), the cached prefix of a new prompt is reused, sampling is edge.sampling's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge.cancel import CancelToken
from edge.model import Generation, RunStats


class OnnxModel:
    """An exported Grok folder and one sequence's KV cache. ``n_ctx`` is clamped to the model's."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        n_threads: int | None = None,
        n_ctx: int | None = None,
        n_batch: int = 512,
        seed: int | None = None,
        providers: Sequence[str] | None = None,
    ) -> None:
        import onnxruntime as ort

        from edge.tokenizer import Tokenizer

        self.path = Path(path)
        info_path = self.path / "grok_edge.json"
        if not info_path.is_file():
            raise FileNotFoundError(f"{self.path}: not an exported folder (no grok_edge.json)")
        try:
            info = json.loads(info_path.read_text())
            hp = info["hparams"]
            t = info["tokenizer"]
            self.tokenizer = Tokenizer(
                t["pieces"],
                t["scores"],
                t["types"],
                t["bos_id"],
                t["eos_id"],
                t["unk_id"],
                t["pad_id"],
                t["add_space_prefix"],
            )
            self.n_layer, self.n_head_kv = int(hp["n_layer"]), int(hp["n_head_kv"])
            self.head_dim, self.n_vocab = int(hp["head_dim"]), int(hp["n_vocab"])
            n_ctx_train = int(hp["n_ctx"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{info_path}: malformed ({e})") from None
        self.precision = str(info.get("precision", "?"))
        self.n_ctx = max(1, min(int(n_ctx or n_ctx_train), n_ctx_train))
        self.n_batch = max(1, int(n_batch))
        self.seed = seed
        opts = ort.SessionOptions()
        if n_threads:
            opts.intra_op_num_threads = int(n_threads)
        self.session: Any = ort.InferenceSession(
            str(self.path / "model.onnx"), opts, providers=list(providers or ["CPUExecutionProvider"])
        )
        self._tokens: list[int] = []
        self._past: list[np.ndarray] = []
        self.last_stats = RunStats()
        self.reset()

    # -- lifetime --------------------------------------------------------------------------------------

    def close(self) -> None:
        self.session = None
        self._past = []

    def __enter__(self) -> OnnxModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require_open(self) -> Any:
        if self.session is None:
            raise ValueError(f"{self.path}: model is closed")
        return self.session

    # -- vocabulary ------------------------------------------------------------------------------------

    def tokenize(self, text: str | bytes, add_bos: bool = False) -> list[int]:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return list(self.tokenizer.encode(text, add_bos=add_bos))

    def detokenize(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode([int(t) for t in ids]))

    def token_eos(self) -> int:
        return int(self.tokenizer.eos_id)

    def token_bos(self) -> int:
        return int(self.tokenizer.bos_id)

    # -- evaluation ------------------------------------------------------------------------------------

    @property
    def n_past(self) -> int:
        return len(self._tokens)

    @property
    def tokens(self) -> list[int]:
        return list(self._tokens)

    def reset(self) -> None:
        empty = np.zeros((1, self.n_head_kv, 0, self.head_dim), dtype=np.float32)
        self._past = [empty] * (2 * self.n_layer)
        self._tokens = []

    def truncate(self, n_past: int) -> None:
        n = int(n_past)
        if not 0 <= n <= len(self._tokens):
            raise ValueError(f"truncate: n_past {n} outside 0..{len(self._tokens)}")
        self._past = [p[:, :, :n, :] for p in self._past]
        self._tokens = self._tokens[:n]

    def eval(self, tokens: Sequence[int], all_logits: bool = False) -> np.ndarray:
        """Append ``tokens``; the last token's logits [n_vocab] or every new token's [n, n_vocab]."""
        session = self._require_open()
        ids = np.asarray([int(t) for t in tokens], dtype=np.int64)
        if ids.size == 0:
            raise ValueError("eval: no tokens")
        bad = np.flatnonzero((ids < 0) | (ids >= self.n_vocab))
        if bad.size:
            raise ValueError(
                f"token id {int(ids[bad[0]])} at index {int(bad[0])} is out of range (n_vocab {self.n_vocab})"
            )
        if len(self._tokens) + ids.size > self.n_ctx:
            raise ValueError(
                f"context overflow: {len(self._tokens)} cached + {ids.size} new tokens "
                f"exceed n_ctx {self.n_ctx}"
            )
        outs: list[np.ndarray] = []
        for start in range(0, ids.size, self.n_batch):
            chunk = ids[start : start + self.n_batch]
            history = np.asarray([*self._tokens, *chunk.tolist()], dtype=np.int64)
            feeds: dict[str, np.ndarray] = {
                "input_ids": chunk[None, :],
                "attention_mask": (history != 0).astype(np.int64)[None, :],  # [PAD] keys masked
            }
            for i in range(self.n_layer):
                feeds[f"past_key_values.{i}.key"] = self._past[2 * i]
                feeds[f"past_key_values.{i}.value"] = self._past[2 * i + 1]
            result = session.run(None, feeds)
            self._past = list(result[1:])
            self._tokens.extend(chunk.tolist())
            logits = result[0][0]
            outs.append(logits if all_logits else logits[-1:])
        out = np.concatenate(outs, axis=0)
        return out if all_logits else out[-1]

    def logits(self, tokens: Sequence[int]) -> np.ndarray:
        """Logits of every position of ``tokens`` from an empty cache: float32 [T, n_vocab]."""
        self.reset()
        return self.eval(tokens, all_logits=True)

    def _eval_prompt(self, ids: list[int]) -> tuple[np.ndarray, int]:
        if not ids:
            raise ValueError("the prompt is empty")
        common = 0
        for a, b in zip(self._tokens, ids, strict=False):
            if a != b:
                break
            common += 1
        common = min(common, len(ids) - 1)
        self.truncate(common)
        todo = ids[common:]
        return self.eval(todo), len(todo)

    # -- generation ------------------------------------------------------------------------------------

    def stream(
        self,
        prompt: str | Sequence[int],
        max_tokens: int | None = 128,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        repeat_last_n: int = 64,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        logit_bias: dict[int, float] | None = None,
        cancel: CancelToken | None = None,
    ) -> Generation:
        """As edge.Model.stream, through the same loop (edge.stream_loop): pieces of text as they are
        final; stops at EOS, ``max_tokens`` (None: until the context is full), a full context, a ``stop``
        string or a cancel (``cancel``, checked between tokens), with the finish reason and ``stats``."""
        from edge.sampling import SamplingParams
        from edge.stream_loop import generate_pieces, stream_setup

        params = SamplingParams(
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            min_p=min_p,
            repeat_penalty=repeat_penalty,
            frequency_penalty=frequency_penalty,
            presence_penalty=presence_penalty,
            repeat_last_n=repeat_last_n,
            logit_bias=dict(logit_bias or {}),
            seed=seed if seed is not None else self.seed,
        )
        sampler, stops, limit = stream_setup(self.n_vocab, self.n_ctx, max_tokens, stop, params)
        ids = self.tokenize(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        if not ids:
            raise ValueError("the prompt is empty")
        token = cancel or CancelToken()
        stats = RunStats()
        self.last_stats = stats
        steps = _SessionSteps(self)
        pieces = generate_pieces(steps, self.tokenizer, ids, sampler, stops, limit, self.n_ctx, token, stats)
        return Generation(pieces, stats, token)

    def generate(self, prompt: str | Sequence[int], max_tokens: int | None = 128, **kwargs: Any) -> str:
        return "".join(self.stream(prompt, max_tokens=max_tokens, **kwargs))

    def generate_tokens(self, prompt: Sequence[int], max_tokens: int, **kwargs: Any) -> list[int]:
        """Token ids generated after ``prompt`` (greedy with temperature=0), as edge.Model's."""
        from edge.sampling import Sampler, SamplingParams, sample_tokens

        sampler = Sampler(SamplingParams(**kwargs))
        ids = [int(t) for t in prompt]
        logits, _ = self._eval_prompt(ids)
        return sample_tokens(
            sampler, logits, ids, max_tokens, lambda: len(self._tokens) < self.n_ctx, lambda t: self.eval([t])
        )


class _SessionSteps:
    """An OnnxModel generation's evaluation (edge.stream_loop.Steps): the session, one token at a time."""

    def __init__(self, model: OnnxModel) -> None:
        self.model = model

    def prompt(self, ids: list[int]) -> tuple[np.ndarray, int]:
        return self.model._eval_prompt(ids)

    def step(self, history: list[int], token: int) -> np.ndarray:
        return self.model.eval([token])

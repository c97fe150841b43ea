"""`edge.Model`: load a Grok GGUF and run it (tokenize, logits, generate, stream).

A friendly layer over the C engine (edge.h's engine section through edge._native), shaped like
llama-cpp-python's ``Llama`` where that is sensible::

    with edge.Model("grok-1-Q4_K_M.gguf") as model:
        print(model.generate("The answer to life the universe and everything is of course", max_tokens=32))

One Model holds one context (KV cache) for one sequence. The tokens already in the cache are remembered,
so a new prompt sharing a prefix with the previous one only evaluates the rest.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge._native import EdgeArgumentError, EdgeRangeError, check, ffi, lib
from edge.experts import CacheStats, cache_params, read_stats
from edge.kernels import isa_code

KV_TYPES: dict[str, int] = {"f16": 1, "q8_0": 8, "f32": 0}


@dataclass
class RunStats:
    """Timings of the last generate/stream call (prompt tokens evaluated, tokens generated)."""

    prompt_tokens: int = 0
    prompt_seconds: float = 0.0
    decode_tokens: int = 0
    decode_seconds: float = 0.0

    @property
    def prompt_tokens_per_second(self) -> float:
        return self.prompt_tokens / self.prompt_seconds if self.prompt_seconds > 0 else 0.0

    @property
    def decode_tokens_per_second(self) -> float:
        return self.decode_tokens / self.decode_seconds if self.decode_seconds > 0 else 0.0

    def summary(self) -> str:
        return (
            f"prompt: {self.prompt_tokens} tok, {self.prompt_tokens_per_second:.2f} tok/s | "
            f"decode: {self.decode_tokens} tok, {self.decode_tokens_per_second:.2f} tok/s"
        )


@dataclass(frozen=True)
class Hparams:
    """The model's hyperparameters as the engine read them from the GGUF metadata."""

    n_vocab: int
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_expert: int
    n_expert_used: int
    n_ctx_train: int
    rope_freq_base: float
    rms_eps: float
    embedding_scale: float
    output_scale: float
    attn_output_multiplier: float
    attn_logit_softcap: float


class Model:
    """A Grok model from a GGUF file and one inference context over it.

    ``n_ctx`` is clamped to the model's context length; ``kv_type``: "f16" (default), "q8_0" (half the
    memory) or "f32" (exact); ``isa`` forces a CPU kernel path ("scalar", "avx2", "avx512", "neon",
    "neon_dotprod"; "auto" picks the best this CPU runs).

    ``expert_cache`` ("8GiB", a byte count, or None: every expert read through the mapping) keeps the
    experts in a RAM cache of that size, read from the file as needed (``expert_policy`` "lfu", frequency
    with decay, or "lru"; ``prefetch`` predicts the next layer's experts and reads them ahead); the logits
    are the same bits either way. A budget below the minimum (one layer's selected experts, plus as many
    prefetch slots) is a ValueError naming the minimum. ``trace_experts`` writes every token's routing to
    that file (JSON lines, see edge.h)."""

    def __init__(
        self,
        path: str | Path,
        n_threads: int | None = None,
        n_ctx: int = 8192,
        n_batch: int = 512,
        kv_type: str = "f16",
        seed: int | None = None,
        verbose: bool = False,
        isa: str = "auto",
        expert_cache: str | int | None = None,
        expert_policy: str = "lfu",
        prefetch: bool = True,
        trace_experts: str | Path | None = None,
    ) -> None:
        self.path = str(path)
        self.expert_cache = expert_cache
        self.verbose = verbose
        self.seed = seed
        self._model: Any = ffi.NULL
        self._ctx: Any = ffi.NULL
        if kv_type.lower() not in KV_TYPES:
            raise EdgeArgumentError(
                "EDGE_ERR_INVALID_ARG", f"kv_type {kv_type!r}: use one of {sorted(KV_TYPES)}"
            )
        isa_value = isa_code(isa.lower())  # EdgeArgumentError for an unknown name
        if n_threads is not None and n_threads < 0:
            raise EdgeArgumentError("EDGE_ERR_INVALID_ARG", f"n_threads {n_threads} must be >= 0")
        if not Path(self.path).is_file():
            raise FileNotFoundError(f"{self.path}: no such model file")
        out = ffi.new("edge_model **")
        check(lib.edge_model_load(self.path.encode(), out))
        self._model = out[0]
        try:
            hp = ffi.new("edge_model_hparams *")
            check(lib.edge_model_get_hparams(self._model, hp))
            self.hparams = Hparams(**{f: getattr(hp, f) for f in Hparams.__dataclass_fields__})
            params = ffi.new("edge_context_params *")
            check(lib.edge_context_default_params(params))
            params.n_ctx = max(1, min(int(n_ctx), self.hparams.n_ctx_train))
            params.n_batch = max(1, int(n_batch))
            params.n_threads = int(n_threads or 0)
            params.kv_type = KV_TYPES[kv_type.lower()]
            params.isa = isa_value
            if expert_cache is not None:
                check(
                    lib.edge_model_set_expert_cache(
                        self._model, cache_params(expert_cache, expert_policy, prefetch)
                    )
                )
            if trace_experts is not None:
                check(lib.edge_model_trace_experts(self._model, str(trace_experts).encode()))
            ctx = ffi.new("edge_context **")
            check(lib.edge_context_create(self._model, params, ctx))
            self._ctx = ctx[0]
            self.n_ctx = int(params.n_ctx)
            self.n_batch = min(int(params.n_batch), self.n_ctx)  # as the context clamps it
            self.kv_type = kv_type.lower()
            self.tokenizer = self._load_tokenizer()
        except BaseException:
            self.close()
            raise
        self._tokens: list[int] = []  # the sequence held in the KV cache
        self._logits_row = np.empty(self.hparams.n_vocab, dtype=np.float32)
        self.last_stats = RunStats()
        if verbose:
            h = self.hparams
            print(
                f"edge: {self.path}: {h.n_layer} layers, d {h.n_embd}, {h.n_head}/{h.n_head_kv} heads, "
                f"{h.n_expert} experts (top {h.n_expert_used}), vocab {h.n_vocab}, n_ctx {self.n_ctx}"
            )

    def _load_tokenizer(self) -> Any:
        from edge.gguf import GGUFFile
        from edge.tokenizer import Tokenizer

        with GGUFFile(self.path) as g:
            if "tokenizer.ggml.tokens" not in g.metadata:
                return None
            return Tokenizer.from_gguf(g)

    # -- lifetime ------------------------------------------------------------------------------------

    def close(self) -> None:
        """Free the context and unmap the model (also done by ``with`` and at garbage collection)."""
        if self._ctx != ffi.NULL:
            lib.edge_context_free(self._ctx)
            self._ctx = ffi.NULL
        if self._model != ffi.NULL:
            lib.edge_model_trace_experts(self._model, ffi.NULL)  # flushes and closes a trace
            lib.edge_model_free(self._model)
            self._model = ffi.NULL

    def cache_stats(self) -> CacheStats:
        """The expert store's counters: hit rate, bytes read per token, prefetch accuracy, I/O stall."""
        self._require_open()
        return read_stats(self._model)

    def reset_cache_stats(self) -> None:
        self._require_open()
        check(lib.edge_model_expert_cache_reset_stats(self._model))

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def __repr__(self) -> str:
        state = "closed" if self._ctx == ffi.NULL else f"n_ctx={self.n_ctx}, n_past={len(self._tokens)}"
        return f"Model({self.path!r}, {state})"

    def _require_open(self) -> Any:
        if self._ctx == ffi.NULL:
            raise ValueError(f"{self.path}: model is closed")
        return self._ctx

    # -- vocabulary ----------------------------------------------------------------------------------

    @property
    def n_vocab(self) -> int:
        return self.hparams.n_vocab

    def _require_tokenizer(self) -> Any:
        if self.tokenizer is None:
            raise ValueError(f"{self.path}: the GGUF has no tokenizer (tokenizer.ggml.* keys)")
        return self.tokenizer

    def token_bos(self) -> int:
        return int(self._require_tokenizer().bos_id)

    def token_eos(self) -> int:
        return int(self._require_tokenizer().eos_id)

    def tokenize(self, text: str | bytes, add_bos: bool = False) -> list[int]:
        """Token ids of ``text``; no BOS by default, like the official runner's ``encode(prompt)``."""
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return list(self._require_tokenizer().encode(text, add_bos=add_bos))

    def detokenize(self, ids: Sequence[int]) -> str:
        return str(self._require_tokenizer().decode([int(t) for t in ids]))

    # -- evaluation ----------------------------------------------------------------------------------

    @property
    def n_past(self) -> int:
        out = ffi.new("int64_t *")
        check(lib.edge_context_n_past(self._require_open(), out))
        return int(out[0])

    @property
    def tokens(self) -> list[int]:
        """The tokens currently held in the KV cache."""
        return list(self._tokens)

    def _checked_ids(self, tokens: Sequence[int] | np.ndarray) -> np.ndarray:
        """``tokens`` as int32 ids, each checked against the vocabulary. A short list of Python ints
        (decode's one token) is checked in Python: numpy's reductions cost ~100 us a token there, run
        on caches the weights have just flushed."""
        if type(tokens) is list and len(tokens) <= 16 and all(type(t) is int for t in tokens):
            for i, t in enumerate(tokens):
                if not 0 <= t < self.n_vocab:
                    raise self._out_of_range(t, i)
            return np.array(tokens, dtype=np.int32)
        arr = np.asarray(tokens)
        if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
            raise EdgeArgumentError("EDGE_ERR_INVALID_ARG", "tokens must be a 1-D sequence of integer ids")
        bad = np.flatnonzero((arr < 0) | (arr >= self.n_vocab))
        if bad.size:
            raise self._out_of_range(int(arr[bad[0]]), int(bad[0]))
        return np.ascontiguousarray(arr, dtype=np.int32)

    def _out_of_range(self, token: int, index: int) -> EdgeRangeError:
        return EdgeRangeError(
            "EDGE_ERR_RANGE", f"token id {token} at index {index} is out of range (n_vocab {self.n_vocab})"
        )

    def reset(self) -> None:
        """Forget the cached sequence."""
        check(lib.edge_context_truncate(self._require_open(), 0))
        self._tokens = []

    def truncate(self, n_past: int) -> None:
        """Keep only the first ``n_past`` cached tokens."""
        check(lib.edge_context_truncate(self._require_open(), int(n_past)))
        self._tokens = self._tokens[: int(n_past)]

    def eval(
        self,
        tokens: Sequence[int],
        all_logits: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Append ``tokens`` to the cached sequence; return the logits of the last token ([n_vocab]) or,
        with ``all_logits``, of every new token ([len(tokens), n_vocab]). float32.

        Runs in chunks of ``n_batch`` tokens (one native call each), so Ctrl-C takes effect between
        chunks; ``progress(done, total)`` is called after each. A rejected call (bad id, no room)
        changes nothing; an interrupted one keeps the chunks already evaluated."""
        ctx = self._require_open()
        ids = self._checked_ids(tokens)
        n = int(ids.size)
        if n == 0:
            raise EdgeArgumentError("EDGE_ERR_INVALID_ARG", "eval: no tokens")
        if len(self._tokens) + n > self.n_ctx:
            raise EdgeRangeError(
                "EDGE_ERR_RANGE",
                f"context overflow: {len(self._tokens)} cached + {n} new tokens exceed n_ctx {self.n_ctx}",
            )
        out = np.empty((n if all_logits else 1, self.n_vocab), dtype=np.float32)
        for start in range(0, n, self.n_batch):
            chunk = ids[start : start + self.n_batch]
            last = start + chunk.size == n
            if all_logits:
                dst = ffi.from_buffer("float[]", out[start : start + chunk.size])
            else:
                dst = ffi.from_buffer("float[]", out) if last else ffi.NULL
            check(
                lib.edge_context_eval(
                    ctx, ffi.from_buffer("int32_t[]", chunk), chunk.size, dst, int(all_logits)
                )
            )
            self._tokens.extend(chunk.tolist())
            if progress is not None:
                progress(start + chunk.size, n)
        return out if all_logits else out[0]

    def logits(self, tokens: Sequence[int]) -> np.ndarray:
        """Logits of every position of ``tokens`` evaluated from an empty context: float32 [T, n_vocab]."""
        self.reset()
        return self.eval(tokens, all_logits=True)

    def save_state(self) -> bytes:
        """The KV cache and position, for :meth:`load_state` (prompt reuse); layout in edge.state."""
        from edge.state import pack_state

        ctx = self._require_open()
        size = ffi.new("uint64_t *")
        check(lib.edge_context_state_size(ctx, size))
        buf = bytearray(int(size[0]))
        check(lib.edge_context_state_save(ctx, ffi.from_buffer(buf), len(buf)))
        return pack_state(self._tokens, buf)

    def load_state(self, state: bytes) -> None:
        """Restore a :meth:`save_state` of this model. The header is checked first (version, token count
        <= n_ctx, ids < n_vocab), then the engine checks its KV state; an error leaves the cache as it
        was, except that a KV state whose length disagrees with the token header empties the cache."""
        from edge._native import EdgeFormatError
        from edge.state import unpack_state

        ctx = self._require_open()
        tokens, body = unpack_state(state, self.hparams.n_vocab, self.n_ctx)
        check(lib.edge_context_state_load(ctx, ffi.from_buffer(body), len(body)))
        n_past = self.n_past
        if n_past != len(tokens):
            self.reset()
            raise EdgeFormatError(
                "EDGE_ERR_FORMAT",
                f"load_state: the KV state holds {n_past} positions but the header {len(tokens)} tokens "
                "(the cache was emptied)",
            )
        self._tokens = tokens

    def _eval_prompt(self, ids: list[int]) -> tuple[np.ndarray, int]:
        """Evaluate ``ids`` reusing the longest cached prefix: (last token's logits, tokens evaluated)."""
        if not ids:
            raise EdgeArgumentError("EDGE_ERR_INVALID_ARG", "the prompt is empty")
        if len(ids) > self.n_ctx:
            raise EdgeRangeError(
                "EDGE_ERR_RANGE", f"prompt of {len(ids)} tokens exceeds the context of {self.n_ctx} tokens"
            )
        common = 0
        for a, b in zip(self._tokens, ids, strict=False):
            if a != b:
                break
            common += 1
        common = min(common, len(ids) - 1)  # the last prompt token is always evaluated: its logits are needed
        self.truncate(common)
        todo = ids[common:]
        if not (self.verbose and len(todo) > self.n_batch):
            return self.eval(todo), len(todo)
        from tqdm import tqdm  # long prompts show progress when verbose

        with tqdm(total=len(todo), unit="tok", desc="prompt", leave=False) as bar:
            logits = self.eval(todo, progress=lambda done, _total: bar.update(done - bar.n))
        return logits, len(todo)

    # -- generation ----------------------------------------------------------------------------------

    def stream(
        self,
        prompt: str | Sequence[int],
        max_tokens: int = 128,
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
    ) -> Iterator[str]:
        """Generate text for ``prompt`` (text or token ids), yielding pieces as they are final.

        Stops at EOS, after ``max_tokens``, when the context is full, or at a ``stop`` string (which is
        not returned; text that might begin a stop string is held back until it is known not to)."""
        from edge.sampling import Sampler, SamplingParams, StopMatcher

        ids = self.tokenize(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        stops = StopMatcher([stop] if isinstance(stop, str) else list(stop or []))
        sampler = Sampler(
            SamplingParams(
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
        )
        tok = self._require_tokenizer()
        decoder = tok.stream_decoder(continuation=True)
        stats = RunStats()
        self.last_stats = stats
        t0 = time.perf_counter()
        logits, stats.prompt_tokens = self._eval_prompt(ids)
        stats.prompt_seconds = time.perf_counter() - t0
        history = list(ids)
        t1 = time.perf_counter()
        for i in range(max(0, int(max_tokens))):
            token = int(sampler.sample(logits, history))
            if token == tok.eos_id:
                break
            history.append(token)
            stats.decode_tokens += 1
            text, stopped = stops.feed(decoder.feed(token))
            if text:
                yield text
            if stopped:
                stats.decode_seconds = time.perf_counter() - t1
                return
            if i + 1 == max_tokens or len(self._tokens) >= self.n_ctx:
                break
            logits = self.eval([token])
            stats.decode_seconds = time.perf_counter() - t1
        text, _ = stops.feed(decoder.flush())
        text += stops.flush()
        stats.decode_seconds = time.perf_counter() - t1
        if text:
            yield text

    def generate(self, prompt: str | Sequence[int], max_tokens: int = 128, **kwargs: Any) -> str:
        """The whole generated text (see :meth:`stream` for the parameters)."""
        return "".join(self.stream(prompt, max_tokens=max_tokens, **kwargs))

    def generate_tokens(self, prompt: Sequence[int], max_tokens: int, **kwargs: Any) -> list[int]:
        """Token ids generated after ``prompt`` (greedy with temperature=0), without detokenizing."""
        from edge.sampling import Sampler, SamplingParams

        sampler = Sampler(SamplingParams(**kwargs))
        ids = [int(t) for t in prompt]
        logits, _ = self._eval_prompt(ids)
        out: list[int] = []
        for i in range(max_tokens):
            token = int(sampler.sample(logits, ids + out))
            out.append(token)
            if i + 1 < max_tokens and len(self._tokens) < self.n_ctx:
                logits = self.eval([token])
            elif i + 1 < max_tokens:
                break
        return out

"""`edge.Model`: load a Grok GGUF and run it (tokenize, logits, generate, stream).

A friendly layer over the C engine (edge.h's engine section through edge._native), shaped like
llama-cpp-python's ``Llama`` where that is sensible::

    with edge.Model("grok-1-Q4_K_M.gguf") as model:
        print(model.generate("The answer to life the universe and everything is of course", max_tokens=32))

One Model holds one context (KV cache) for one sequence. The tokens already in the cache are remembered,
so a new prompt sharing a prefix with the previous one only evaluates the rest.

Threads: a Model may be shared. Every call that uses the context holds the Model's lock, so calls run one
at a time: by default a second caller blocks until the first is done (``on_busy="error"``: it gets an
:class:`~edge._native.EdgeBusyError` at once instead). ``generate`` holds the lock for the whole
generation, so concurrent ``generate`` calls give exactly their sequential results. A ``stream`` holds it
only while it evaluates (not while its consumer holds a piece), so other calls may run between two pieces;
a stream whose sequence was replaced meanwhile re-evaluates its own tokens (reusing any common prefix)
before it goes on: it never continues another sequence. ``close()`` cancels the call in progress, waits
for it to stop (within one layer of the forward pass) and only then frees the context. ``cancel()`` or a
:class:`~edge.cancel.CancelToken` stop a call from another thread or an asyncio task. For parallel
sequences, use one Model (one context) per sequence: the weights are memory-mapped, so the OS shares
their pages between Models of the same file.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge._native import (
    EdgeArgumentError,
    EdgeBusyError,
    EdgeCancelledError,
    EdgeRangeError,
    check,
    ffi,
    last_error,
    lib,
)
from edge.cancel import CancelToken
from edge.context_params import KV_TYPES as KV_TYPES
from edge.context_params import ContextParams, free_handles, open_context
from edge.context_params import Hparams as Hparams
from edge.devices import context_gpu_info
from edge.experts import CacheStats, read_stats

ON_BUSY = ("block", "error")
# Why a generation ended: EOS or a stop string, max_tokens, a full context, a cancel request.
FINISH_REASONS = ("stop", "length", "context", "cancelled")


@dataclass
class RunStats:
    """One generate/stream call: ``prompt_tokens`` the whole prompt (reused cached prefix included), of
    which ``prompt_tokens_evaluated`` were run through the model; tokens generated; timings; and
    ``finish_reason`` ("stop": EOS or a stop string, "length": max_tokens, "context": the context is full,
    "cancelled"; "" while running)."""

    prompt_tokens: int = 0
    prompt_seconds: float = 0.0
    decode_tokens: int = 0
    decode_seconds: float = 0.0
    prompt_tokens_evaluated: int = 0
    finish_reason: str = ""

    @property
    def prompt_tokens_reused(self) -> int:
        return self.prompt_tokens - self.prompt_tokens_evaluated

    @property
    def prompt_tokens_per_second(self) -> float:
        return self.prompt_tokens_evaluated / self.prompt_seconds if self.prompt_seconds > 0 else 0.0

    @property
    def decode_tokens_per_second(self) -> float:
        return self.decode_tokens / self.decode_seconds if self.decode_seconds > 0 else 0.0

    def summary(self) -> str:
        return (
            f"prompt: {self.prompt_tokens} tok, {self.prompt_tokens_per_second:.2f} tok/s | "
            f"decode: {self.decode_tokens} tok, {self.decode_tokens_per_second:.2f} tok/s"
        )


class Model:
    """A Grok model from a GGUF file and one inference context over it.

    ``n_ctx``: the context in tokens; 0 (default) is the model's own context length, a larger value is
    clamped to it (with a warning), a negative one rejected. ``n_threads``: None or 0 picks the engine's
    default (one per core, one thread for a model whose token is too small to split); more than the
    machine's cores warns. ``kv_type``: "f16" (default), "q8_0" (half the memory) or "f32" (exact);
    ``isa`` forces a CPU kernel path ("scalar", "avx2", "avx512", "neon", "neon_dotprod"; "auto" picks
    the best this CPU runs). ``on_busy``: what a call does while another thread's call uses the context:
    "block" (default, wait for it) or "error" (raise EdgeBusyError at once). See the module docstring for
    the threading model.

    ``expert_cache`` ("8GiB", a byte count, or None: every expert read through the mapping) keeps the
    experts in a RAM cache of that size, read from the file as needed (``expert_policy`` "lfu", frequency
    with decay, or "lru"; ``prefetch`` predicts the next layer's experts and reads them ahead); the logits
    are the same bits either way. A budget below the minimum (one layer's selected experts, plus as many
    prefetch slots) is a ValueError naming the minimum. ``trace_experts`` writes every token's routing to
    that file (JSON lines, see edge.h).

    ``device``: "auto" (default: a usable CUDA GPU, one with room for the dense weights and KV cache, else
    the CPU), "cpu", or "cuda" (an error naming why when there is none). ``gpu_memory`` ("20GiB", a byte
    count; None: all free device memory less a margin) bounds the device memory: the dense weights, KV
    cache and buffers, then as many experts as fit; the others run on the CPU (hybrid). ``self.device``
    tells where the context runs."""

    def __init__(
        self,
        path: str | Path,
        n_threads: int | None = None,
        n_ctx: int = 0,
        n_batch: int = 512,
        kv_type: str = "f16",
        seed: int | None = None,
        verbose: bool = False,
        isa: str = "auto",
        expert_cache: str | int | None = None,
        expert_policy: str = "lfu",
        prefetch: bool = True,
        trace_experts: str | Path | None = None,
        on_busy: str = "block",
        device: str = "auto",
        gpu_memory: str | int | None = None,
    ) -> None:
        self.path = str(path)
        self.expert_cache = expert_cache
        self.verbose = verbose
        self.seed = seed
        self._model: Any = ffi.NULL
        self._ctx: Any = ffi.NULL
        # _lock serializes every use of the context (reentrant: generate evaluates through eval);
        # _handle_lock guards the handles and the active call's token for cancel() and close().
        self._lock = threading.RLock()
        self._handle_lock = threading.Lock()
        self._active: CancelToken | None = None  # the token of the call holding _lock
        self._depth = 0  # _lock's recursion depth, by its owner
        self._owner: int | None = None  # the thread holding _lock
        self._live: set[CancelToken] = set()  # tokens of the generations not finished (cancel())
        self._closing = False
        self._seq = 0  # bumped whenever the cached sequence changes (streams check it)
        if on_busy not in ON_BUSY:
            raise EdgeArgumentError("EDGE_ERR_INVALID_ARG", f"on_busy {on_busy!r}: use one of {ON_BUSY}")
        self.on_busy = on_busy
        opened = open_context(
            self.path,
            ContextParams(
                n_ctx=n_ctx,
                n_batch=n_batch,
                n_threads=n_threads,
                kv_type=kv_type,
                isa=isa,
                expert_cache=expert_cache,
                expert_policy=expert_policy,
                prefetch=prefetch,
                trace_experts=trace_experts,
                device=device,
                gpu_memory=gpu_memory,
            ),
        )
        self._model, self._ctx, self.hparams = opened.model, opened.ctx, opened.hparams
        self.n_ctx, self.n_batch, self.n_threads = opened.n_ctx, opened.n_batch, opened.n_threads
        self.kv_type = kv_type.lower()
        self.device = opened.device
        try:
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
                f"{h.n_expert} experts (top {h.n_expert_used}), vocab {h.n_vocab}, n_ctx {self.n_ctx}, "
                f"{self.n_threads} threads"
            )

    @property
    def _tokens(self) -> list[int]:
        return self._cached

    @_tokens.setter
    def _tokens(self, value: list[int]) -> None:
        self._cached = value
        self._seq += 1

    def _load_tokenizer(self) -> Any:
        from edge.gguf import GGUFFile
        from edge.tokenizer import Tokenizer

        with GGUFFile(self.path) as g:
            if "tokenizer.ggml.tokens" not in g.metadata:
                return None
            return Tokenizer.from_gguf(g)

    # -- lifetime ------------------------------------------------------------------------------------

    def close(self) -> None:
        """Free the context and unmap the model (also done by ``with`` and at garbage collection).

        A call in progress on another thread is cancelled (it raises ValueError: the model is closed) and
        waited for: nothing is freed under it. Calling close() from inside a call on this model (a
        progress callback) raises RuntimeError."""
        if self._owner == threading.get_ident() and self._depth > 0:
            raise RuntimeError(f"{self.path}: close() from inside a call on this model")
        with self._handle_lock:
            self._closing = True
            if self._ctx != ffi.NULL:
                lib.edge_context_set_cancel(self._ctx, 1)  # stop the call in progress, if any
        with self._lock, self._handle_lock:  # waits for that call to return
            free_handles(self._model, self._ctx)
            self._model = self._ctx = ffi.NULL

    def cache_stats(self) -> CacheStats:
        """The expert store's counters: hit rate, bytes read per token, prefetch accuracy, I/O stall."""
        self._require_open()
        return read_stats(self._model)

    def gpu_info(self) -> dict[str, Any]:
        """What the context placed in device memory (zeros on the CPU): see edge.h's edge_gpu_info."""
        self._require_open()
        return context_gpu_info(self._ctx)

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
        if self._ctx == ffi.NULL or self._closing:
            raise ValueError(f"{self.path}: model is closed")
        return self._ctx

    # -- serialized use, cancellation ---------------------------------------------------------------

    @contextlib.contextmanager
    def _using(self, cancel: CancelToken | None = None) -> Iterator[CancelToken]:
        """Hold the context for a call: the lock (blocking, or EdgeBusyError with on_busy="error"), and
        the call's cancel token (``cancel`` or a new one; a nested call shares its caller's)."""
        if not self._lock.acquire(blocking=self.on_busy == "block"):
            raise EdgeBusyError(
                "EDGE_ERR_STATE",
                f"{self.path}: the model is busy with a call on another thread (on_busy='error'; "
                "on_busy='block' waits instead, or use one Model per thread)",
            )
        outer = self._depth == 0
        self._depth += 1
        self._owner = threading.get_ident()
        token = self._active if not outer and self._active is not None else cancel or CancelToken()

        def hook() -> None:
            self._cancel_native(token)

        try:
            self._require_open()
            if outer:
                with self._handle_lock:
                    self._active = token
                    lib.edge_context_set_cancel(self._ctx, 0)  # a request meant for an earlier call
                token._attach(hook)
            yield token
        finally:
            if outer:
                token._detach(hook)
                with self._handle_lock:
                    self._active = None
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
            self._lock.release()

    def _cancel_native(self, token: CancelToken) -> None:
        """Tell the engine to stop, if ``token``'s call is the one running."""
        with self._handle_lock:
            if self._active is token and self._ctx != ffi.NULL:
                lib.edge_context_set_cancel(self._ctx, 1)

    def cancel(self) -> None:
        """Stop the call in progress and every unfinished generation of this Model (from any thread or
        an asyncio task; returns at once). The engine stops within one layer of the forward pass; a
        generation then ends with finish_reason "cancelled", an eval raises EdgeCancelledError."""
        with self._handle_lock:
            tokens = [t for t in (self._active, *self._live) if t is not None]
        for t in tokens:
            t.cancel()

    def _closed_error(self) -> ValueError:
        return ValueError(f"{self.path}: model is closed (by close() during this call)")

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
        with self._using():
            check(lib.edge_context_n_past(self._ctx, out))
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
        with self._using():
            check(lib.edge_context_truncate(self._ctx, 0))
            self._tokens = []

    def truncate(self, n_past: int) -> None:
        """Keep only the first ``n_past`` cached tokens."""
        with self._using():
            check(lib.edge_context_truncate(self._ctx, int(n_past)))
            self._tokens = self._tokens[: int(n_past)]

    def _native_eval(self, ctx: Any, chunk: np.ndarray, dst: Any, all_logits: bool) -> tuple[int, str]:
        """One edge_context_eval call: (status, the error message of the thread that ran it). On the main
        thread a batch runs on a helper thread while the main thread waits, so Ctrl-C (KeyboardInterrupt,
        delivered only to the main thread, between Python bytecodes) cancels it within one layer instead
        of after the whole chunk. The helper is always waited for (or never starts): the context is not
        left to a running evaluation."""
        ids = ffi.from_buffer("int32_t[]", chunk)

        def call() -> tuple[int, str]:
            status = int(lib.edge_context_eval(ctx, ids, chunk.size, dst, int(all_logits)))
            return status, (last_error() if status != lib.EDGE_OK else "")

        if chunk.size == 1 or threading.current_thread() is not threading.main_thread():
            return call()
        result: list[tuple[int, str]] = []
        done = threading.Event()
        gate = threading.Lock()
        state = {"running": False, "abandoned": False}

        def run() -> None:
            try:
                with gate:
                    if state["abandoned"]:
                        return
                    state["running"] = True
                result.append(call())
            finally:
                done.set()

        worker = threading.Thread(target=run, name="edge-eval", daemon=True)
        try:
            worker.start()
            done.wait()
        except KeyboardInterrupt:
            # (not Thread.join: in Python 3.11 a join interrupted by a signal can mark a running thread
            # as stopped, bpo-45274)
            with gate:
                state["abandoned"] = not state["running"]
                running = state["running"]
            if running:
                with self._handle_lock:
                    lib.edge_context_set_cancel(ctx, 1)
                while not done.is_set():
                    with contextlib.suppress(KeyboardInterrupt):
                        done.wait()
            raise
        return result[0]

    def eval(
        self,
        tokens: Sequence[int],
        all_logits: bool = False,
        progress: Callable[[int, int], None] | None = None,
        cancel: CancelToken | None = None,
    ) -> np.ndarray:
        """Append ``tokens`` to the cached sequence; return the logits of the last token ([n_vocab]) or,
        with ``all_logits``, of every new token ([len(tokens), n_vocab]). float32.

        Runs in chunks of ``n_batch`` tokens (one native call each); ``progress(done, total)`` is called
        after each. A rejected call (bad id, no room) changes nothing. ``cancel`` (or :meth:`cancel`, or
        Ctrl-C on the main thread) stops it within one layer: EdgeCancelledError (KeyboardInterrupt for
        Ctrl-C), keeping the chunks evaluated before the one stopped."""
        with self._using(cancel) as token:
            return self._eval_locked(tokens, all_logits, progress, token)

    def _eval_locked(
        self,
        tokens: Sequence[int],
        all_logits: bool,
        progress: Callable[[int, int], None] | None,
        token: CancelToken,
    ) -> np.ndarray:
        ctx = self._ctx
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
            if token.cancelled:
                raise EdgeCancelledError("EDGE_ERR_CANCELLED", "evaluation cancelled")
            status, message = self._native_eval(ctx, chunk, dst, all_logits)
            if status == lib.EDGE_ERR_CANCELLED and self._closing:
                raise self._closed_error()
            check(status, message)
            self._tokens.extend(chunk.tolist())
            self._seq += 1
            if progress is not None:
                progress(start + chunk.size, n)
        return out if all_logits else out[0]

    def logits(self, tokens: Sequence[int]) -> np.ndarray:
        """Logits of every position of ``tokens`` evaluated from an empty context: float32 [T, n_vocab]."""
        with self._using():
            self.reset()
            return self.eval(tokens, all_logits=True)

    def save_state(self) -> bytes:
        """The KV cache and position, for :meth:`load_state` (prompt reuse); layout in edge.state."""
        from edge.state import pack_state

        with self._using():
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

        tokens, body = unpack_state(state, self.hparams.n_vocab, self.n_ctx)
        with self._using():
            ctx = self._require_open()
            check(lib.edge_context_state_load(ctx, ffi.from_buffer(body), len(body)))
            n_past = self.n_past
            if n_past != len(tokens):
                self.reset()
                raise EdgeFormatError(
                    "EDGE_ERR_FORMAT",
                    f"load_state: the KV state holds {n_past} positions but the header {len(tokens)} "
                    "tokens (the cache was emptied)",
                )
            self._tokens = tokens

    def _eval_prompt(self, ids: list[int], token: CancelToken | None = None) -> tuple[np.ndarray, int]:
        """Evaluate ``ids`` reusing the longest cached prefix: (last token's logits, tokens evaluated)."""
        if not ids:
            raise EdgeArgumentError("EDGE_ERR_INVALID_ARG", "the prompt is empty")
        if len(ids) > self.n_ctx:
            raise EdgeRangeError(
                "EDGE_ERR_RANGE", f"prompt of {len(ids)} tokens exceeds the context of {self.n_ctx} tokens"
            )
        with self._using(token):
            common = 0
            for a, b in zip(self._tokens, ids, strict=False):
                if a != b:
                    break
                common += 1
            common = min(common, len(ids) - 1)  # the last prompt token is always evaluated: its logits
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
        """Generate text for ``prompt`` (text or token ids), yielding pieces as they are final.

        Stops at EOS, after ``max_tokens`` (None: until the context is full), when the context is full,
        at a ``stop`` string (which is not returned; text that might begin a stop string is held back
        until it is known not to), or when cancelled (``cancel``, :meth:`cancel`): the returned
        :class:`Generation` then has ``finish_reason`` "stop", "length", "context" or "cancelled" and its
        ``stats`` (also ``last_stats``). The parameters are checked here, before any work (see
        :func:`edge.sampling.validate_params` for the ranges)."""
        from edge.sampling import SamplingParams
        from edge.stream_loop import stream_setup

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
            raise EdgeArgumentError("EDGE_ERR_INVALID_ARG", "the prompt is empty")
        token = cancel or CancelToken()
        stats = RunStats()
        pieces = self._generate_pieces(ids, sampler, stops, limit, token, stats)
        return Generation(pieces, stats, token)

    def _generate_pieces(
        self,
        ids: list[int],
        sampler: Any,
        stops: Any,
        max_tokens: int,
        token: CancelToken,
        stats: RunStats,
    ) -> Iterator[str]:
        """The generation loop (edge.stream_loop) over _ContextSteps, which hold the context only while
        evaluating; a generation not finished is cancelled by :meth:`cancel`."""
        from edge.stream_loop import generate_pieces

        tok = self._require_tokenizer()
        with self._handle_lock:
            self._live.add(token)
        try:
            self.last_stats = stats
            steps = _ContextSteps(self, token)
            yield from generate_pieces(steps, tok, ids, sampler, stops, max_tokens, self.n_ctx, token, stats)
        finally:
            with self._handle_lock:
                self._live.discard(token)

    def generate(self, prompt: str | Sequence[int], max_tokens: int | None = 128, **kwargs: Any) -> str:
        """The whole generated text (see :meth:`stream` for the parameters; ``last_stats`` tells why it
        ended). Holds the model for the whole generation: concurrent calls run one after another."""
        gen = self.stream(prompt, max_tokens=max_tokens, **kwargs)
        with self._using(gen.token):
            return "".join(gen)

    def generate_tokens(self, prompt: Sequence[int], max_tokens: int, **kwargs: Any) -> list[int]:
        """Token ids generated after ``prompt`` (greedy with temperature=0), without detokenizing."""
        from edge.sampling import Sampler, SamplingParams, sample_tokens, validate_params

        params = SamplingParams(**kwargs)
        validate_params(params, self.n_vocab)
        sampler = Sampler(params)
        ids = [int(t) for t in prompt]
        with self._using():
            logits, _ = self._eval_prompt(ids)
            room = lambda: len(self._tokens) < self.n_ctx  # noqa: E731
            return sample_tokens(sampler, logits, ids, max_tokens, room, lambda t: self.eval([t]))


class _ContextSteps:
    """A Model generation's evaluation (edge.stream_loop.Steps). It holds the context only while
    evaluating; when another call changed the cached sequence since this generation's last step
    (``_seq``), it first re-evaluates its own tokens, reusing the common prefix, so it always continues
    its own sequence."""

    def __init__(self, model: Model, token: CancelToken) -> None:
        self.model, self.token = model, token
        self.seq = -1  # the model's _seq after this generation's last evaluation

    def prompt(self, ids: list[int]) -> tuple[np.ndarray, int]:
        m = self.model
        with m._using(self.token):
            out = m._eval_prompt(ids)
            self.seq = m._seq
        return out

    def step(self, history: list[int], token: int) -> np.ndarray:
        m = self.model
        with m._using(self.token):
            if m._seq != self.seq:  # another call used the context: back to this sequence
                logits, _ = m._eval_prompt(history)
            else:
                logits = m.eval([token])
            self.seq = m._seq
        return logits


class Generation(Iterator[str]):
    """The pieces of one generation (:meth:`Model.stream`), with ``stats`` (RunStats) and, once it has
    ended, ``finish_reason``. ``cancel()`` stops it (as its ``token`` does)."""

    def __init__(self, pieces: Iterator[str], stats: RunStats, token: CancelToken) -> None:
        self._pieces = pieces
        self.stats = stats
        self.token = token

    @property
    def finish_reason(self) -> str:
        return self.stats.finish_reason

    def cancel(self) -> None:
        self.token.cancel()

    def __iter__(self) -> Generation:
        return self

    def __next__(self) -> str:
        return next(self._pieces)

    def close(self) -> None:
        """Stop early (as abandoning the iterator does)."""
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()

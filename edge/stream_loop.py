"""The generation loop of ``stream()``, shared by :class:`edge.Model` and edge.onnx's ``OnnxModel``: sample
a token from the last logits, decode it, apply the stop strings, the token budget, the context limit and
cancellation, and evaluate the token. How tokens are evaluated is the model's part, a :class:`Steps`:
Model's holds its lock and returns to its own sequence when another call replaced it; OnnxModel's runs
onnxruntime. :func:`stream_setup` checks stream's parameters for both.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edge._native import EdgeArgumentError, EdgeCancelledError
from edge.cancel import CancelToken
from edge.sampling import Sampler, SamplingParams, StopMatcher, validate_params

if TYPE_CHECKING:
    from edge.model import RunStats


class Steps(Protocol):
    """How one generation evaluates its tokens. Either call may raise EdgeCancelledError: the generation
    then ends with finish_reason "cancelled"."""

    def prompt(self, ids: list[int]) -> tuple[np.ndarray, int]:
        """Evaluate the prompt ``ids`` (reusing a cached prefix): its last token's logits, and how many
        of its tokens were evaluated."""
        ...

    def step(self, history: list[int], token: int) -> np.ndarray:
        """Evaluate ``token``, the last of ``history`` (prompt and generated tokens): its logits."""
        ...


def stream_setup(
    n_vocab: int,
    n_ctx: int,
    max_tokens: int | None,
    stop: str | Sequence[str] | None,
    params: SamplingParams,
) -> tuple[Sampler, StopMatcher, int]:
    """Check stream's parameters (EdgeArgumentError; see :func:`edge.sampling.validate_params` for the
    ranges): the sampler, the stop matcher, and the token limit (``max_tokens``; None: ``n_ctx``)."""
    if max_tokens is not None and (isinstance(max_tokens, bool) or int(max_tokens) != max_tokens):
        raise EdgeArgumentError("EDGE_ERR_INVALID_ARG", f"max_tokens must be an integer: {max_tokens!r}")
    if max_tokens is not None and max_tokens < 0:
        raise EdgeArgumentError("EDGE_ERR_INVALID_ARG", f"max_tokens {max_tokens} must be >= 0 (or None)")
    try:
        validate_params(params, n_vocab)
    except ValueError as exc:
        raise EdgeArgumentError("EDGE_ERR_INVALID_ARG", str(exc)) from None
    if isinstance(stop, str):
        stop = [stop]
    limit = n_ctx if max_tokens is None else int(max_tokens)
    return Sampler(params), StopMatcher(list(stop or [])), limit


def generate_pieces(
    steps: Steps,
    tokenizer: Any,
    ids: list[int],
    sampler: Sampler,
    stops: StopMatcher,
    max_tokens: int,
    n_ctx: int,
    token: CancelToken,
    stats: RunStats,
) -> Iterator[str]:
    """The pieces of text generated after the prompt ``ids``, as they are final, until EOS, a stop
    string, ``max_tokens`` tokens, a full context (``n_ctx``) or ``token``'s cancel; ``stats`` gets the
    counts, timings and finish_reason."""
    decoder = tokenizer.stream_decoder(continuation=True)
    stats.prompt_tokens = len(ids)
    if token.cancelled:
        stats.finish_reason = "cancelled"
        return
    t0 = time.perf_counter()
    try:
        logits, stats.prompt_tokens_evaluated = steps.prompt(ids)
    except EdgeCancelledError:
        stats.finish_reason = "cancelled"
        return
    stats.prompt_seconds = time.perf_counter() - t0
    history = list(ids)
    t1 = time.perf_counter()
    reason = "length"
    for i in range(max_tokens):
        new = int(sampler.sample(logits, history))
        if new == tokenizer.eos_id:
            reason = "stop"
            break
        history.append(new)
        stats.decode_tokens += 1
        text, stopped = stops.feed(decoder.feed(new))
        if text:
            yield text
        if stopped:
            stats.decode_seconds = time.perf_counter() - t1
            stats.finish_reason = "stop"
            return
        if i + 1 == max_tokens:
            break
        if len(history) > n_ctx:  # the cache is full: no room for the token just drawn
            reason = "context"
            break
        if token.cancelled:
            reason = "cancelled"
            break
        try:
            logits = steps.step(history, new)
        except EdgeCancelledError:
            reason = "cancelled"
            break
        stats.decode_seconds = time.perf_counter() - t1
    text, _ = stops.feed(decoder.flush())
    text += stops.flush()
    stats.decode_seconds = time.perf_counter() - t1
    stats.finish_reason = reason
    if text:
        yield text

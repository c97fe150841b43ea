"""One sequence's generation state, independent of how its tokens are evaluated: feed it the logits of
each step, it samples the next token, decodes text, applies stop strings, the token budget and the
context limit, and records logprobs. ``edge.Llama`` drives one; the server's scheduler drives one per
active slot, all evaluated together (edge.batch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.sampling import Sampler, SamplingParams, StopMatcher


@dataclass
class GenerationParams:
    """What a completion request asks for (OpenAI / llama-cpp-python names)."""

    max_tokens: int | None = 16  # None or <= 0: until EOS, a stop string or the end of the context
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: dict[int, float] | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    logprobs: int | None = None  # record each token's logprob and this many top alternatives


@dataclass
class TokenLogprob:
    token: int
    text: str
    logprob: float
    top: dict[str, float]


class Generation:
    """Sampling state of one sequence after its prompt: call :meth:`step` with the logits of the last
    evaluated token; it returns the text that is final now. When ``finish_reason`` is set ("stop" or
    "length") the generation is over; otherwise ``next_token`` must be evaluated next."""

    def __init__(self, tokenizer: Any, prompt_ids: list[int], params: GenerationParams, n_ctx: int) -> None:
        self.tokenizer = tokenizer
        self.prompt_ids = list(prompt_ids)
        self.params = params
        self.n_ctx = n_ctx
        self.sampler = Sampler(
            SamplingParams(
                temperature=params.temperature,
                top_k=params.top_k,
                top_p=params.top_p,
                min_p=params.min_p,
                repeat_penalty=params.repeat_penalty,
                frequency_penalty=params.frequency_penalty,
                presence_penalty=params.presence_penalty,
                logit_bias=dict(params.logit_bias or {}),
                seed=params.seed,
            )
        )
        self.decoder = tokenizer.stream_decoder(continuation=True)
        self.stops = StopMatcher(list(params.stop))
        self.history = list(prompt_ids)
        self.completion_ids: list[int] = []
        self.logprobs: list[TokenLogprob] = []
        self.finish_reason: str | None = None
        self.next_token: int | None = None
        self.text = ""  # all text returned so far

    def _limit(self) -> int:
        budget = self.n_ctx - len(self.prompt_ids) + 1  # the last generated token is never evaluated
        m = self.params.max_tokens
        return budget if m is None or m <= 0 else min(m, budget)

    def _finish(self, reason: str) -> str:
        self.finish_reason = reason
        self.next_token = None
        text, _ = self.stops.feed(self.decoder.flush())
        return text + self.stops.flush()

    def _record_logprob(self, logits: np.ndarray, token: int) -> None:
        x = logits.astype(np.float64)
        lse = float(np.log(np.exp(x - x.max()).sum()) + x.max())
        n_top = max(0, int(self.params.logprobs or 0))
        top: dict[str, float] = {}
        if n_top:
            ids = np.argpartition(-x, min(n_top, x.size - 1))[:n_top]
            for t in sorted(ids.tolist(), key=lambda t: -x[t]):
                top[self._piece(t)] = float(x[t] - lse)
        self.logprobs.append(TokenLogprob(token, self._piece(token), float(x[token] - lse), top))

    def _piece(self, token: int) -> str:
        """A token's text for logprobs: its piece; a byte that is not text alone as "bytes:\\xNN" (OpenAI's
        form), a control token as its name ("[EOS]"), so distinct tokens get distinct keys."""
        raw = bytes(self.tokenizer.token_to_piece(int(token)))
        if not raw:
            return str(self.tokenizer.piece(int(token)))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)

    def step(self, logits: np.ndarray) -> str:
        if self.finish_reason is not None:
            return ""
        if self._limit() <= 0:
            return self._finish("length")
        token = int(self.sampler.sample(logits, self.history))
        if self.params.logprobs is not None:
            self._record_logprob(logits, token)
        if token == self.tokenizer.eos_id:
            out = self._finish("stop")
        else:
            self.history.append(token)
            self.completion_ids.append(token)
            out, stopped = self.stops.feed(self.decoder.feed(token))
            if stopped:
                self.finish_reason = "stop"
                self.next_token = None
            elif len(self.completion_ids) >= self._limit():
                out += self._finish("length")
            else:
                self.next_token = token
        self.text += out
        return out

    def cancel(self, reason: str = "stop") -> None:
        """End the generation without flushing held text (a client gone, a timeout)."""
        self.finish_reason = reason
        self.next_token = None

"""Token sampling (llama.cpp's sampler chain order) and stop-string matching for streamed text.

Order of one ``Sampler.sample`` call, as in llama.cpp's default chain:

    logit bias → penalties (repeat, frequency, presence) → top-k → top-p → min-p → temperature
    → softmax → draw

- logit bias adds ``logit_bias[id]`` (``-inf`` bans a token);
- repeat penalty (CTRL paper, llama.cpp): a token seen in the last ``repeat_last_n`` tokens has a positive
  logit divided by ``repeat_penalty`` and a non-positive one multiplied by it;
- frequency/presence penalties (OpenAI):
  ``logit -= count * frequency_penalty + (count > 0) * presence_penalty`` over the same window;
- top-k keeps the k largest logits (k <= 0: off); top-p keeps the smallest set of most probable tokens whose
  probability reaches p (p >= 1: off); min-p keeps tokens with probability >= min_p × the largest (min_p <= 0:
  off). Top-p and min-p measure probabilities before temperature, like llama.cpp;
- temperature <= 0 is greedy: the argmax after bias and penalties (lowest id on ties).

Probabilities are computed in float64 from the float32 logits.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class SamplingParams:
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repeat_last_n: int = 64  # window of previous tokens the penalties look at (0: off, -1: all)
    logit_bias: dict[int, float] | None = None
    seed: int | None = None


def validate_params(p: SamplingParams, n_vocab: int | None = None) -> None:
    """Check every parameter against its range; ValueError naming the parameter, its range and the value.

    temperature >= 0 (0: greedy); top_k >= 0 (0: off); 0 < top_p <= 1 (1: off); 0 <= min_p <= 1 (0: off);
    repeat_penalty > 0 (1: off); -2 <= frequency_penalty, presence_penalty <= 2 (OpenAI's range);
    repeat_last_n >= -1 (-1: every previous token); logit_bias ids within the vocabulary, biases not NaN."""
    pen = (p.repeat_penalty, p.frequency_penalty, p.presence_penalty)
    checks: list[tuple[str, object, bool, str]] = [
        ("temperature", p.temperature, _real(p.temperature) and p.temperature >= 0, ">= 0 (0: greedy)"),
        ("top_k", p.top_k, _integer(p.top_k) and p.top_k >= 0, "an integer >= 0 (0: off)"),
        ("top_p", p.top_p, _real(p.top_p) and 0 < p.top_p <= 1, "in (0, 1] (1: off)"),
        ("min_p", p.min_p, _real(p.min_p) and 0 <= p.min_p <= 1, "in [0, 1] (0: off)"),
        ("repeat_penalty", pen[0], _real(pen[0]) and pen[0] > 0, "> 0 (1: off)"),
        ("frequency_penalty", pen[1], _real(pen[1]) and abs(pen[1]) <= 2, "in [-2, 2]"),
        ("presence_penalty", pen[2], _real(pen[2]) and abs(pen[2]) <= 2, "in [-2, 2]"),
        (
            "repeat_last_n",
            p.repeat_last_n,
            _integer(p.repeat_last_n) and p.repeat_last_n >= -1,
            "an integer >= -1 (-1: all, 0: off)",
        ),
    ]
    for name, value, ok, rule in checks:
        if not ok:
            raise ValueError(f"{name} must be {rule}, got {value!r}")
    for token, bias in (p.logit_bias or {}).items():
        if not _integer(token) or (n_vocab is not None and not 0 <= token < n_vocab):
            raise ValueError(f"logit_bias: token id {token!r} is not in 0..{(n_vocab or 0) - 1}")
        if not isinstance(bias, (int, float)) or bias != bias:
            raise ValueError(f"logit_bias: the bias of token {token} must be a number, got {bias!r}")


def _real(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and bool(np.isfinite(x))


def _integer(x: object) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


class Sampler:
    """Draws one token id from a logit vector; holds the random generator, so a seed fixes the sequence."""

    def __init__(self, params: SamplingParams | None = None) -> None:
        self.params = params if params is not None else SamplingParams()
        p = self.params
        if p.top_p <= 0.0:
            raise ValueError(f"top_p must be > 0 (>= 1 turns it off), got {p.top_p}")
        if p.min_p < 0.0 or p.min_p > 1.0:
            raise ValueError(f"min_p must be in [0, 1], got {p.min_p}")
        if p.repeat_penalty <= 0.0:
            raise ValueError(f"repeat_penalty must be > 0, got {p.repeat_penalty}")
        if p.repeat_last_n < -1:
            raise ValueError(f"repeat_last_n must be >= -1, got {p.repeat_last_n}")
        for name in ("temperature", "top_p", "min_p", "repeat_penalty", "frequency_penalty"):
            if not np.isfinite(getattr(p, name)):
                raise ValueError(f"{name} must be finite, got {getattr(p, name)}")
        if not np.isfinite(p.presence_penalty):
            raise ValueError(f"presence_penalty must be finite, got {p.presence_penalty}")
        self.rng = np.random.default_rng(p.seed)

    def adjusted_logits(self, logits: np.ndarray, previous_tokens: Sequence[int]) -> np.ndarray:
        """Float64 logits after logit bias and penalties (the input is not modified)."""
        if logits.ndim != 1 or logits.size == 0:
            raise ValueError(f"logits must be a non-empty 1-D array, got shape {logits.shape}")
        p = self.params
        n_vocab = logits.shape[0]
        out = logits.astype(np.float64, copy=True)
        if np.isnan(out).any():
            raise ValueError("logits contain NaN")
        if p.logit_bias:
            for token, bias in p.logit_bias.items():
                if not 0 <= token < n_vocab:
                    raise ValueError(f"logit_bias: token id {token} out of range for {n_vocab} tokens")
                out[token] += bias
        if p.repeat_last_n == 0 or len(previous_tokens) == 0:
            return out
        if p.repeat_penalty == 1.0 and p.frequency_penalty == 0.0 and p.presence_penalty == 0.0:
            return out
        window = previous_tokens if p.repeat_last_n == -1 else previous_tokens[-p.repeat_last_n :]
        counts = Counter(int(t) for t in window)
        ids = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
        if ids.min() < 0 or ids.max() >= n_vocab:
            raise ValueError(f"previous_tokens hold an id out of range for a vocabulary of {n_vocab}")
        count = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
        seen = out[ids]
        if p.repeat_penalty != 1.0:
            seen = np.where(seen > 0, seen / p.repeat_penalty, seen * p.repeat_penalty)
        seen = seen - count * p.frequency_penalty - p.presence_penalty
        out[ids] = seen
        return out

    def candidates(self, logits: np.ndarray, previous_tokens: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(token ids, probabilities) the draw chooses from after every filter, most probable first.
        With temperature <= 0 this is the single greedy token with probability 1."""
        p = self.params
        adjusted = self.adjusted_logits(logits, previous_tokens)
        if not (adjusted > -np.inf).any():
            raise ValueError("every token is banned (all logits are -inf after logit bias and penalties)")
        if p.temperature <= 0.0:
            return np.array([int(np.argmax(adjusted))]), np.array([1.0])
        finite = _top_k_pool(adjusted, p.top_k)
        total = None  # top-p's normalizer when `finite` is a top-p pool (the whole vocabulary's sum)
        if finite is None and p.top_k <= 0 and p.top_p < 1.0:
            pool = _top_p_pool(adjusted, p.top_p)
            if pool is not None:
                finite, total = pool
        if finite is None:
            finite = np.flatnonzero(adjusted > -np.inf)
        if 0 < p.top_k < finite.size:
            # Only tokens at or above the k-th largest logit can survive top-k: sort those alone.
            values = adjusted[finite]
            kth = np.partition(values, finite.size - p.top_k)[finite.size - p.top_k]
            finite = finite[values >= kth]
        # Most probable first; ties by lower id (stable sort on the negated logits).
        order = finite[np.argsort(-adjusted[finite], kind="stable")]
        ids = order
        vals = adjusted[order]
        if (vals == np.inf).any():  # a +inf bias forces those tokens
            keep = vals == np.inf
            ids, vals = ids[keep], np.zeros(int(keep.sum()))
        if p.top_k > 0:
            ids, vals = ids[: p.top_k], vals[: p.top_k]
        if p.top_p < 1.0:
            probs = _softmax(vals) if total is None else np.exp(vals - vals[0]) / total
            cum = np.cumsum(probs)
            n_keep = int(np.searchsorted(cum, p.top_p, side="left")) + 1
            ids, vals = ids[:n_keep], vals[:n_keep]
        if p.min_p > 0.0:
            keep = vals >= vals[0] + np.log(p.min_p)
            ids, vals = ids[keep], vals[keep]
        return ids, _softmax(vals / p.temperature)

    def sample(self, logits: np.ndarray, previous_tokens: Sequence[int] = ()) -> int:
        ids, probs = self.candidates(logits, previous_tokens)
        if ids.size == 1:
            return int(ids[0])
        cum = np.cumsum(probs)
        r = self.rng.random() * cum[-1]
        return int(ids[min(int(np.searchsorted(cum, r, side="right")), ids.size - 1)])


# Top-k over a large vocabulary: a strided sample of this many logits per top-k token picks the pool.
_POOL_STRIDE = 64


def sample_tokens(
    sampler: Sampler,
    logits: np.ndarray,
    prompt: Sequence[int],
    max_tokens: int,
    room: Callable[[], bool],
    step: Callable[[int], np.ndarray],
) -> list[int]:
    """Up to ``max_tokens`` ids sampled after ``prompt``, whose last logits are ``logits``: each sampled
    token is fed to ``step`` (its logits back) while ``room()`` says the context has space, else the
    generation ends there."""
    out: list[int] = []
    for i in range(max_tokens):
        token = int(sampler.sample(logits, [*prompt, *out]))
        out.append(token)
        if i + 1 == max_tokens:
            break
        if not room():
            break
        logits = step(token)
    return out


def _top_k_pool(adjusted: np.ndarray, top_k: int) -> np.ndarray | None:
    """Ids (ascending) of the finite logits at or above the top_k-th largest of every _POOL_STRIDE-th
    logit, or None where that sample does not help (top-k off, a small vocabulary, or fewer than top_k
    finite logits in the sample). The sample's top_k logits are logits, so at least top_k logits reach
    that threshold: the vocabulary's top_k-th largest finite logit does too, and with it every logit
    top-k keeps (ties included). The pool is ~top_k × _POOL_STRIDE ids instead of the whole vocabulary
    (131072 for Grok: 4 ms a token in numpy for the partition and gathers, ~0.2 ms with the pool)."""
    if top_k <= 0 or adjusted.size < 4 * _POOL_STRIDE * top_k:
        return None
    sample = adjusted[::_POOL_STRIDE]
    threshold = np.partition(sample, sample.size - top_k)[sample.size - top_k]
    if threshold == -np.inf:
        return None
    return np.flatnonzero(adjusted >= threshold)


def _top_p_pool(adjusted: np.ndarray, top_p: float) -> tuple[np.ndarray, float] | None:
    """With top-k off: (ids ascending of the logits within some margin of the largest, the softmax sum
    over the whole vocabulary) where those ids already hold more than top_p of the probability, so the
    smallest most-probable set reaching top_p lies among them; None where no margin up to 64 gets there,
    for a small vocabulary, or a +inf logit. Sorting the whole vocabulary took 20 ms a token at 131072.
    The normalizer is summed in id order, not in probability order: the set can differ from the
    whole-vocabulary path's only where the cumulative probability lands within rounding of top_p."""
    if adjusted.size < 4096:
        return None
    top = float(adjusted.max())
    if top == np.inf:
        return None
    e = np.exp(adjusted - top)
    total = float(e.sum())
    for margin in (4.0, 8.0, 16.0, 32.0, 64.0):
        inside = adjusted >= top - margin
        if float(e[inside].sum()) >= top_p * total * (1.0 + 1e-9):
            return np.flatnonzero(inside), total
    return None


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


class StopMatcher:
    """Cuts streamed text at the first stop string. ``feed(piece)`` returns (text safe to show now,
    stopped); text that might be the start of a stop string is held back until it is decided, so the
    shown text never contains any part of a stop string. ``flush()`` returns what is held at the end."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.stopped = False
        self._held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        if self.stopped:
            return "", True
        buf = self._held + text
        # Earliest start of a stop string that may still complete (a suffix of buf that begins a stop).
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(buf)), hold, -1):
                if buf.endswith(s[:k]):
                    hold = k
                    break
        pending = len(buf) - hold
        hits = [i for i in (buf.find(s) for s in self.stops) if 0 <= i <= pending]
        if hits:  # a complete stop string starts no later than any stop that may still complete
            self.stopped = True
            self._held = ""
            return buf[: min(hits)], True
        self._held = buf[pending:]
        return buf[:pending], False

    def flush(self) -> str:
        """Held text when generation ends without a stop string (empty after a stop)."""
        held, self._held = self._held, ""
        return "" if self.stopped else held

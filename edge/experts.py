"""The expert cache's settings and statistics as the Python API shows them (edge.h's expert store)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge._native import EdgeArgumentError, check, ffi, lib
from edge.sizes import format_size, parse_size

POLICIES: dict[str, int] = {"lru": 0, "lfu": 1}


@dataclass(frozen=True)
class CacheStats:
    """Counters of a model's expert store since the cache was set up (or the last reset).

    A unit is one expert of one layer (its three matrices). ``hits``/``misses`` count the engine's
    requests of units; ``bytes_read`` what the reads from the file returned (demand misses and
    prefetches); ``predicted``/``predicted_correct`` the router-driven prediction of the next layer's
    experts; ``stall_seconds`` the time the engine waited for reads."""

    budget_bytes: int
    slot_bytes: int
    n_slots: int
    tokens: int
    hits: int
    misses: int
    prefetch_hits: int
    prefetches: int
    loads: int
    bytes_read: int
    predicted: int
    predicted_correct: int
    stall_seconds: float
    # the VRAM tier of device="cuda" contexts (zero otherwise)
    vram_hits: int = 0
    vram_misses: int = 0
    experts_gpu: int = 0
    experts_cpu: int = 0
    vram_loads: int = 0
    vram_bytes_uploaded: int = 0

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    @property
    def bytes_read_per_token(self) -> float:
        return self.bytes_read / self.tokens if self.tokens else 0.0

    @property
    def prefetch_accuracy(self) -> float:
        """Share of the predicted (token, layer, expert) choices the router then made."""
        return self.predicted_correct / self.predicted if self.predicted else 0.0

    def summary(self) -> str:
        vram = ""
        if self.experts_gpu or self.experts_cpu:
            total = self.vram_hits + self.vram_misses
            rate = self.vram_hits / total if total else 0.0
            vram = (
                f" | VRAM hit rate {rate:.1%}, experts on GPU {self.experts_gpu}, "
                f"on CPU {self.experts_cpu}, uploads {self.vram_loads}"
            )
        if self.n_slots == 0:
            return "expert cache: off (experts read through the mapping)" + vram
        pf = f"{self.prefetch_accuracy:.1%}" if self.predicted else "off"
        return (
            f"expert cache: {self.n_slots} slots ({format_size(self.n_slots * self.slot_bytes)}) | "
            f"hit rate {self.hit_rate:.1%} | read {format_size(self.bytes_read_per_token)}/token | "
            f"prefetch accuracy {pf} | I/O stall {self.stall_seconds:.3f} s" + vram
        )


def cache_params(
    budget: str | int | None, policy: str = "lfu", prefetch: bool = True, io_threads: int = 4
) -> Any:
    """An ``edge_expert_cache_params`` for ``budget`` (None or 0: no cache)."""
    if policy.lower() not in POLICIES:
        raise EdgeArgumentError(
            "EDGE_ERR_INVALID_ARG", f"expert_policy {policy!r}: use one of {sorted(POLICIES)}"
        )
    p = ffi.new("edge_expert_cache_params *")
    check(lib.edge_expert_cache_default_params(p))
    p.budget_bytes = 0 if budget is None else parse_size(budget, "expert_cache")
    p.policy = POLICIES[policy.lower()]
    p.prefetch = int(bool(prefetch))
    p.io_threads = int(io_threads)
    return p


def read_stats(model_handle: Any) -> CacheStats:
    out = ffi.new("edge_expert_cache_stats *")
    check(lib.edge_model_expert_cache_stats(model_handle, out))
    return CacheStats(**{f: getattr(out, f) for f in CacheStats.__dataclass_fields__})


def min_budget(model_handle: Any, prefetch: bool) -> int:
    out = ffi.new("uint64_t *")
    check(lib.edge_model_expert_cache_min_bytes(model_handle, int(bool(prefetch)), out))
    return int(out[0])

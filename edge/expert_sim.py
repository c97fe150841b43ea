"""Replay an expert trace (``--trace-experts``) through a model of the expert store, and predict speed.

:class:`StoreSim` is the C store's mechanism and policies (native/src/experts/) restated: the same slots,
the same victim order (empty slot first; then the policy's lowest value, ties to the older last use,
then the lower slot; slots holding an unused prefetch only when nothing else is left, oldest first, and
never for another prefetch), the same clock (one tick per group acquired), the same prefetch (layer
l+1's predicted experts before layer l's groups, ascending, stopping at the first that finds no slot;
in a batch of several tokens at most n_slots - n_expert of them).
Replaying one context's trace gives exactly the C store's hits, misses, loads and bytes read (the
accounting tests check it), so a trace recorded once can be replayed under any budget and policy.

:func:`predict_speed` turns a replay into tokens/s for a :class:`MachineProfile` (see its docstring for
the assumptions). Where traces come from matters: the trained demo model routes like a real model
(locality: hit rates and prefetch accuracy mean something); synthetic Grok-shaped models route almost
at random (the worst case for a cache: use them for I/O speed).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Trace:
    """A recorded run: the header's shape and unit sizes, and per forward chunk (batch) the routing."""

    n_layer: int
    n_expert: int
    n_expert_used: int
    unit_bytes: list[int]  # [layer * n_expert + expert]
    # batch -> layer -> list of (pos, experts, gates, predicted or None); batch_tokens: n of each batch
    batches: list[list[list[tuple[int, list[int], list[float], list[int] | None]]]] = field(
        default_factory=list
    )
    source: str = ""
    batch_tokens: list[int] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return sum(len(b[0]) for b in self.batches if b)


def read_trace(path: str | Path) -> Trace:
    """Parse a trace file; ValueError naming the file and line for anything malformed."""
    path = Path(path)
    with path.open() as f:
        lines = f.read().splitlines()
    if not lines:
        raise ValueError(f"{path}: empty trace")
    try:
        head = json.loads(lines[0])
        tr = Trace(
            int(head["n_layer"]),
            int(head["n_expert"]),
            int(head["n_expert_used"]),
            [int(x) for x in head["unit_bytes"]],
            source=str(head.get("model", "")),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: line 1 is not a trace header: {exc}") from exc
    if len(tr.unit_bytes) != tr.n_layer * tr.n_expert:
        raise ValueError(f"{path}: header has {len(tr.unit_bytes)} unit sizes, expected n_layer * n_expert")
    current = -1
    for no, line in enumerate(lines[1:], start=2):
        try:
            r = json.loads(line)
            batch, layer = int(r["batch"]), int(r["layer"])
            experts = [int(e) for e in r["experts"]]
            gates = [float(g) for g in r["gates"]]
            pred = [int(e) for e in r["predicted"]] if "predicted" in r else None
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: line {no}: {exc}") from exc
        if not 0 <= layer < tr.n_layer or any(not 0 <= e < tr.n_expert for e in experts):
            raise ValueError(f"{path}: line {no}: layer or expert out of range")
        if batch != current:
            tr.batches.append([[] for _ in range(tr.n_layer)])
            tr.batch_tokens.append(int(r.get("n", 1)))
            current = batch
        tr.batches[-1][layer].append((int(r["pos"]), experts, gates, pred))
    return tr


@dataclass
class SimStats:
    hits: int = 0
    misses: int = 0
    prefetch_hits: int = 0
    prefetches: int = 0
    loads: int = 0
    bytes_read: int = 0
    demand_bytes: int = 0
    predicted: int = 0
    predicted_correct: int = 0
    tokens: int = 0

    @property
    def hit_rate(self) -> float:
        n = self.hits + self.misses
        return self.hits / n if n else 0.0


@dataclass
class _Slot:
    unit: int = -1
    prefetched: bool = False
    filled: int = 0


class StoreSim:
    """The C expert store's cache, one context, reads completing in order."""

    def __init__(
        self, n_slots: int, unit_bytes: list[int], policy: str = "lfu", half_life_ticks: float = 8.0
    ) -> None:
        if policy not in ("lru", "lfu"):
            raise ValueError(f"policy {policy!r}: use lru or lfu")
        self.slots = [_Slot() for _ in range(n_slots)]
        self.where: dict[int, int] = {}
        self.unit_bytes = unit_bytes
        self.policy = policy
        self.half_life = half_life_ticks
        self.clock = 0
        self.last_use: dict[int, int] = {}
        self.score: dict[int, float] = {}
        self.stats = SimStats()

    def _value(self, u: int) -> float:
        last = self.last_use.get(u, 0)
        if self.policy == "lru":
            return float(last)
        return self.score.get(u, 0.0) * 2.0 ** (-(self.clock - last) / self.half_life)

    def _touch(self, u: int) -> None:
        if self.policy == "lfu":
            self.score[u] = self._value(u) + 1.0
        self.last_use[u] = self.clock

    def _victim(self, for_prefetch: bool, req: Iterable[int]) -> int:
        req = set(req)
        best, best_v, best_pf = -1, 0.0, -1
        for i, s in enumerate(self.slots):
            if s.unit < 0:
                return i
            if s.unit in req:
                continue
            if s.prefetched:
                if not for_prefetch and (best_pf < 0 or s.filled < self.slots[best_pf].filled):
                    best_pf = i
                continue
            v = self._value(s.unit)
            if (
                best < 0
                or v < best_v
                or (
                    v == best_v and self.last_use.get(s.unit, 0) < self.last_use.get(self.slots[best].unit, 0)
                )
            ):
                best, best_v = i, v
        return best if best >= 0 else best_pf

    def _load(self, i: int, u: int, prefetch: bool) -> None:
        s = self.slots[i]
        if s.unit >= 0:
            del self.where[s.unit]
        s.unit, s.prefetched, s.filled = u, prefetch, self.clock
        self.where[u] = i
        self.stats.loads += 1
        self.stats.bytes_read += self.unit_bytes[u]

    def acquire(self, units: list[int]) -> None:
        """One group (at most n_slots distinct units), as edge_experts_acquire."""
        self.clock += 1
        for u in units:
            i = self.where.get(u)
            if i is not None:
                self.stats.hits += 1
                if self.slots[i].prefetched:
                    self.stats.prefetch_hits += 1
            else:
                i = self._victim(False, units)
                self._load(i, u, False)
                self.stats.misses += 1
                self.stats.demand_bytes += self.unit_bytes[u]
            self.slots[i].prefetched = False
            self._touch(u)

    def prefetch(self, units: list[int], room: int) -> None:
        for u in units:
            if room <= 0:
                break
            if u in self.where:
                continue
            room -= 1
            i = self._victim(True, [u])
            if i < 0:
                break
            self._load(i, u, True)
            self.stats.prefetches += 1


def replay(
    trace: Trace, n_slots: int, policy: str = "lfu", prefetch: bool = True, half_life_tokens: float = 8.0
) -> SimStats:
    """Replay ``trace`` through a cache of ``n_slots`` slots, as one context's forward passes run it."""
    ne, k = trace.n_expert, trace.n_expert_used
    if n_slots < k * (2 if prefetch else 1):
        raise ValueError(f"{n_slots} slots are fewer than the minimum {k * (2 if prefetch else 1)}")
    sim = StoreSim(n_slots, trace.unit_bytes, policy, half_life_tokens * trace.n_layer)
    for bi, batch in enumerate(trace.batches):
        sim.stats.tokens += len(batch[0])
        n_tok = trace.batch_tokens[bi] if bi < len(trace.batch_tokens) else len(batch[0])
        room = n_slots - ne if n_tok > 1 else n_slots  # as edge_experts_predict
        for layer in range(trace.n_layer):
            if prefetch and layer + 1 < trace.n_layer:
                nxt = batch[layer + 1]
                want = sorted({e for rec in nxt if rec[3] is not None for e in rec[3] if e >= 0})
                sim.prefetch([(layer + 1) * ne + e for e in want], room)
            recs = batch[layer]
            for _, experts, _, pred in recs:
                if pred is not None:
                    sim.stats.predicted += k
                    sim.stats.predicted_correct += sum(experts.count(p) for p in pred)
            chosen = sorted({e for rec in recs for e in rec[1]})
            for g0 in range(0, len(chosen), n_slots):
                sim.acquire([layer * ne + e for e in chosen[g0 : g0 + n_slots]])
    return sim.stats


@dataclass(frozen=True)
class MachineProfile:
    """What the speed model assumes about a machine.

    Decode of one token: the dense weights and the selected experts stream from RAM (or VRAM) at the
    memory bandwidth: ``compute = bytes touched / dram_gbps`` (decode is memory-bound: a few flops per
    weight byte). Units missing from the cache come from storage at ``disk_gbps``; demand reads add
    their time to the token's; prefetched reads add theirs less the share ``io_overlap`` hidden behind
    compute. The default, 0 (reads and compute serialized), fits an oversubscribed CPU, where prefetching
    threads do not run beside the compute (bench/offload.py measures no overlap on a 2-core shared VM);
    a machine with idle cores and NVMe gets closer to 1, bounded by the compute time.
    ``compute_seconds_per_token``, when given (measured on this machine without a cache), replaces the
    bandwidth estimate of the compute part."""

    ram_bytes: int
    vram_bytes: int = 0
    disk_gbps: float = 7.0
    dram_gbps: float = 40.0
    pcie_gbps: float = 25.0
    vram_gbps: float = 900.0
    compute_seconds_per_token: float | None = None
    io_overlap: float = 0.0


def predict_decode_seconds(
    stats: SimStats, dense_bytes: int, touched_expert_bytes: float, n_layer: int, m: MachineProfile
) -> float:
    """Seconds per decoded token from a replay's per-token reads (see MachineProfile)."""
    tokens = max(stats.tokens, 1)
    compute = (
        m.compute_seconds_per_token
        if m.compute_seconds_per_token is not None
        else (dense_bytes + touched_expert_bytes) / (m.dram_gbps * 1e9)
    )
    demand = stats.demand_bytes / tokens / (m.disk_gbps * 1e9)
    ahead = (stats.bytes_read - stats.demand_bytes) / tokens / (m.disk_gbps * 1e9)
    return compute + demand + max(ahead * (1 - m.io_overlap), ahead - compute)


def as_json(stats: SimStats) -> dict[str, Any]:
    return {**stats.__dict__, "hit_rate": stats.hit_rate}

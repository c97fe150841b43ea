"""`grok-edge plan`: where a model's weights should live on a machine, and the speed that gives.

Sizes come from a GGUF's tensor table (only the header is read: a full-size Grok-1 file, or one whose
weights were never written, e.g. :func:`write_shape_gguf` from a ``--dry-run`` conversion plan) or
straight from the conversion plan of the real Grok-1 shape (:func:`sizes_of_grok1`).

The placement: the dense tensors (attention, embeddings, norms, routers) and the KV cache go to VRAM
when they fit (the CUDA issue's tier), else to RAM; the RAM left after the runtime's headroom holds the
expert cache; every other expert stays on storage and is read when missed. The speed model is
edge.expert_sim's (MachineProfile): decode is bound by the bytes a token touches; misses add their
reads at the storage bandwidth, minus what prefetch overlaps. The hit rate comes from a trace replayed
at the same cache fraction when one is given, else from random routing (hit rate = cached fraction of
the experts): the worst case, and what a synthetic model shows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from edge.expert_sim import MachineProfile, Trace, replay
from edge.sizes import format_size

HEADROOM_BYTES = 4 * 2**30  # RAM kept for the OS, the runtime and activations
ALIGN = 4096


@dataclass
class ModelSizes:
    name: str
    n_layer: int
    n_expert: int
    n_expert_used: int
    n_embd: int
    n_ff: int
    kv_row_elems: int  # n_head_kv * head_dim
    dense_bytes: int
    unit_bytes: list[int]  # [layer * n_expert + expert]

    @property
    def expert_bytes(self) -> int:
        return sum(self.unit_bytes)

    def kv_bytes(self, n_ctx: int, bytes_per_elem: int = 2) -> int:
        return 2 * self.n_layer * n_ctx * self.kv_row_elems * bytes_per_elem

    def active_params_per_token(self) -> float:
        """Weights one token multiplies (dense matrices but the embedding, plus its experts), for flops."""
        expert = 3 * self.n_embd * self.n_ff
        return self.n_layer * self.n_expert_used * expert + self.dense_bytes  # dense: ~1 weight per byte


_EXPERT = re.compile(r"^blk\.(\d+)\.ffn_(gate|up|down)_exps\.weight$")


def _unit_sizes(n_layer: int, n_expert: int, stacked: dict[tuple[int, str], tuple[int, int]]) -> list[int]:
    """Unit bytes as the store reads them: each matrix's 4 KiB-aligned span (offset, nbytes of the stack)."""
    out = []
    for layer in range(n_layer):
        for e in range(n_expert):
            total = 0
            for role in ("gate", "up", "down"):
                off, nbytes = stacked[(layer, role)]
                per = nbytes // n_expert
                lo, hi = off + e * per, off + (e + 1) * per
                total += -(-hi // ALIGN) * ALIGN - lo // ALIGN * ALIGN
            out.append(total)
    return out


def sizes_of_gguf(path: str | Path) -> ModelSizes:
    """From the header of a grok GGUF (stacked ffn_*_exps tensors); no weight is read."""
    from edge.gguf import GGUFFile

    with GGUFFile(path) as g:
        md = g.metadata
        try:
            n_layer, n_expert = int(md["grok.block_count"]), int(md["grok.expert_count"])
            k, d = int(md["grok.expert_used_count"]), int(md["grok.embedding_length"])
            n_ff = int(md.get("grok.expert_feed_forward_length", md["grok.feed_forward_length"]))
            n_kv = int(md["grok.attention.head_count_kv"])
            head_dim = int(md.get("grok.attention.key_length", d // int(md["grok.attention.head_count"])))
        except KeyError as exc:
            raise ValueError(f"{path}: not a grok GGUF (missing {exc})") from exc
        stacked: dict[tuple[int, str], tuple[int, int]] = {}
        dense = 0
        for t in g.tensors:
            m = _EXPERT.match(t.name)
            if m:
                stacked[(int(m.group(1)), m.group(2))] = (g.data_offset + t.offset, t.nbytes)
            else:
                dense += t.nbytes
        missing = [(la, r) for la in range(n_layer) for r in ("gate", "up", "down") if (la, r) not in stacked]
        if missing:
            la, r = missing[0]
            raise ValueError(f"{path}: tensor 'blk.{la}.ffn_{r}_exps.weight' is missing")
        units = _unit_sizes(n_layer, n_expert, stacked)
        return ModelSizes(Path(path).name, n_layer, n_expert, k, d, n_ff, n_kv * head_dim, dense, units)


def sizes_of_grok1(preset: str = "q4_k_m") -> ModelSizes:
    """The real Grok-1 at a converter preset, from the conversion plan (no checkpoint needed)."""
    from edge.convert.layout import GROK1_SHAPE, leaf_specs
    from edge.convert.pipeline import plan_conversion
    from edge.convert.release import Checkpoint

    s = GROK1_SHAPE
    ckpt = Checkpoint(Path("."), s, leaf_specs(s))
    plan = plan_conversion(ckpt, preset, {})
    stacked: dict[tuple[int, str], tuple[int, int]] = {}
    dense, offset = 0, 0
    for t in plan:  # laid out in plan order, 32-byte aligned, as the converter writes them
        m = _EXPERT.match(t.target.name)
        if m:
            stacked[(int(m.group(1)), m.group(2))] = (offset, t.nbytes)
        else:
            dense += t.nbytes
        offset += -(-t.nbytes // 32) * 32
    units = _unit_sizes(s.n_layers, s.n_experts, stacked)
    return ModelSizes(
        f"Grok-1 {preset.upper()}",
        s.n_layers,
        s.n_experts,
        2,
        s.d_model,
        s.ffn_size,
        s.n_kv_heads * s.key_size,
        dense,
        units,
    )


@dataclass
class Placement:
    sizes: ModelSizes
    machine: MachineProfile
    n_ctx: int
    dense_in_vram: bool
    cache_bytes: int
    cached_units: int
    hit_rate: float
    hit_rate_source: str
    prefetch_share: float  # share of the misses prefetch reads ahead
    decode_seconds: float
    prompt_seconds_per_batch: float
    batch: int
    cpu_gflops: float

    @property
    def decode_tokens_per_second(self) -> float:
        return 1.0 / self.decode_seconds

    @property
    def prompt_tokens_per_second(self) -> float:
        return self.batch / self.prompt_seconds_per_batch

    def describe(self) -> str:
        s, m = self.sizes, self.machine
        kv = s.kv_bytes(self.n_ctx)
        n_units = len(s.unit_bytes)
        unit = format_size(s.expert_bytes / n_units)
        fs = format_size
        lines = [
            f"model {s.name}: {s.n_layer} layers x {s.n_expert} experts (top {s.n_expert_used}); "
            f"dense {fs(s.dense_bytes)}, experts {fs(s.expert_bytes)} ({n_units} units of {unit}), "
            f"KV cache {fs(kv)} at n_ctx {self.n_ctx}",
            f"machine: RAM {fs(m.ram_bytes)}, VRAM {fs(m.vram_bytes)}, storage {m.disk_gbps:g} GB/s, "
            f"DRAM {m.dram_gbps:g} GB/s, PCIe {m.pcie_gbps:g} GB/s, CPU {self.cpu_gflops:g} GFLOP/s",
            "placement:",
        ]
        where = "VRAM   " if self.dense_in_vram else "RAM    "
        note = " [the CUDA issue's tier]" if self.dense_in_vram else ", mapped"
        lines.append(f"  {where} dense weights + KV cache ({fs(s.dense_bytes + kv)}){note}")
        if self.dense_in_vram:
            left = m.vram_bytes - s.dense_bytes - kv
            lines.append(f"  VRAM    {fs(left)} left: for hot experts once the engine has a VRAM tier")
        lines += [
            f"  RAM     expert cache {fs(self.cache_bytes)}: {self.cached_units} of {n_units} units "
            f"({self.cached_units / n_units:.1%}) (--expert-cache {self.cache_bytes // 2**20}MiB)",
            f"  storage the other {n_units - self.cached_units} units, read when missed",
            f"expected hit rate {self.hit_rate:.1%} ({self.hit_rate_source}); "
            f"prefetch reads ahead {self.prefetch_share:.0%} of the misses",
            f"predicted decode {self.decode_tokens_per_second:.2f} tok/s, "
            f"prompt {self.prompt_tokens_per_second:.1f} tok/s (batches of {self.batch})",
            "assumptions: decode streams the bytes a token touches at the DRAM (or VRAM) bandwidth; "
            "misses are read at the storage bandwidth, adding their time to the token's, less the share "
            f"{m.io_overlap:.0%} of the prefetched reads hidden behind compute (--io-overlap); a prompt "
            "batch reads every uncached expert once and computes at the CPU's GFLOP/s; "
            f"{fs(HEADROOM_BYTES)} of RAM kept for the OS and runtime.",
        ]
        return "\n".join(lines)


def plan(
    sizes: ModelSizes,
    machine: MachineProfile,
    n_ctx: int = 8192,
    trace: Trace | None = None,
    batch: int = 512,
    cpu_gflops: float = 500.0,
) -> Placement:
    kv = sizes.kv_bytes(n_ctx)
    dense_in_vram = machine.vram_bytes > 0 and sizes.dense_bytes + kv + 2**30 <= machine.vram_bytes
    ram_left = machine.ram_bytes - HEADROOM_BYTES - (0 if dense_in_vram else sizes.dense_bytes + kv)
    slot = max(sizes.unit_bytes)
    n_units = len(sizes.unit_bytes)
    min_units = 2 * sizes.n_expert_used
    cached = max(0, min(n_units, ram_left // slot))
    if cached < min_units:
        raise ValueError(
            f"{format_size(machine.ram_bytes)} of RAM leaves {format_size(max(ram_left, 0))} for experts: "
            f"the smallest expert cache is {format_size(min_units * slot)}"
        )
    frac = cached / n_units
    if trace is not None:
        slots = max(2 * trace.n_expert_used, round(frac * trace.n_layer * trace.n_expert))
        st = replay(trace, slots, "lfu", True)
        hit = st.hit_rate
        share = (st.bytes_read - st.demand_bytes) / st.bytes_read if st.bytes_read else 0.0
        source = f"a trace of {trace.source or 'a run'} replayed with {slots} slots, LFU, prefetch"
    else:
        hit, share, source = frac, 0.0, "random routing: the cached share of the experts (worst case)"
    unit = sizes.expert_bytes / n_units
    touched = sizes.n_layer * sizes.n_expert_used * unit
    dense_bw = machine.vram_gbps if dense_in_vram else machine.dram_gbps
    compute = sizes.dense_bytes / (dense_bw * 1e9) + touched / (machine.dram_gbps * 1e9)
    if machine.compute_seconds_per_token is not None:
        compute = machine.compute_seconds_per_token
    miss_bytes = (1 - hit) * touched
    disk = machine.disk_gbps * 1e9
    demand = miss_bytes * (1 - share) / disk
    ahead = miss_bytes * share / disk
    decode = compute + demand + max(ahead * (1 - machine.io_overlap), ahead - compute)
    # a prompt batch: every expert of every layer is chosen by some token (512 tokens, 8 experts)
    flops = 2.0 * sizes.active_params_per_token() * batch
    io = (n_units - cached) * unit / disk
    prompt = max(flops / (cpu_gflops * 1e9), io)
    return Placement(
        sizes,
        machine,
        n_ctx,
        dense_in_vram,
        cached * slot,
        cached,
        hit,
        source,
        share,
        decode,
        prompt,
        batch,
        cpu_gflops,
    )


def write_shape_gguf(path: str | Path, sizes_preset: str = "q4_k_m") -> Path:
    """A full-size Grok-1 GGUF with no weights: the header of the converter's plan for ``sizes_preset``,
    the data section a hole (a sparse file: it takes no disk space). Only tools that read the tensor
    table (plan, info) can use it."""
    import gguf
    import numpy as np

    from edge.convert.layout import GROK1_SHAPE, leaf_specs
    from edge.convert.pipeline import plan_conversion
    from edge.convert.release import Checkpoint

    s = GROK1_SHAPE
    tplan = plan_conversion(Checkpoint(Path("."), s, leaf_specs(s)), sizes_preset, {})
    w = gguf.GGUFWriter(str(path), "grok")
    w.add_context_length(8192)
    w.add_embedding_length(s.d_model)
    w.add_block_count(s.n_layers)
    w.add_feed_forward_length(s.ffn_size)
    w.add_head_count(s.n_q_heads)
    w.add_head_count_kv(s.n_kv_heads)
    w.add_key_length(s.key_size)
    w.add_value_length(s.key_size)
    w.add_expert_count(s.n_experts)
    w.add_expert_used_count(2)
    w.add_layer_norm_rms_eps(1e-5)
    for t in tplan:
        qt = gguf.GGMLQuantizationType[t.qtype.upper()]
        byte_shape = (*t.target.gguf_shape[:-1], t.nbytes // t.target.n_rows)
        w.add_tensor_info(t.target.name, byte_shape, np.dtype(np.uint8), t.nbytes, raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    end = Path(path).stat().st_size
    end = -(-end // 32) * 32 + sum(-(-t.nbytes // 32) * 32 for t in tplan)
    with open(path, "r+b") as f:
        f.truncate(end)
    return Path(path)

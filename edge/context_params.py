"""Opening a model and one inference context over it, for :class:`edge.Model` and
:class:`edge.BatchContext` alike: the context parameters they share (:class:`ContextParams`), checked
once, and the native calls that load the GGUF, set up the expert store and create the context
(:func:`open_context`), and free them again (:func:`free_handles`).

A new context option (a device, a GPU memory budget) goes here: a field of ContextParams, its check and
its effect in open_context. Both classes then only pass it on.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge._native import EdgeArgumentError, check, ffi, lib
from edge.devices import context_device, device_code, gpu_memory_bytes
from edge.experts import cache_params
from edge.kernels import isa_code

KV_TYPES: dict[str, int] = {"f16": 1, "q8_0": 8, "f32": 0}
MAX_SEQ = 1024  # KV cache slots one context may hold


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


@dataclass(frozen=True)
class ContextParams:
    """What a context is opened with (see :class:`edge.Model` for each option's meaning).

    ``n_ctx``: tokens per sequence, 0 the model's own context length, a larger value clamped to it with a
    warning. ``n_seq``: KV cache slots (1..MAX_SEQ). ``trace_experts``: a file for every token's routing."""

    n_ctx: int = 0
    n_batch: int = 512
    n_threads: int | None = None
    kv_type: str = "f16"
    isa: str = "auto"
    n_seq: int = 1
    expert_cache: str | int | None = None
    expert_policy: str = "lfu"
    prefetch: bool = True
    trace_experts: str | Path | None = None
    device: str = "auto"
    gpu_memory: str | int | None = None


@dataclass(frozen=True)
class OpenContext:
    """The handles open_context made (the caller owns them: free_handles), and what the context became."""

    model: Any  # edge_model *
    ctx: Any  # edge_context *
    hparams: Hparams
    n_ctx: int  # tokens per sequence, after the clamp to the model's
    n_batch: int  # as the context clamps it (<= n_ctx)
    n_threads: int  # the threads the forward pass runs on
    device: str  # where the context runs: "cpu" or "cuda"


def _invalid(message: str) -> EdgeArgumentError:
    return EdgeArgumentError("EDGE_ERR_INVALID_ARG", message)


def open_context(path: str, p: ContextParams) -> OpenContext:
    """Check ``p``, load the model at ``path`` and create its context. Warnings point at the caller of
    the class that called this (Model(...) or BatchContext(...)). On an error nothing stays open."""
    kv_type = p.kv_type.lower()
    if kv_type not in KV_TYPES:
        raise _invalid(f"kv_type {p.kv_type!r}: use one of {sorted(KV_TYPES)}")
    isa_value = isa_code(p.isa.lower())  # EdgeArgumentError for an unknown name
    device_value, gpu_bytes = device_code(p.device), gpu_memory_bytes(p.gpu_memory)
    n_threads, n_ctx, n_batch, n_seq = p.n_threads, p.n_ctx, p.n_batch, p.n_seq
    if n_threads is not None and (isinstance(n_threads, bool) or n_threads < 0):
        raise _invalid(f"n_threads {n_threads} must be >= 0")
    if isinstance(n_ctx, bool) or int(n_ctx) != n_ctx or n_ctx < 0:
        raise _invalid(f"n_ctx {n_ctx} must be >= 0 (0: the model's context length)")
    if isinstance(n_batch, bool) or int(n_batch) != n_batch or n_batch < 1:
        raise _invalid(f"n_batch {n_batch} must be >= 1")
    if isinstance(n_seq, bool) or int(n_seq) != n_seq or not 1 <= n_seq <= MAX_SEQ:
        raise _invalid(f"n_seq {n_seq} must be in 1..{MAX_SEQ}")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if n_threads and n_threads > cores:
        warnings.warn(
            f"n_threads {n_threads} is more than this machine's {cores} cores: the threads will wait "
            "for one another (None picks a default)",
            RuntimeWarning,
            stacklevel=3,
        )
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    out = ffi.new("edge_model **")
    check(lib.edge_model_load(path.encode(), out))
    model, ctx = out[0], ffi.NULL
    try:
        hp = ffi.new("edge_model_hparams *")
        check(lib.edge_model_get_hparams(model, hp))
        hparams = Hparams(**{f: getattr(hp, f) for f in Hparams.__dataclass_fields__})
        train = hparams.n_ctx_train
        if n_ctx > train:
            warnings.warn(
                f"{path}: n_ctx {n_ctx} is more than the model's context length; using {train}",
                RuntimeWarning,
                stacklevel=3,
            )
        params = ffi.new("edge_context_params *")
        check(lib.edge_context_default_params(params))
        params.n_ctx = train if n_ctx == 0 else min(int(n_ctx), train)
        params.n_batch = int(n_batch)
        params.n_threads = int(n_threads or 0)
        params.kv_type = KV_TYPES[kv_type]
        params.isa = isa_value
        params.n_seq = int(n_seq)
        params.device = device_value
        params.gpu_memory = gpu_bytes
        if p.expert_cache is not None:
            cache = cache_params(p.expert_cache, p.expert_policy, p.prefetch)
            check(lib.edge_model_set_expert_cache(model, cache))
        if p.trace_experts is not None:
            check(lib.edge_model_trace_experts(model, str(p.trace_experts).encode()))
        created = ffi.new("edge_context **")
        check(lib.edge_context_create(model, params, created))
        ctx = created[0]
        threads = ffi.new("int *")
        check(lib.edge_context_n_threads(ctx, threads))
    except BaseException:
        free_handles(model, ctx)
        raise
    n_ctx_used = int(params.n_ctx)
    return OpenContext(
        model=model,
        ctx=ctx,
        hparams=hparams,
        n_ctx=n_ctx_used,
        n_batch=min(int(params.n_batch), n_ctx_used),  # as the context clamps it
        n_threads=int(threads[0]),
        device=context_device(ctx),
    )


def free_handles(model: Any, ctx: Any) -> None:
    """Free a context, then its model (closing an expert trace); either may be NULL."""
    if ctx != ffi.NULL:
        lib.edge_context_free(ctx)
    if model != ffi.NULL:
        lib.edge_model_trace_experts(model, ffi.NULL)  # flushes and closes a trace
        lib.edge_model_free(model)

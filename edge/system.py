"""What this machine offers the engine: CPU features detected at run time, CUDA devices."""

from __future__ import annotations

from typing import Any

from edge._native import check, ffi, lib, string
from edge.devices import cuda_devices


def cpu_features() -> dict[str, Any]:
    feats = ffi.new("edge_cpu_features *")
    check(lib.edge_cpu_detect(feats))
    names = [f for f, _ in ffi.typeof("edge_cpu_features").fields]
    return {name: int(getattr(feats, name)) for name in names}


def system_info() -> dict[str, Any]:
    """Version, CPU features, CUDA availability and the CUDA devices (name, total and free memory,
    compute capability), as a dict (what `grok-edge info --system` prints)."""
    n_devices = ffi.new("int *")
    check(lib.edge_cuda_device_count(n_devices))
    return {
        "version": string(lib.edge_version()),
        "cpu": cpu_features(),
        "cuda_compiled": bool(lib.edge_cuda_compiled()),
        "cuda_devices": int(n_devices[0]),
        "gpus": cuda_devices(),
    }

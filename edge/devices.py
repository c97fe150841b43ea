"""Where a context runs: ``device`` ("auto", "cpu", "cuda") and ``gpu_memory``, and the CUDA devices."""

from __future__ import annotations

from typing import Any

from edge._native import EdgeArgumentError, check, ffi, lib
from edge.sizes import parse_size

# edge.h's edge_device
DEVICES: dict[str, int] = {"auto": 0, "cpu": 1, "cuda": 2}
DEVICE_NAMES: dict[int, str] = {v: k for k, v in DEVICES.items()}


def device_code(device: str) -> int:
    """edge_device of ``device``; EdgeArgumentError naming the choices otherwise."""
    if not isinstance(device, str) or device.lower() not in DEVICES:
        raise EdgeArgumentError("EDGE_ERR_INVALID_ARG", f"device {device!r}: use one of {sorted(DEVICES)}")
    return DEVICES[device.lower()]


def gpu_memory_bytes(gpu_memory: str | int | None) -> int:
    """Bytes of ``gpu_memory`` ("20GiB", a byte count; None or 0: all free device memory less a margin)."""
    if gpu_memory is None:
        return 0
    try:
        return parse_size(gpu_memory, "gpu_memory")
    except ValueError as e:
        raise EdgeArgumentError("EDGE_ERR_INVALID_ARG", str(e)) from None


def apply_device(params: Any, device: str, gpu_memory: str | int | None) -> None:
    """Set an ``edge_context_params``'s device and gpu_memory (validated)."""
    params.device = device_code(device)
    params.gpu_memory = gpu_memory_bytes(gpu_memory)


def context_device(ctx: Any) -> str:
    """The device a context runs on ("cpu" or "cuda")."""
    out = ffi.new("int *")
    check(lib.edge_context_device(ctx, out))
    return DEVICE_NAMES[int(out[0])]


def cuda_devices() -> list[dict[str, Any]]:
    """The CUDA devices the driver reports: name, total and free memory in bytes, compute capability."""
    n = ffi.new("int *")
    check(lib.edge_cuda_device_count(n))
    gpus = []
    for i in range(int(n[0])):
        info = ffi.new("edge_cuda_device_info *")
        check(lib.edge_cuda_device_info_get(i, info))
        gpus.append(
            {
                "index": i,
                "name": ffi.string(info.name).decode(errors="replace"),
                "total_bytes": int(info.total_bytes),
                "free_bytes": int(info.free_bytes),
                "compute_capability": f"{info.cc_major}.{info.cc_minor}",
            }
        )
    return gpus


def context_gpu_info(ctx: Any) -> dict[str, Any]:
    """What a context placed in device memory (zeros on the CPU): dense weights, KV cache, buffers, the
    VRAM expert slots against the model's units, the measured host-to-device bandwidth and CPU expert cost."""
    out = ffi.new("edge_gpu_info *")
    check(lib.edge_context_gpu_info(ctx, out))
    return {
        f: (float if field.type.cname == "double" else int)(getattr(out, f))
        for f, field in ffi.typeof("edge_gpu_info").fields
    }

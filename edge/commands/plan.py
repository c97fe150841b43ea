"""`grok-edge plan`: where the weights of a model go on a machine (VRAM, RAM expert cache, storage), and
the decode and prompt speed that placement predicts (edge.placement: its assumptions are printed)."""

from __future__ import annotations

import argparse


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        help="a grok GGUF (only its header is read: a full-size file works), or grok1:PRESET for the "
        "real Grok-1's sizes from the conversion plan (e.g. grok1:q4_k_m)",
    )
    parser.add_argument("--ram", required=True, metavar="SIZE", help="RAM of the machine (e.g. 64GiB)")
    parser.add_argument("--vram", default="0", metavar="SIZE", help="GPU memory (e.g. 24GiB; default none)")
    parser.add_argument("--disk-gbps", type=float, default=7.0, help="storage read GB/s (default 7, NVMe)")
    parser.add_argument("--dram-gbps", type=float, default=40.0, help="memory bandwidth GB/s (default 40)")
    parser.add_argument("--pcie-gbps", type=float, default=25.0, help="host-GPU GB/s (default 25)")
    parser.add_argument(
        "--io-overlap",
        type=float,
        default=0.0,
        help="share of prefetched reads hidden behind compute, 0..1 (default 0: serialized)",
    )
    parser.add_argument("--cpu-gflops", type=float, default=500.0, help="CPU GFLOP/s for prompts (500)")
    parser.add_argument("-c", "--ctx-size", type=int, default=8192, help="context for the KV cache (8192)")
    parser.add_argument(
        "--trace", default=None, metavar="FILE", help="a --trace-experts file whose hit rate to assume"
    )


def run(args: argparse.Namespace) -> int:
    from edge.expert_sim import MachineProfile, read_trace
    from edge.placement import plan, sizes_of_gguf, sizes_of_grok1
    from edge.sizes import parse_size

    if args.model.startswith("grok1:"):
        sizes = sizes_of_grok1(args.model.split(":", 1)[1])
    else:
        sizes = sizes_of_gguf(args.model)
    machine = MachineProfile(
        ram_bytes=parse_size(args.ram, "--ram"),
        vram_bytes=parse_size(args.vram, "--vram"),
        disk_gbps=args.disk_gbps,
        dram_gbps=args.dram_gbps,
        pcie_gbps=args.pcie_gbps,
        io_overlap=args.io_overlap,
    )
    trace = read_trace(args.trace) if args.trace else None
    print(plan(sizes, machine, args.ctx_size, trace, cpu_gflops=args.cpu_gflops).describe())
    return 0

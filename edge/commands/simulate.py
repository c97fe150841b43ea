"""`grok-edge simulate`: replay a --trace-experts file under a cache budget, policy and machine profile,
and predict the decode speed (edge.expert_sim)."""

from __future__ import annotations

import argparse


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("trace", help="a file written by --trace-experts")
    parser.add_argument("--budget", required=True, metavar="SIZE", help="expert cache size (e.g. 8GiB)")
    parser.add_argument("--policy", choices=["lfu", "lru", "both"], default="both")
    parser.add_argument("--no-prefetch", action="store_true")
    parser.add_argument("--disk-gbps", type=float, default=7.0, help="storage read GB/s (default 7)")
    parser.add_argument("--dram-gbps", type=float, default=40.0, help="memory bandwidth GB/s (default 40)")
    parser.add_argument(
        "--io-overlap",
        type=float,
        default=0.0,
        help="share of prefetched reads hidden behind compute, 0..1 (default 0: serialized)",
    )
    parser.add_argument(
        "--compute-ms",
        type=float,
        default=None,
        help="measured ms per decoded token without a cache (replaces the bandwidth estimate)",
    )
    parser.add_argument(
        "--dense-bytes", type=int, default=0, help="bytes of dense weights a token reads (for the estimate)"
    )


def run(args: argparse.Namespace) -> int:
    from edge.expert_sim import MachineProfile, predict_decode_seconds, read_trace, replay
    from edge.sizes import format_size, parse_size

    tr = read_trace(args.trace)
    slot = -(-max(tr.unit_bytes) // 4096) * 4096
    n_slots = min(parse_size(args.budget, "--budget") // slot, tr.n_layer * tr.n_expert)
    machine = MachineProfile(
        ram_bytes=0,
        disk_gbps=args.disk_gbps,
        dram_gbps=args.dram_gbps,
        compute_seconds_per_token=args.compute_ms / 1e3 if args.compute_ms is not None else None,
        io_overlap=args.io_overlap,
    )
    unit = sum(tr.unit_bytes) / len(tr.unit_bytes)
    touched = tr.n_layer * tr.n_expert_used * unit
    print(f"trace {args.trace}: {tr.tokens} tokens of {tr.source}; {n_slots} slots of {format_size(slot)}")
    for policy in ("lfu", "lru") if args.policy == "both" else (args.policy,):
        st = replay(tr, n_slots, policy, not args.no_prefetch)
        sec = predict_decode_seconds(st, args.dense_bytes, touched, tr.n_layer, machine)
        acc = st.predicted_correct / st.predicted if st.predicted else 0.0
        per_token = format_size(st.bytes_read / max(st.tokens, 1))
        print(
            f"{policy}: hit rate {st.hit_rate:.1%}, read {per_token}/token, "
            f"prefetch accuracy {acc:.1%}, predicted {1 / sec:.2f} tok/s"
        )
    return 0

"""`grok-edge convert`: the official Grok-1 checkpoint (ckpt-0) -> GGUF."""

from __future__ import annotations

import argparse
import time

from edge.convert.mapping import TENSOR_CLASSES
from edge.convert.recipe import PRESETS


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CKPT_DIR", help="the ckpt-0 directory (tensor00000_000 ...)")
    parser.add_argument("-o", "--output", required=False, metavar="OUT.gguf", help="output GGUF file")
    parser.add_argument("--tokenizer", metavar="tokenizer.model", help="the release's SentencePiece model")
    parser.add_argument(
        "--preset", default="q4_k_m", choices=PRESETS, help="quantization preset (default q4_k_m)"
    )
    parser.add_argument(
        "--tensor-type",
        action="append",
        default=[],
        metavar="CLASS=TYPE",
        help=f"override a tensor class's type (classes: {', '.join(TENSOR_CLASSES)})",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan and sizes, write nothing")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output file")
    parser.add_argument("--threads", type=int, default=0, help="quantizer threads (0: all cores)")
    parser.add_argument("--head-dim", type=int, default=128, help="key size per head (128 for Grok-1)")
    parser.add_argument("--context-length", type=int, default=8192, help="context length metadata (8192)")
    parser.add_argument("--name", default="Grok-1", help="general.name")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from edge.convert.pipeline import convert_checkpoint, describe_plan, plan_conversion
    from edge.convert.recipe import parse_overrides
    from edge.convert.release import open_checkpoint

    overrides = parse_overrides(args.tensor_type)
    if args.dry_run:
        ckpt = open_checkpoint(args.checkpoint, args.head_dim)
        print(f"checkpoint {args.checkpoint}: {ckpt.shape}")
        print(f"preset {args.preset}")
        print(describe_plan(plan_conversion(ckpt, args.preset, overrides)))
        return 0
    if not args.output or not args.tokenizer:
        raise ValueError("-o OUT.gguf and --tokenizer tokenizer.model are required (or use --dry-run)")
    start = time.perf_counter()
    plan = convert_checkpoint(
        args.checkpoint,
        args.output,
        args.tokenizer,
        preset=args.preset,
        overrides=overrides,
        threads=args.threads,
        force=args.force,
        key_size=args.head_dim,
        context_length=args.context_length,
        name=args.name,
        show_progress=not args.quiet,
    )
    seconds = time.perf_counter() - start
    size = sum(t.nbytes for t in plan)
    print(
        f"wrote {args.output}: {len(plan)} tensors, {size / 2**30:.3f} GiB of tensor data in {seconds:.1f} s"
    )
    return 0

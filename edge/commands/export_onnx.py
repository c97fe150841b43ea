"""`grok-edge export-onnx`: write an onnxruntime-genai model folder from a Grok GGUF."""

from __future__ import annotations

import argparse
import sys
import time


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL.gguf", help="a Grok GGUF file")
    parser.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="the folder to write")
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=["int4", "int8", "fp16", "fp32"],
        help="weights: int4/int8 (MatMulNBits), fp16 or fp32 (default fp32)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite a non-empty OUT_DIR")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def run(args: argparse.Namespace) -> int:
    try:
        from edge.onnx import export_onnx
    except ImportError as e:
        raise RuntimeError(f"export-onnx needs the onnx extra (pip install 'grok-edge[onnx]'): {e}") from None

    def progress(msg: str) -> None:
        print(f"\r{msg}", end="", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    out = export_onnx(
        args.model, args.output, args.precision, force=args.force, progress=None if args.quiet else progress
    )
    if not args.quiet:
        print(file=sys.stderr)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"wrote {out} ({args.precision}, {size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
    return 0

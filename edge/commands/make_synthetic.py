"""`grok-edge make-synthetic`: write a random checkpoint in the exact Grok-1 release format."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from edge.convert.layout import CheckpointShape
from edge.convert.synthetic import PRESETS

_FIELDS = [f.name for f in dataclasses.fields(CheckpointShape)]


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", metavar="CKPT_DIR", help="directory to create (the ckpt-0 directory)")
    parser.add_argument("--size", default="tiny", choices=sorted(PRESETS), help="shape preset (default tiny)")
    for name in _FIELDS:
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=int, default=None, help=f"override {name}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from edge.convert.layout import leaf_specs
    from edge.convert.synthetic import make_synthetic

    base = PRESETS[args.size]
    shape = dataclasses.replace(
        base, **{n: getattr(args, n) for n in _FIELDS if getattr(args, n) is not None}
    )
    specs = leaf_specs(shape)
    with tqdm(total=len(specs), unit="file", disable=args.quiet, file=sys.stderr) as bar:
        make_synthetic(args.output, shape, seed=args.seed, progress=lambda _spec: bar.update(1))
    print(f"wrote {len(specs)} files to {args.output}: {shape}")
    return 0

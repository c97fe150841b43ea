"""The expert-cache options shared by `run` and `serve`."""

from __future__ import annotations

import argparse


def add_expert_cache_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--expert-cache",
        default=None,
        metavar="SIZE",
        help="keep experts in a RAM cache of SIZE (e.g. 8GiB), read from the file as needed "
        "(default: none, the whole file mapped)",
    )
    parser.add_argument(
        "--expert-policy",
        choices=["lfu", "lru"],
        default="lfu",
        help="expert cache policy (default: %(default)s)",
    )
    parser.add_argument(
        "--no-prefetch",
        action="store_true",
        help="no router-driven prefetch of the next layer's experts (default: prefetch on)",
    )

"""The expert-cache and device options shared by `run` and `serve`."""

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


def add_device_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="where the model runs: auto (a usable CUDA GPU, else the CPU), cpu, cuda (default: %(default)s)",
    )
    parser.add_argument(
        "--gpu-memory",
        default=None,
        metavar="SIZE",
        help="CUDA: device memory to use (e.g. 20GiB): dense weights and KV cache, then as many experts as "
        "fit, the others computed on the CPU (default: all free memory less a margin)",
    )

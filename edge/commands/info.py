"""`grok-edge info`: describe a GGUF file, or this system."""

from __future__ import annotations

import argparse
import json

from edge.system import system_info


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", nargs="?", help="a GGUF file")
    parser.add_argument("--system", action="store_true", help="print CPU features and CUDA devices")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    if args.system or not args.file:
        info = system_info()
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            cpu = ", ".join(k for k, v in info["cpu"].items() if v and k != "n_cores")
            print(f"grok-edge {info['version']}")
            print(f"cpu: {info['cpu']['n_cores']} logical cores; {cpu}")
            print(f"cuda: compiled={info['cuda_compiled']} devices={info['cuda_devices']}")
        return 0
    raise NotImplementedError("GGUF description is not built yet")

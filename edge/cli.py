"""The `grok-edge` command line: one subcommand per module in edge/commands/."""

from __future__ import annotations

import argparse
import importlib
import sys

# (subcommand, module under edge.commands); each module defines
#   register(parser: argparse.ArgumentParser) -> None  and  run(args: argparse.Namespace) -> int
COMMANDS: list[tuple[str, str, str]] = [
    ("info", "info", "describe a GGUF file (or this system with --system)"),
    ("demo", "demo", "convert the shipped tiny Grok model and generate from it"),
    ("run", "run", "generate text from a GGUF model (streams; -i for an interactive loop)"),
    ("convert", "convert", "convert the official Grok-1 checkpoint (ckpt-0) to GGUF"),
    ("make-synthetic", "make_synthetic", "write a random checkpoint in the exact Grok-1 release format"),
    ("export-onnx", "export_onnx", "export a GGUF to an onnxruntime-genai model folder (ONNX)"),
    ("serve", "serve", "serve a GGUF model over an OpenAI-compatible HTTP API (extra: server)"),
    ("plan", "plan", "place a model's weights on a machine (VRAM, RAM expert cache, storage); predict tok/s"),
    ("simulate", "simulate", "replay a --trace-experts file under a cache budget and policy; predict tok/s"),
]


def version_text() -> str:
    """grok-edge's version and the native engine's (they differ only in a broken install)."""
    from edge import __version__
    from edge._native import lib, string

    return f"grok-edge {__version__} (engine {string(lib.edge_version())})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grok-edge", description="Grok-1 on a desktop: convert, run, inspect."
    )
    parser.add_argument("--version", action="version", version=version_text())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name, help_text in COMMANDS:
        module = importlib.import_module(f"edge.commands.{module_name}")
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        module.register(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError, RuntimeError) as exc:  # clear one-line errors, no traceback
        print(f"grok-edge {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

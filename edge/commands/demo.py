"""`grok-edge demo`: convert the shipped tiny Grok-architecture model and generate from it.

The package ships a small model trained with tools/train_tiny.py (the Grok-1 architecture at
20 M parameters, trained on the King James Bible) in the release's own format: ``ckpt-0/`` pickles
of int8 weights with bf16 scales plus a SentencePiece ``tokenizer.model``. The demo runs the same
converter path as the real Grok-1 (``grok-edge convert``) for a few presets into a cache directory,
prints the file size of each, and generates a completion with the engine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

DEMO_PRESETS = ("f32", "q8_0", "q4_k_m", "q2_k")
DEFAULT_PROMPT = "And God said,"


def data_dir() -> Path:
    """The shipped model: ``ckpt-0/``, ``tokenizer.model``, ``model.json`` (and ``heldout.txt``)."""
    return Path(str(resources.files("edge") / "data" / "tiny-grok"))


def model_info() -> dict[str, Any]:
    return json.loads((data_dir() / "model.json").read_text())


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "grok-edge" / "demo"


def convert_preset(
    preset: str,
    out_dir: Path,
    *,
    force: bool = False,
    overrides: dict[str, str] | None = None,
    name: str | None = None,
    show_progress: bool = False,
) -> Path:
    """Convert the shipped checkpoint with ``preset`` into ``out_dir``. A file already there is reused when
    it is newer than the checkpoint and its ``.rev`` stamp names the current converter revision."""
    from edge.convert.pipeline import CONVERTER_REVISION, convert_checkpoint

    info = model_info()
    src = data_dir()
    out = out_dir / f"tiny-grok-{name or preset}.gguf"
    stamp = out.with_name(out.name + ".rev")
    fresh = (
        out.exists()
        and stamp.exists()
        and stamp.read_text().strip() == str(CONVERTER_REVISION)
        and out.stat().st_mtime >= (src / "model.json").stat().st_mtime
    )
    if fresh and not force:
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    convert_checkpoint(
        src / "ckpt-0",
        out,
        src / "tokenizer.model",
        preset=preset,
        overrides=overrides,
        force=True,
        key_size=int(info["key_size"]),
        context_length=int(info["context_length"]),
        name=str(info["name"]),
        show_progress=show_progress,
    )
    stamp.write_text(f"{CONVERTER_REVISION}\n")
    return out


def register(parser: argparse.ArgumentParser) -> None:
    from edge.commands.run import add_generation_options

    parser.add_argument(
        "-p", "--prompt", default=None, help=f"prompt text (default: the model's, {DEFAULT_PROMPT!r})"
    )
    parser.add_argument(
        "--preset",
        default="q4_k_m",
        choices=DEMO_PRESETS,
        help="the file to generate from (default: %(default)s)",
    )
    # the same names as `run` (-n/--n-predict/--max-tokens, --temp/--temperature, ...); a 20 M model
    # loops without a repeat penalty
    add_generation_options(parser, max_tokens=96, temperature=0.0, repeat_penalty=1.2, seed=0)
    parser.add_argument(
        "--out", type=Path, default=None, help="where the GGUF files go (default: ~/.cache/grok-edge/demo)"
    )
    parser.add_argument(
        "--force", action="store_true", help="convert again even if the files exist (default: off)"
    )


def run(args: argparse.Namespace) -> int:
    from edge.model import Model

    info = model_info()
    out_dir = args.out or default_cache_dir()
    ckpt_bytes = sum(f.stat().st_size for f in (data_dir() / "ckpt-0").iterdir())
    print(f"model: {info['name']} — {info['description']}")
    print(f"checkpoint: {data_dir()} ({ckpt_bytes / 2**20:.1f} MiB, release format: int8 + bf16 scales)")
    print(f"converting to {out_dir}:")
    files: dict[str, Path] = {}
    for preset in DEMO_PRESETS:
        t0 = time.perf_counter()
        files[preset] = convert_preset(preset, out_dir, force=args.force)
        took = time.perf_counter() - t0
        size = files[preset].stat().st_size
        print(f"  {preset:<8} {size / 2**20:8.2f} MiB  {files[preset].name}  ({took:.1f} s)")
    prompt = args.prompt if args.prompt is not None else info.get("prompt", DEFAULT_PROMPT)
    with Model(files[args.preset], n_ctx=int(info["context_length"]), seed=args.seed) as model:
        print(
            f"\ngenerating with {args.preset} (temperature {args.temperature}, "
            f"repeat penalty {args.repeat_penalty}):\n"
        )
        sys.stdout.write(prompt)
        sys.stdout.flush()
        n_chars = 0
        for piece in model.stream(
            prompt,
            max_tokens=args.max_tokens,
            temperature=args.temperature,
            repeat_penalty=args.repeat_penalty,
        ):
            sys.stdout.write(piece)
            sys.stdout.flush()
            n_chars += len(piece.strip())
        stats = model.last_stats
    print("\n")
    print(
        f"{stats.decode_tokens} tokens, {stats.decode_tokens_per_second:.1f} tokens/s "
        f"(prompt {stats.prompt_tokens} tokens, {stats.prompt_tokens_per_second:.1f} tokens/s)"
    )
    if n_chars == 0:
        print("grok-edge demo: error: the model generated no text", file=sys.stderr)
        return 1
    return 0

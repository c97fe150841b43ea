"""Converter throughput and peak memory on a >= 4 GB Grok-shaped synthetic checkpoint.

    python bench/convert.py --tokenizer /path/to/grok-1/tokenizer.model [--presets q8_0,q4_k_m,f16]

Makes the checkpoint with ``grok-edge make-synthetic --size medium --n-layers 8`` (4.4 GB; once,
reused if present), then runs ``grok-edge convert`` per preset as a child process and prints: seconds,
input MB/s (checkpoint bytes / wall time), output size, and the child's peak RSS (getrusage of that
child, via wait4). The converter streams, so peak RSS should stay far below the checkpoint size.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def run_child(cmd: list[str]) -> tuple[float, int]:
    """Run ``cmd``; return (wall seconds, peak RSS bytes of that child)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")
    return seconds, usage.ru_maxrss * 1024  # Linux reports KiB


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokenizer", required=True, help="Grok-1 tokenizer.model (131072 pieces)")
    parser.add_argument("--work", default="/tmp/grok-edge-bench-convert", help="scratch directory")
    parser.add_argument("--presets", default="q8_0,q4_k_m,f16")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the GGUF outputs")
    args = parser.parse_args()

    beside = Path(sys.executable).with_name("grok-edge")  # the venv's, not another install's
    exe = str(beside) if beside.exists() else shutil.which("grok-edge") or "grok-edge"
    work = Path(args.work)
    ckpt = work / "ckpt-0"
    if not (ckpt / "tensor00000_000").exists():
        if ckpt.exists():
            shutil.rmtree(ckpt)
        work.mkdir(parents=True, exist_ok=True)
        seconds, rss = run_child(
            [exe, "make-synthetic", str(ckpt), "--size", "medium", "--n-layers", "8", "--quiet"]
        )
        size = sum(f.stat().st_size for f in ckpt.iterdir())
        print(
            f"make-synthetic medium (8 layers): {size / 1e9:.2f} GB in {seconds:.1f} s "
            f"({size / 1e6 / seconds:.1f} MB/s), "
            f"peak RSS {rss / 2**20:.0f} MiB",
            flush=True,
        )
    in_bytes = sum(f.stat().st_size for f in ckpt.iterdir())
    print(f"checkpoint {ckpt}: {in_bytes / 1e9:.2f} GB, {len(list(ckpt.iterdir()))} files", flush=True)
    print(f"{'preset':<10}{'seconds':>10}{'in MB/s':>10}{'out GB':>10}{'peak RSS MiB':>14}", flush=True)
    for preset in args.presets.split(","):
        out = work / f"medium-{preset}.gguf"
        cmd = [exe, "convert", str(ckpt), "-o", str(out), "--tokenizer", args.tokenizer, "--preset", preset]
        cmd += ["--force", "--quiet", "--threads", str(args.threads)]
        seconds, rss = run_child(cmd)
        out_bytes = out.stat().st_size
        print(
            f"{preset:<10}{seconds:>10.1f}{in_bytes / 1e6 / seconds:>10.1f}{out_bytes / 1e9:>10.2f}"
            f"{rss / 2**20:>14.0f}",
            flush=True,
        )
        if not args.keep:
            out.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())

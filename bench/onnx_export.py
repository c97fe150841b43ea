"""ONNX export of a >= 4 GB Grok-shaped synthetic GGUF: peak RSS of the export, and onnxruntime loads it.

    python bench/onnx_export.py --tokenizer /path/to/grok-1/tokenizer.model [--precision int8]

Makes a release-format checkpoint with ``grok-edge make-synthetic --size medium --n-layers 10`` and
converts it with ``grok-edge convert --preset q8_0`` (4.4 GB GGUF; both reused if present), then, each
as a child process whose peak RSS is read with wait4:

1. ``grok-edge export-onnx`` (int8 by default: the Q8_0 blocks are repacked, not requantized);
2. a load of the exported folder in onnxruntime (CPU) that evaluates a 4-token prompt and one cached
   decode step, and prints the largest difference of the last logits from the engine's on the GGUF.
   Same Q8_0 weights, but the engine also rounds activations to 8 bits, which on these random weights
   moves its logits by several percent (3 layers of d 2048: 3 % against its own F32), so this is a
   smoke check; the numerics are tested at fp32 in tests/test_onnx_export.py.

docs/performance.md holds the current figures.

The exporter streams one matrix at a time into model.onnx.data, so its peak RSS should stay far below
the file size; the onnxruntime load maps/reads the weights and is expected to be about the model size.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

_CHECK = """
import sys, numpy as np
from edge.onnx import OnnxModel
from edge import Model
folder, gguf = sys.argv[1], sys.argv[2]
ids = [5, 1000, 2000, 3000]
with OnnxModel(folder, n_ctx=64) as m:
    m.eval(ids)
    a = m.eval([42])
with Model(gguf, n_ctx=64, kv_type="f32") as e:
    e.eval(ids)
    b = e.eval([42])
print(f"onnxruntime ran prompt + 1 decode step; last logits max |diff| / max |logit| vs engine: "
      f"{np.abs(a - b).max() / np.abs(b).max():.2e}, argmax equal: {int(a.argmax()) == int(b.argmax())}")
"""


def run_child(cmd: list[str]) -> tuple[float, int]:
    """Run ``cmd``; return (wall seconds, peak RSS bytes of that child)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"failed ({code}): {' '.join(cmd)}")
    return time.perf_counter() - start, usage.ru_maxrss * 1024  # Linux reports KiB


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokenizer", required=True, help="Grok-1 tokenizer.model (131072 pieces)")
    parser.add_argument("--work", default="/tmp/grok-edge-bench-onnx", help="scratch directory")
    parser.add_argument("--precision", default="int8", choices=["int4", "int8", "fp16", "fp32"])
    parser.add_argument("--n-layers", type=int, default=10)
    parser.add_argument("--keep", action="store_true", help="keep the exported folder")
    args = parser.parse_args()

    beside = Path(sys.executable).with_name("grok-edge")
    exe = str(beside) if beside.exists() else shutil.which("grok-edge") or "grok-edge"
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    gguf = work / f"medium-{args.n_layers}-q8_0.gguf"
    if not gguf.exists():
        ckpt = work / "ckpt-0"
        if ckpt.exists():
            shutil.rmtree(ckpt)
        sec, rss = run_child(
            [
                exe,
                "make-synthetic",
                str(ckpt),
                "--size",
                "medium",
                "--n-layers",
                str(args.n_layers),
                "--quiet",
            ]
        )
        print(f"make-synthetic: {sec:.0f} s, peak RSS {rss / 2**20:.0f} MiB", flush=True)
        cmd = [exe, "convert", str(ckpt), "-o", str(gguf), "--tokenizer", args.tokenizer, "--preset", "q8_0"]
        sec, rss = run_child([*cmd, "--force", "--quiet"])
        print(f"convert q8_0: {sec:.0f} s, peak RSS {rss / 2**20:.0f} MiB", flush=True)
        shutil.rmtree(ckpt)
    size = gguf.stat().st_size
    out = work / f"onnx-{args.precision}"
    sec, rss = run_child(
        [exe, "export-onnx", str(gguf), "-o", str(out), "--precision", args.precision, "--force", "--quiet"]
    )
    out_size = sum(f.stat().st_size for f in out.iterdir())
    print(
        f"export-onnx {args.precision}: GGUF {size / 1e9:.2f} GB -> folder {out_size / 1e9:.2f} GB "
        f"in {sec:.0f} s, "
        f"peak RSS {rss / 2**20:.0f} MiB ({rss / size:.1%} of the GGUF)",
        flush=True,
    )
    sec, rss = run_child([sys.executable, "-c", _CHECK, str(out), str(gguf)])
    print(f"onnxruntime load + run: {sec:.0f} s, peak RSS {rss / 2**20:.0f} MiB (engine in the same process)")
    if not args.keep:
        shutil.rmtree(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

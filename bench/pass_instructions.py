"""Instructions executed by one forward pass on this CPU: a prompt and a decode step, per kernel path.

    python bench/pass_instructions.py MODEL.gguf [MODEL.gguf ...] [--prompt 32] [--paths scalar,avx2]

Builds bench/pass_instructions.c against the installed library (edge/libedge.so, edge/include/edge.h)
and runs it under valgrind's callgrind with one thread, instrumentation on only around the measured
evaluation: a --prompt-token prompt, and one decode step after such a prompt. Counts are exact and
repeatable (the same binary and file give the same count), so a restructuring's cost shows as a
difference of a few instructions, where timings here move by tens of percent. Valgrind cannot run
AVX-512 code; the paths it can run are scalar and avx2.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import edge

HERE = Path(__file__).resolve().parent
ISA = {"auto": -1, "scalar": 0, "avx2": 1, "avx512": 2}


def build(out: Path) -> Path:
    pkg = Path(edge.__file__).resolve().parent
    program = out / "pass_instructions"
    cmd = ["cc", "-O2", f"-I{pkg / 'include'}", str(HERE / "pass_instructions.c"), "-o", str(program)]
    cmd += [f"-L{pkg}", "-ledge", f"-Wl,-rpath,{pkg}"]
    subprocess.run(cmd, check=True)
    return program


def count(program: Path, model: Path, mode: str, n_prompt: int, isa: int, out: Path) -> int:
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out / 'cg.out'}"]
    cmd += [str(program), str(model), mode, str(n_prompt), str(isa)]
    run = subprocess.run(cmd, capture_output=True, text=True, check=True)
    found = re.search(r"Collected : (\d+)", run.stderr)
    if not found:
        raise RuntimeError(f"no callgrind total in: {run.stderr[-500:]}")
    return int(found.group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--prompt", type=int, default=32, help="prompt tokens (default 32)")
    ap.add_argument("--paths", default="scalar,avx2", help="kernel paths (default scalar,avx2)")
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian package valgrind)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        program = build(out)
        print(f"{'model':<24} {'path':<8} {'prompt':>16} {'decode':>14}")
        for model in args.models:
            for path in args.paths.split(","):
                prompt = count(program, model, "prompt", args.prompt, ISA[path], out)
                decode = count(program, model, "decode", args.prompt, ISA[path], out)
                print(f"{model.name:<24} {path:<8} {prompt:>16,} {decode:>14,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

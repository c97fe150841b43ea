"""Instructions per decoded token on arm64, per kernel path, counted under emulation (no arm64 machine here).

    python bench/arm64_instructions.py [--presets q4_k_m,q8_0] [--workdir /tmp/grok-edge-arm64]

Cross-builds libedge for aarch64 (cmake/aarch64-linux-gnu.cmake; cached in build/arm64) and
tests/support/arm64_model_driver.c, converts the shipped demo model (edge/data/tiny-grok: Grok-1's
architecture, d_model 256, 11 layers, 8 experts top-2, vocab 4096) at each preset, and runs one-token
decode steps under qemu-aarch64 -cpu max with one thread, for each path: scalar (scalar kernels,
attention and GELU), neon (ARMv8.0 Advanced SIMD) and neon_dotprod (sdot).

Counter: qemu's TCG plugin interface, with bench/qemu_insn_count.c (built here with the host
compiler; Debian's qemu-user supports plugins but ships none): every translated block adds its
instruction count to a counter each time it runs, i.e. the guest instructions executed (valgrind
cannot run arm64 code on this x86-64 host). Instructions are exact and repeatable, unlike emulated
time; they are not cycles: a NEON instruction does 4-16 lanes of work and may cost more than a
scalar one on a real core, so the ratio is not a speed-up, and decode on a real Mac is bound by
memory bandwidth as much as by instructions.

Per decoded token = (count with D2 decoded tokens - count with D1) / (D2 - D1), after the same 1-token prompt:
loading, context creation and the prompt cancel out, and each decoded token attends to a few more keys than
the one before (a tiny share here: the context is at most D2 + 1 positions).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "support"))

from arm64_build import cross_build, cross_program, missing_tools, run_qemu  # noqa: E402
from native_build import c_compiler  # noqa: E402

PATHS = ("scalar", "neon", "neon_dotprod")
D1, D2 = 2, 6
TOKENS = [(i * 577 + 13) % 4000 + 20 for i in range(1 + D2)]


def build_plugin(workdir: Path) -> Path:
    out = workdir / "libqemu_insn_count.so"
    src = ROOT / "bench" / "qemu_insn_count.c"
    cmd = [c_compiler(), "-shared", "-fPIC", "-O2", str(src), "-o", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out


def demo_gguf(workdir: Path, preset: str) -> Path:
    from edge.convert.pipeline import convert_checkpoint

    from edge.commands.demo import data_dir, model_info

    out = workdir / f"tiny-grok-{preset}.gguf"
    if not out.exists():
        convert_checkpoint(
            data_dir() / "ckpt-0",
            out,
            data_dir() / "tokenizer.model",
            preset=preset,
            key_size=int(model_info()["key_size"]),
            show_progress=False,
        )
    return out


def instructions(driver: Path, plugin: Path, gguf: Path, path: str, n_decode: int, workdir: Path) -> int:
    """Guest instructions of the driver: load, a 1-token prompt, n_decode decoded tokens (one thread)."""
    tokens = [str(t) for t in TOKENS[: 1 + n_decode]]
    args = [str(gguf), path, "f16", "1", str(workdir / "logits.f32"), "1", *tokens]
    run = run_qemu("max", driver, args, plugin=plugin, timeout=3600)
    if run.returncode != 0:
        raise RuntimeError(f"{path}: {run.stdout}{run.stderr}")
    m = re.search(r"qemu_insn_count: (\d+)", run.stderr)
    if not m:
        raise RuntimeError(f"no instruction count in: {run.stderr[-2000:]}")
    return int(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", default="q4_k_m,q8_0", help="demo model presets (comma-separated)")
    ap.add_argument(
        "--workdir", type=Path, default=None, help="converted files and logits (default: a temp dir)"
    )
    args = ap.parse_args()
    missing = missing_tools()
    if missing:
        sys.exit(f"cannot run: {missing}")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        build = cross_build()
        driver = cross_program(
            build, [ROOT / "tests" / "support" / "arm64_model_driver.c"], workdir / "arm64_model_driver"
        )
        plugin = build_plugin(workdir)
        print("instructions per decoded token, qemu-aarch64 -cpu max, 1 thread, F16 KV cache, demo model")
        print(f"(decoded tokens {D1 + 1}..{D2} of a 1-token prompt; counter: bench/qemu_insn_count.c)")
        print(f"{'preset':8} {'path':13} {'instructions/token':>19} {'scalar / path':>14}")
        for preset in args.presets.split(","):
            gguf = demo_gguf(workdir, preset)
            per_token = {}
            for path in PATHS:
                lo = instructions(driver, plugin, gguf, path, D1, workdir)
                hi = instructions(driver, plugin, gguf, path, D2, workdir)
                per_token[path] = (hi - lo) / (D2 - D1)
            for path in PATHS:
                ratio = per_token["scalar"] / per_token[path]
                print(f"{preset:8} {path:13} {per_token[path]:19,.0f} {ratio:13.2f}x")


if __name__ == "__main__":
    main()

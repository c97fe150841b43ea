"""Structure-aware fuzzing of hostile models, saved states and release pickles (no atheris needed).

    python tests/fuzz/fuzz_hostile.py model  [--seconds 60] [--seed 0] [--artifacts DIR]
    python tests/fuzz/fuzz_hostile.py pickle [--seconds 60] [--seed 0] [--artifacts DIR]
    python tests/fuzz/fuzz_hostile.py seeds    # rewrite tests/fuzz/corpus_pickle and corpus_model

``model`` mutates the micro Grok GGUFs of models.py (metadata values and types, dims, tensor types,
offsets, data) and runs each mutant through edge.Model, logits, save/load_state (with hostile states),
tokenize and generate; ``pickle`` mutates release pickles (opcodes, globals, integer arguments) and reads
them with the safe unpickler. Every input runs in a forked child with an address-space limit, a CPU-time
timer and a wall-clock alarm (harness.py); an exception outside the contract (EdgeError, or ValueError /
OSError with a clear message), a crash or a timeout is a failure, saved under --artifacts. The committed
corpora (seeds and the reproducers of issue 27) are run first. Exit status 1 when anything failed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import harness  # noqa: E402
import models  # noqa: E402
import pickles  # noqa: E402

CORPORA = {"model": HERE / "corpus_model", "pickle": HERE / "corpus_pickle"}
TARGETS = {"model": (models.exercise, models.mutate), "pickle": (pickles.exercise, pickles.mutate)}
LIMITS = {
    "model": harness.Limits(cpu_seconds=5.0, wall_seconds=30, memory_bytes=1 << 30),
    "pickle": harness.Limits(cpu_seconds=2.0, wall_seconds=20, memory_bytes=512 << 20),
}


def corpus(kind: str) -> list[bytes]:
    """The committed corpus of ``kind`` (seeds and regression inputs), in name order."""
    return [p.read_bytes() for p in sorted(CORPORA[kind].iterdir()) if p.is_file()]


def write_seeds() -> None:
    CORPORA["pickle"].mkdir(exist_ok=True)
    for name, data in pickles.seeds().items():
        (CORPORA["pickle"] / name).write_bytes(data)
    for name, (data, _) in pickles.reproducers().items():
        (CORPORA["pickle"] / name).write_bytes(data)
    CORPORA["model"].mkdir(exist_ok=True)
    for name, data in models.seeds().items():
        (CORPORA["model"] / name).write_bytes(data)
    for kind, directory in CORPORA.items():
        print(f"{kind}: {len(list(directory.iterdir()))} files in {directory}")


def run(kind: str, seconds: float, seed: int, artifacts: Path | None) -> harness.CampaignStats:
    target, mutate = TARGETS[kind]
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{kind}-") as work:
        return harness.campaign(
            target,
            corpus(kind),
            mutate,
            seconds,
            Path(work),
            rng_seed=seed,
            limits=LIMITS[kind],
            artifacts=artifacts,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=[*TARGETS, "seeds"])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--artifacts", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.kind == "seeds":
        write_seeds()
        return 0
    stats = run(args.kind, args.seconds, args.seed, args.artifacts)
    print(stats.summary(args.kind))
    for outcome, data in stats.failures[:5]:
        print(f"--- {outcome.kind} on {len(data)} bytes:\n{outcome.detail[-3000:]}")
    return 1 if stats.failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""Run untrusted inputs in forked children with bounded time and memory, and check the error contract.

The contract for hostile files (GGUF models, release pickles, saved states, tokenizer metadata): the
call either succeeds or raises an ``EdgeError`` subclass, or a ``ValueError`` / ``OSError`` with a clear
message (one that is not empty and not huge). Anything else is a *violation*: another exception type
(TypeError, OverflowError, RecursionError, MemoryError, KeyError, ...), a crash (signal), running past the
CPU or wall-clock limit, or growing past the address-space limit.

Each input runs in a child of ``os.fork()`` with ``RLIMIT_AS`` set to what the parent already maps plus a
budget, a CPU-time timer (SIGPROF) and a wall-clock alarm (SIGALRM); the default action of both signals
kills the child. The child reports through a pipe and leaves with ``os._exit`` (no atexit, no flushing of
the parent's buffers).

``campaign`` mutates seeds for a bounded time and runs every mutant this way (not coverage-guided: the
mutators know the formats instead), keeping the mutants that were accepted as further parents.
"""

from __future__ import annotations

import hashlib
import os
import random
import resource
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

MAX_MESSAGE = 2000  # characters: a longer error message is not a clear one (it printed some object)


def in_contract(exc: BaseException) -> bool:
    """True for the exceptions hostile input may raise: EdgeError, or ValueError/OSError, clearly worded."""
    from edge._native import EdgeError

    if not isinstance(exc, (EdgeError, ValueError, OSError)):
        return False
    message = str(exc)
    return 0 < len(message) <= MAX_MESSAGE and "Traceback" not in message


@dataclass(frozen=True)
class Limits:
    cpu_seconds: float = 2.0  # CPU time of the child, all threads (ITIMER_PROF)
    wall_seconds: int = 20  # backstop on a busy machine (alarm)
    memory_bytes: int = 1 << 30  # address space the child may add to what it inherits


@dataclass(frozen=True)
class Outcome:
    kind: str  # "ok", "rejected" (in contract), "violation", "crash", "timeout"
    detail: str = ""
    cpu_seconds: float = 0.0
    max_rss_kib: int = 0

    @property
    def failed(self) -> bool:
        return self.kind in ("violation", "crash", "timeout")


def _mapped_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def run_forked(target: Callable[[str], object], path: str, limits: Limits = Limits()) -> Outcome:
    """Run ``target(path)`` in a forked child under ``limits``; classify how it ended."""
    read_end, write_end = os.pipe()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    pid = os.fork()
    if pid == 0:  # child
        status = 0
        try:
            os.close(read_end)
            signal.signal(signal.SIGPROF, signal.SIG_DFL)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            cap = _mapped_bytes() + limits.memory_bytes
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
            signal.setitimer(signal.ITIMER_PROF, limits.cpu_seconds)
            signal.alarm(limits.wall_seconds)
            try:
                target(path)
                report = "ok\n"
            except BaseException as exc:  # noqa: BLE001  (classifying every exception is the point)
                if in_contract(exc):
                    report = f"rejected\n{type(exc).__name__}: {exc}"
                else:
                    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                    report = f"violation\n{text[-6000:]}"
            signal.setitimer(signal.ITIMER_PROF, 0)
            signal.alarm(0)
            data = report.encode("utf-8", "replace")[:60000]
            while data:
                data = data[os.write(write_end, data) :]
        except BaseException:  # noqa: BLE001
            status = 3
        finally:
            os._exit(status)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    _, wait_status = os.waitpid(pid, 0)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    rss = after.ru_maxrss  # the largest child so far: an upper bound for this one
    report = b"".join(chunks).decode("utf-8", "replace")
    kind, _, detail = report.partition("\n")
    if os.WIFSIGNALED(wait_status):
        sig = os.WTERMSIG(wait_status)
        if sig in (signal.SIGPROF, signal.SIGALRM):
            return Outcome("timeout", f"killed by {signal.Signals(sig).name}", cpu, rss)
        return Outcome("crash", f"killed by {signal.Signals(sig).name}", cpu, rss)
    if os.WEXITSTATUS(wait_status) != 0 or kind not in ("ok", "rejected", "violation"):
        return Outcome("crash", f"exit status {os.WEXITSTATUS(wait_status)}: {report[:2000]}", cpu, rss)
    return Outcome(kind, detail, cpu, rss)


Mutator = Callable[[bytes, random.Random, Sequence[bytes]], bytes]


@dataclass
class CampaignStats:
    executions: int = 0
    accepted: int = 0
    rejected: int = 0
    seconds: float = 0.0
    failures: list[tuple[Outcome, bytes]] = field(default_factory=list)
    rejections: dict[str, int] = field(default_factory=dict)  # first words of each message, counted

    def summary(self, name: str) -> str:
        return (
            f"{name}: {self.executions} executions in {self.seconds:.1f} s "
            f"({self.executions / max(self.seconds, 1e-9):.0f}/s), {self.accepted} accepted, "
            f"{self.rejected} rejected ({len(self.rejections)} distinct errors), "
            f"{len(self.failures)} contract violations"
        )


def _message_class(detail: str) -> str:
    """A coarse class of a rejection message (file names and numbers dropped), to count distinct ones."""
    words = [w for w in detail.replace(":", " ").split() if not any(c.isdigit() or c == "/" for c in w)]
    return " ".join(words[:8])


def campaign(
    target: Callable[[str], object],
    seeds: Sequence[bytes],
    mutate: Mutator,
    seconds: float,
    workdir: Path,
    *,
    rng_seed: int = 0,
    limits: Limits = Limits(),
    artifacts: Path | None = None,
    max_pool: int = 256,
) -> CampaignStats:
    """Run every seed, then mutants of the pool, each in a forked child, until ``seconds`` have passed.
    Failures are returned (and written to ``artifacts`` as ``failure-<kind>-<sha1>``)."""
    rng = random.Random(rng_seed)
    stats = CampaignStats()
    pool = list(seeds)
    input_path = workdir / "input"
    start = time.monotonic()
    queue = list(seeds)
    while queue or time.monotonic() - start < seconds:
        data = queue.pop(0) if queue else mutate(rng.choice(pool), rng, pool)
        input_path.write_bytes(data)
        outcome = run_forked(target, str(input_path), limits)
        stats.executions += 1
        if outcome.failed:
            stats.failures.append((outcome, data))
            if artifacts is not None:
                artifacts.mkdir(parents=True, exist_ok=True)
                digest = hashlib.sha1(data).hexdigest()[:16]
                (artifacts / f"failure-{outcome.kind}-{digest}").write_bytes(data)
                (artifacts / f"failure-{outcome.kind}-{digest}.txt").write_text(outcome.detail)
        elif outcome.kind == "ok":
            stats.accepted += 1
            if len(pool) < max_pool:
                pool.append(data)
            else:
                pool[rng.randrange(len(seeds), max_pool)] = data
        else:
            stats.rejected += 1
            key = _message_class(outcome.detail)
            stats.rejections[key] = stats.rejections.get(key, 0) + 1
    stats.seconds = time.monotonic() - start
    return stats

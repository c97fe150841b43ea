"""Continuous batching: one thread owns an edge.BatchContext of ``n_seq`` slots and advances every active
request together, one ``BatchContext.eval`` per step.

A step holds each decoding request's next token and, in what is left of ``n_batch``, the next prompt
tokens of requests still reading their prompt; new requests join at the next step (continuous batching).
A request is placed in the free slot whose cached tokens share the longest prefix with its prompt, and
only the rest of the prompt is evaluated (prompt-prefix reuse per slot). Requests wait in a bounded
queue (``QueueFull`` when it is full); a cancelled request (client gone) or one past its deadline leaves
at the next step and frees its slot.

Events go to each request's ``emit`` callback from the scheduler thread: ("text", str), then ("done",
None) or ("error", message).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edge.batch import BatchContext
from edge.generation import Generation, GenerationParams


class QueueFull(Exception):
    """The request queue is full (the server answers 429)."""


@dataclass
class Job:
    prompt_ids: list[int]
    params: GenerationParams
    emit: Callable[[str, Any], None]
    deadline: float  # time.monotonic() after which the request is ended with an error
    cancelled: bool = False
    slot: int | None = None
    todo: list[int] = field(default_factory=list)  # prompt tokens not yet evaluated
    gen: Generation | None = None
    reused: int = 0  # prompt tokens found in the slot's cache

    def cancel(self) -> None:
        """Called from any thread: the job leaves at the scheduler's next step."""
        self.cancelled = True


@dataclass
class Stats:
    requests_done: int = 0
    requests_cancelled: int = 0
    requests_timed_out: int = 0
    requests_failed: int = 0
    prompt_tokens: int = 0  # evaluated (not reused)
    prompt_tokens_reused: int = 0
    completion_tokens: int = 0
    steps: int = 0


class Scheduler:
    def __init__(self, bc: BatchContext, tokenizer: Any, max_queue: int = 64) -> None:
        self.bc = bc
        self.tokenizer = tokenizer
        self.max_queue = max_queue
        self.stats = Stats()
        self._pending: collections.deque[Job] = collections.deque()
        self._active: list[Job] = []
        self._free = list(range(bc.n_seq))
        self._cv = threading.Condition()
        self._running = False
        self._thread: threading.Thread | None = None
        self._recent: collections.deque[tuple[float, int]] = collections.deque()  # (time, tokens) per step

    # -- from other threads --------------------------------------------------------------------------

    def start(self) -> None:
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="grok-edge-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cv:
            self._running = False
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def submit(self, job: Job) -> None:
        with self._cv:
            if len(self._pending) >= self.max_queue:
                raise QueueFull(
                    f"{len(self._pending)} requests are waiting (the queue holds {self.max_queue})"
                )
            self._pending.append(job)
            self._cv.notify_all()

    def queue_depth(self) -> int:
        return len(self._pending)

    def slots_busy(self) -> int:
        return self.bc.n_seq - len(self._free)

    def tokens_per_second(self, window: float = 10.0) -> float:
        """Tokens generated per second over the last ``window`` seconds."""
        now = time.monotonic()
        recent = [(t, n) for t, n in list(self._recent) if now - t <= window]
        if not recent:
            return 0.0
        return sum(n for _, n in recent) / window

    # -- the scheduler thread ------------------------------------------------------------------------

    def _admit(self) -> None:
        """Move queued jobs into free slots (called with the lock held)."""
        while self._pending and self._free:
            job = self._pending.popleft()
            if job.cancelled:
                self.stats.requests_cancelled += 1
                continue
            if time.monotonic() > job.deadline:
                self.stats.requests_timed_out += 1
                job.emit("error", "the request timed out in the queue")
                continue
            best, best_common = self._free[0], -1
            for s in self._free:
                common = 0
                for a, b in zip(self.bc.tokens(s), job.prompt_ids, strict=False):
                    if a != b:
                        break
                    common += 1
                if common > best_common:
                    best, best_common = s, common
            self._free.remove(best)
            common = min(best_common, len(job.prompt_ids) - 1)  # the last prompt token gives the logits
            self.bc.truncate(best, common)
            job.slot, job.todo, job.reused = best, job.prompt_ids[common:], common
            self.stats.prompt_tokens_reused += common
            self._active.append(job)

    def _release(self, job: Job) -> None:
        self._active.remove(job)
        if job.slot is not None:
            self._free.append(job.slot)
            job.slot = None

    def _loop(self) -> None:
        while True:
            with self._cv:
                self._admit()
                while self._running and not self._active:
                    self._cv.wait()
                    self._admit()
                if not self._running:
                    for job in self._active + list(self._pending):
                        job.emit("error", "the server is shutting down")
                    return
            now = time.monotonic()
            for job in list(self._active):
                if job.cancelled:
                    self.stats.requests_cancelled += 1
                    self._release(job)
                elif now > job.deadline:
                    self.stats.requests_timed_out += 1
                    self._release(job)  # the slot is free before the client hears of it
                    job.emit("error", "the request timed out")
            if self._active:
                try:
                    self._step()
                except Exception as exc:  # a bug must not hang every request: end the active ones, go on
                    for job in list(self._active):
                        self.stats.requests_failed += 1
                        if job.slot is not None:
                            self.bc.truncate(job.slot, 0)
                        self._release(job)
                        job.emit("error", f"internal error: {exc}")

    def _step(self) -> None:
        seqs: list[int] = []
        toks: list[int] = []
        want: list[bool] = []
        owners: list[Job] = []  # the job of each wanted row
        budget = self.bc.n_batch
        for job in self._active:  # decoding jobs first: one token each
            if job.gen is not None and job.gen.next_token is not None:
                seqs.append(job.slot)  # type: ignore[arg-type]
                toks.append(job.gen.next_token)  # type: ignore[arg-type]
                want.append(True)
                owners.append(job)
                budget -= 1
        for job in self._active:  # then prompts, in arrival order, in what is left of the pass
            if job.gen is None and job.todo and budget > 0:
                take = job.todo[:budget]
                job.todo = job.todo[len(take) :]
                seqs.extend([job.slot] * len(take))  # type: ignore[list-item]
                toks.extend(take)
                want.extend([False] * (len(take) - 1) + [not job.todo])
                if not job.todo:
                    owners.append(job)
                budget -= len(take)
                self.stats.prompt_tokens += len(take)
        if not toks:
            return
        try:
            logits = self.bc.eval(seqs, toks, want)
        except Exception as exc:  # the engine refused the step: end its jobs, keep serving
            for job in {id(j): j for j in self._active}.values():
                if job.slot is not None and job.slot in seqs:
                    self.stats.requests_failed += 1
                    self.bc.truncate(job.slot, 0)
                    self._release(job)
                    job.emit("error", f"engine error: {exc}")
            return
        self.stats.steps += 1
        generated = 0  # tokens sampled in this step
        for row, job in enumerate(owners):
            if job.cancelled:
                continue
            if job.gen is None:
                job.gen = Generation(self.tokenizer, job.prompt_ids, job.params, self.bc.n_ctx)
            try:
                text = job.gen.step(logits[row])
            except Exception as exc:  # a sampling error (bad parameters that passed validation)
                self.stats.requests_failed += 1
                self._release(job)
                job.emit("error", f"sampling error: {exc}")
                continue
            generated += 1
            if text:
                job.emit("text", text)
            if job.gen.finish_reason is not None:
                self.stats.requests_done += 1
                self._release(job)
                job.emit("done", job.gen)
        self.stats.completion_tokens += generated
        now = time.monotonic()
        self._recent.append((now, generated))
        while self._recent and now - self._recent[0][0] > 60.0:
            self._recent.popleft()

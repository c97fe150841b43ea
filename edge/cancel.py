"""`CancelToken`: stop a generation or evaluation from another thread or an asyncio task."""

from __future__ import annotations

import threading
from collections.abc import Callable


class CancelToken:
    """Pass as ``cancel=`` to :meth:`edge.Model.generate`, ``stream`` or ``eval``; :meth:`cancel` stops that
    call within one layer of the forward pass (the engine checks between layers).

    :meth:`cancel` is thread-safe and returns at once, so it may be called from any thread, a signal handler's
    thread, or an asyncio task (for a generation run with ``asyncio.to_thread``). A token stays cancelled: use
    a new one for the next call."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = False
        self._hooks: list[Callable[[], None]] = []

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        """Request the cancellation of the call(s) this token was given to."""
        with self._lock:
            self._cancelled = True
            hooks = list(self._hooks)
        for hook in hooks:  # outside the lock: a hook takes its model's locks
            hook()

    def _attach(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` on cancellation (at once if already cancelled)."""
        with self._lock:
            self._hooks.append(hook)
            now = self._cancelled
        if now:
            hook()

    def _detach(self, hook: Callable[[], None]) -> None:
        with self._lock:
            if hook in self._hooks:
                self._hooks.remove(hook)

    def __repr__(self) -> str:
        return f"CancelToken(cancelled={self._cancelled})"

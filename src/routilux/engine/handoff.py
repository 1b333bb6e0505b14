"""Hand calls from worker threads to the event loop without waiting for them.

Sync routine logic runs in worker threads but every engine structure lives on the loop. Logging
and progress from a thread must not cost a blocking round trip each, so calls are appended to a
thread-safe queue and one task drains the whole batch; only the first call of a batch pays for a
wake-up of the loop.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from anyio.from_thread import BlockingPortal


class ThreadHandoff:
    """Batches ``submit`` calls from any thread into one drain on the loop thread."""

    def __init__(self, portal: BlockingPortal) -> None:
        self._portal = portal
        self._calls: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._scheduled = False
        self._draining = False
        self.batches = 0

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """From a worker thread: run ``fn(*args)`` on the loop soon, in submission order."""
        self._calls.append((fn, args))
        if not self._scheduled:
            self._scheduled = True
            self._portal.start_task_soon(self._drain_task)

    @property
    def pending(self) -> bool:
        return bool(self._calls)

    def drain(self) -> None:
        """On the loop thread: run every call submitted so far, oldest first.

        Called before anything is published so that what a thread logged before it emitted is
        seen before the emission. Re-entrant calls (a drained call publishing) are ignored.
        """
        if self._draining:
            return
        self._draining = True
        calls = self._calls
        try:
            while calls:
                fn, args = calls.popleft()
                fn(*args)
        finally:
            self._draining = False

    async def _drain_task(self) -> None:
        self._scheduled = False
        self.batches += 1
        self.drain()

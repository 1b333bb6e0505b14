"""One timer task for every deadline in the engine.

Job timeouts and time-based policies need wake-ups; giving each job its own sleeping task would
cost memory and scheduler work per idle job. Instead every deadline goes into one heap served by
a single task that sleeps until the earliest one, so ten thousand idle jobs cost ten thousand
heap entries and nothing else.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections.abc import Callable
from typing import Any

import anyio

log = logging.getLogger("routilux.engine")


class TimerHandle:
    """A scheduled callback; :meth:`cancel` makes sure it never runs."""

    __slots__ = ("deadline", "callback", "args", "cancelled", "_queue")

    def __init__(self, queue: TimerQueue, deadline: float, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self._queue = queue
        self.deadline = deadline
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self._queue._cancelled += 1


class TimerQueue:
    """A heap of deadlines on the ``anyio.current_time()`` clock, served by :meth:`run`."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._counter = itertools.count()
        self._cancelled = 0
        self._changed = anyio.Event()

    def __len__(self) -> int:
        return len(self._heap) - self._cancelled

    def call_at(self, deadline: float, callback: Callable[..., Any], *args: Any) -> TimerHandle:
        """Run ``callback(*args)`` on the loop thread at ``deadline`` (or soon after)."""
        handle = TimerHandle(self, deadline, callback, args)
        earliest = self._heap[0][0] if self._heap else math.inf
        heapq.heappush(self._heap, (deadline, next(self._counter), handle))
        if deadline < earliest:
            self._changed.set()
        return handle

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> TimerHandle:
        return self.call_at(anyio.current_time() + delay, callback, *args)

    def _compact(self) -> None:
        # Cancelled entries are removed lazily; rebuild when they are most of the heap so
        # finished jobs' long timeouts don't pile up.
        if self._cancelled > 1024 and self._cancelled * 2 > len(self._heap):
            self._heap = [entry for entry in self._heap if not entry[2].cancelled]
            heapq.heapify(self._heap)
            self._cancelled = 0

    async def run(self) -> None:
        """Serve deadlines forever (until cancelled by the owning task group)."""
        while True:
            now = anyio.current_time()
            while self._heap and (self._heap[0][2].cancelled or self._heap[0][0] <= now):
                _, _, handle = heapq.heappop(self._heap)
                if handle.cancelled:
                    self._cancelled -= 1
                    continue
                handle.cancelled = True  # fired: a late cancel() is a no-op
                try:
                    handle.callback(*handle.args)
                except Exception:  # one broken callback must not stop every other deadline
                    log.exception("timer callback %r failed", handle.callback)
            self._compact()
            self._changed = anyio.Event()
            delay = self._heap[0][0] - anyio.current_time() if self._heap else math.inf
            with anyio.move_on_after(delay):
                await self._changed.wait()

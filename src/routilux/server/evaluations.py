"""``evaluate`` requests: a few at a time, each in a worker thread, bounded in CPU and wall time.

An expression is bounded by the language (:mod:`routilux.debug.expressions`): each step costs at
most a few milliseconds, and an evaluation at most 50 ms of its thread's CPU. Many at once would
still share one GIL with the event loop, so only ``concurrency`` run at a time
(``ROUTILUX_EVALUATE_CONCURRENCY``); one more is refused at once with 503
``evaluations_busy`` and ``Retry-After`` rather than queued, so a burst of callers can neither
hold connections nor slow the loop. Each also has a wall-clock bound, so its answer comes within
about 100 ms even when it is starved of the GIL.

Breakpoint conditions are not run here: they run on the event loop when an activation reaches
them, one at a time by nature, each bounded to 10 ms of CPU (:mod:`routilux.debug.session`).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any, Final

import anyio

from routilux.debug.expressions import evaluate
from routilux.server.errors import Unavailable

#: The longest an ``evaluate`` request computes, in wall time.
WALL_LIMIT: Final = 0.09


class Evaluations:
    def __init__(self, concurrency: int, *, wall_limit: float = WALL_LIMIT) -> None:
        self.concurrency = concurrency
        self.wall_limit = wall_limit
        self._running = anyio.CapacityLimiter(concurrency)
        #: Requests refused because ``concurrency`` were running (for logs and tests).
        self.refused = 0

    async def evaluate(self, expression: str, names: Mapping[str, Any]) -> Any:
        """The value of ``expression`` against ``names`` (ExpressionError if refused), or
        :class:`~routilux.server.errors.Unavailable` if ``concurrency`` are running already."""
        try:
            self._running.acquire_nowait()
        except anyio.WouldBlock:
            self.refused += 1
            raise Unavailable(
                "evaluations_busy",
                f"{self.concurrency} expressions are being evaluated already (ROUTILUX_EVALUATE_CONCURRENCY); "
                "retry shortly",
                retry_after=1,
            ) from None
        try:
            return await anyio.to_thread.run_sync(partial(evaluate, expression, names, wall_limit=self.wall_limit))
        finally:
            self._running.release()

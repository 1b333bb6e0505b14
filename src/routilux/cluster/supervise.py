"""Supervision of a cluster part's task: restarted, with backoff, when it fails.

Each part (event bridge, membership, channel) already retries a lost Redis itself. This is the
second line, for what nobody foresaw — a bug, a malformed entry, an error class nobody listed:
the part is logged with its traceback and started again after a capped, jittered backoff,
rather than ending the lifespan's task group (which stops the engine and closes the store while
the HTTP server goes on answering: a half-dead server).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

import anyio

from routilux.store.backoff import Backoff

log = logging.getLogger("routilux.cluster")

#: A run that lasted this long counts as healthy: the next failure backs off from the start again.
HEALTHY_AFTER_SECONDS: Final = 60.0


async def supervised(
    name: str, run: Callable[[], Awaitable[None]], *, backoff: Backoff | None = None,
    healthy_after: float = HEALTHY_AFTER_SECONDS,
) -> None:
    """Await ``run()`` until it returns; whenever it raises (any ``Exception``; cancellation
    passes), log it and start it again after ``backoff``'s next delay."""
    backoff = backoff or Backoff(initial=0.5, cap=10.0)
    while True:
        started = time.monotonic()
        try:
            await run()
            return
        except Exception:  # noqa: BLE001 - the point of supervision
            if time.monotonic() - started >= healthy_after:
                backoff.reset()
            delay = backoff.next()
            log.exception("the cluster's %s failed; restarting it in %.1fs (restart %d)", name, delay,
                          backoff.failures)
        await anyio.sleep(delay)

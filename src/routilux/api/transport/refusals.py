"""One log line a minute, at most, about connections refused at the socket.

A slowloris attack or a client stuck in a retry loop can be refused thousands of times a minute;
a line per refusal would drown the log (and cost more than the refusal). :class:`Refusals`
counts them by kind and writes one warning with the counts when the first one comes after a quiet
minute, then at most one a minute while they go on — the last one a minute after the previous,
even if no refusal comes to trigger it.

Connections closed because they sent nothing at all (``idle``) are counted but never trigger a
line by themselves: browsers open spare connections they may not use. They are reported in the
line another refusal writes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

log = logging.getLogger("routilux.api")

INTERVAL_SECONDS: Final = 60.0

#: kind -> how the log line says it (``{n}`` refusals of that kind).
KINDS: Final[dict[str, str]] = {
    "busy": "{n} over the connection cap (503; up to {peak} connections open, ROUTILUX_MAX_CONNECTIONS={cap})",
    "head_too_large": "{n} request heads too large (414/431)",
    "head_timeout": "{n} request heads not complete within ROUTILUX_HEADER_TIMEOUT_SECONDS (408)",
    "body_too_slow": "{n} request bodies slower than ROUTILUX_BODY_MIN_RATE (408)",
    "idle": "{n} connections closed that sent nothing within ROUTILUX_HEADER_TIMEOUT_SECONDS",
}


class Refusals:
    """Counts of refused connections since the last log line; one per process (:data:`REFUSALS`)."""

    def __init__(self, interval: float = INTERVAL_SECONDS) -> None:
        self.interval = interval
        self.counts: dict[str, int] = {}
        self.totals: dict[str, int] = dict.fromkeys(KINDS, 0)  # since the process started
        self.peak_open = 0
        self.cap: int | None = None
        self._next_line = float("-inf")  # loop time before which no line is written
        self._pending: asyncio.TimerHandle | None = None

    def note(self, kind: str, loop: asyncio.AbstractEventLoop, open_connections: int, cap: int | None) -> None:
        """Count one refusal of ``kind`` (a key of :data:`KINDS`)."""
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.totals[kind] += 1
        self.peak_open = max(self.peak_open, open_connections)
        self.cap = cap
        if kind == "idle" and len(self.counts) == 1:
            return
        now = loop.time()
        if now >= self._next_line:
            self.flush(now)
        elif self._pending is None:
            self._pending = loop.call_at(self._next_line, self._flush_later, loop)

    def _flush_later(self, loop: asyncio.AbstractEventLoop) -> None:
        self._pending = None
        self.flush(loop.time())

    def flush(self, now: float) -> None:
        """Write the line for what was counted (nothing if only idle connections were)."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        if not any(kind != "idle" for kind in self.counts):
            return
        parts = [KINDS[kind].format(n=n, peak=self.peak_open, cap=self.cap)
                 for kind, n in sorted(self.counts.items(), key=lambda item: list(KINDS).index(item[0]))]
        log.warning("connections refused at the socket (since the previous such line; at most one a minute): %s",
                    "; ".join(parts))
        self.counts.clear()
        self.peak_open = 0
        self._next_line = now + self.interval


#: The process's one count (every connection of every server in the process reports here).
REFUSALS: Final = Refusals()

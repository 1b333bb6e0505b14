"""The paced event source of ``python -m bench.ws`` (and ``bench.cluster``), loaded by the server
under test with ``ROUTILUX_ROUTINE_MODULES=bench.ws_routines`` and the repository root on ``PYTHONPATH``.

``WsTicker`` has one slot, ``start``. Each item posted there, ``{"rate": R, "n": N}``, makes it
publish N ``log`` events at R per second: exactly one bus event each, type ``log``, message
``tick``, with ``data.fields = {"i": <0..N-1>, "t": <time.time() just before publishing>}``.
Clients on the same machine (same clock) subtract ``t`` from their receipt time to get the
publish -> receipt latency.

Pacing is by schedule, not by sleeps: event ``i`` is due at ``start + i / R``; on every wake-up
the routine publishes every event that is due, then sleeps until the next one is. A late wake-up
(timer granularity, a busy loop) therefore never lowers the average rate, it only bunches events;
each event's own ``t`` is taken as it is published, so bunching is not counted as latency.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import anyio

from routilux import Routine


class WsTicker(Routine):
    """Publish ``n`` paced ``log`` events per item posted to ``start`` (see the module doc)."""

    slots: ClassVar[list[str]] = ["start"]
    events: ClassVar[list[str]] = []
    category: ClassVar[str] = "bench"

    async def logic(self, ctx: Any, start: list[dict[str, Any]]) -> None:
        for order in start:
            rate = float(order["rate"])
            n = int(order["n"])
            if rate <= 0 or n < 0:
                raise ValueError(f"rate must be > 0 and n >= 0, got {order!r}")
            clock = time.perf_counter
            wall = time.time
            log = ctx.log
            t0 = clock()
            i = 0
            while i < n:
                due = min(n, int((clock() - t0) * rate) + 1)
                while i < due:
                    log("tick", i=i, t=wall())
                    i += 1
                if i < n:
                    await anyio.sleep(max(0.0, t0 + i / rate - clock()))
            ctx.state["ticks_published"] = ctx.state.get("ticks_published", 0) + n
            ctx.state["ticks_seconds"] = clock() - t0

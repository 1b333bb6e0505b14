"""Request counts and latencies for ``GET /metrics``, kept by the outermost middleware.

Counted by (method, route template, status) in plain dictionaries once the router has matched
the request — never by raw path, so ids do not explode the series; refusals by the middleware
further in (rate limit, key, cross-site) are counted too, under ``(unmatched)``.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HTTP_BOUNDS: Final[tuple[float, ...]] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED: Final = "(unmatched)"


class HTTPStats:
    """Request counts and latency histograms by (method, route template[, status])."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, str], int] = {}
        self.latency: dict[tuple[str, str], list[float]] = {}  # bucket counts..., +Inf count, sum

    def record(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, str(status))
        self.counts[key] = self.counts.get(key, 0) + 1
        histogram = self.latency.get((method, route))
        if histogram is None:
            histogram = self.latency[(method, route)] = [0.0] * (len(HTTP_BOUNDS) + 2)
        histogram[bisect_left(HTTP_BOUNDS, seconds)] += 1
        histogram[-1] += seconds


class HTTPMetricsMiddleware:
    """Counts every HTTP request under its route template once the router has matched it."""

    def __init__(self, app: ASGIApp, stats: HTTPStats) -> None:
        self.app = app
        self.stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            self.stats.record(scope["method"], getattr(route, "path", UNMATCHED), status,
                              time.perf_counter() - started)

"""Rate limiting per client IP: ``ROUTILUX_RATE_LIMIT_PER_MINUTE`` requests in any minute.

The counting is the ``limits`` library's *sliding window counter*: two fixed-window counters per
client (this minute, the last one) weighted by how much of the last minute still overlaps the
sliding window. It smooths the double burst a plain fixed window allows at the boundary, and
costs the same whatever the limit (no per-request timestamps, unlike a moving window).

Its counters live in :class:`WindowCounters`, a ``limits`` storage of our own: ``limits``' own
in-memory storages expire keys from a timer thread (sync) or a task spawned per hit (async) that
nobody owns or stops. Ours is a plain dict touched only by the event loop, expired lazily when
read and swept at most once per window, so it needs no thread, no task and no lock.

With ``ROUTILUX_REDIS_URL`` the counters live in Redis instead (:class:`SharedRateLimiter`,
``limits``' own asynchronous Redis storage), so several servers enforce one limit together;
while Redis cannot be reached, each server counts by itself.

What counts: every HTTP request and every WebSocket connection attempt, authenticated or not (a
client guessing keys is limited too), except CORS preflights (``OPTIONS``, which browsers send by
themselves) and ``GET /api/health/live`` (load balancers). Every HTTP response carries
``RateLimit-Limit``, ``RateLimit-Remaining`` and ``RateLimit-Reset`` (seconds until the quota is
whole again); past the limit the answer is ``429`` in the API's error shape with ``Retry-After``.
A refused WebSocket handshake gets the same ``429`` response where the server can send one
(uvicorn can), else it is accepted and closed with 1008.

The client is the socket peer. ``X-Forwarded-For`` is only believed from the proxies listed in
``ROUTILUX_TRUSTED_PROXIES`` (uvicorn's ``ProxyHeadersMiddleware`` rewrites the peer before this
middleware sees it; see :func:`routilux.api.app.create_app`), never otherwise.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any, Final

from limits import RateLimitItemPerMinute
from limits.storage import Storage
from limits.storage.base import SlidingWindowCounterSupport, TimestampedSlidingWindow
from limits.strategies import SlidingWindowCounterRateLimiter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from routilux.api.responses import json_response

log = logging.getLogger("routilux.api")

EXEMPT_PATHS: Final = frozenset({"/api/health/live"})
#: How long the shared limiter waits for Redis (one small script) before counting locally.
LIMITER_TIMEOUT_SECONDS: Final = 0.25
POLICY_VIOLATION: Final = 1008


class WindowCounters(Storage, SlidingWindowCounterSupport, TimestampedSlidingWindow):
    """In-process counters for ``limits``' fixed and sliding-window-counter strategies.

    Only the event loop's thread touches it. A key is ``(count, expires_at)``; expired keys read
    as zero and are dropped when read, and everything expired is swept at most once per
    ``sweep_every`` seconds, so memory follows the clients seen in the last two windows.
    """

    STORAGE_SCHEME: Final = ["routilux-window-counters"]  # type: ignore[misc]

    def __init__(
        self, uri: str | None = None, *, sweep_every: float = 60.0, clock: Callable[[], float] = time.time,
        **options: object,
    ) -> None:
        self._counts: dict[str, list[float]] = {}
        self._sweep_every = sweep_every
        self._clock = clock
        self._next_sweep = clock() + sweep_every
        super().__init__(uri, **options)  # type: ignore[arg-type]

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return ValueError

    def __len__(self) -> int:
        return len(self._counts)

    def _live(self, key: str, now: float) -> list[float] | None:
        entry = self._counts.get(key)
        if entry is not None and entry[1] <= now:
            del self._counts[key]
            return None
        return entry

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._sweep_every
        expired = [key for key, (_count, expires_at) in self._counts.items() if expires_at <= now]
        for key in expired:
            del self._counts[key]

    # -- the fixed-window primitives ------------------------------------------------------------
    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        now = self._clock()
        self._sweep(now)
        entry = self._live(key, now)
        if entry is None:
            self._counts[key] = [amount, now + expiry]
            return amount
        entry[0] += amount
        return int(entry[0])

    def decr(self, key: str, amount: int = 1) -> int:
        entry = self._live(key, self._clock())
        if entry is None:
            return 0
        entry[0] = max(0, entry[0] - amount)
        return int(entry[0])

    def get(self, key: str) -> int:
        entry = self._live(key, self._clock())
        return 0 if entry is None else int(entry[0])

    def get_expiry(self, key: str) -> float:
        entry = self._live(key, self._clock())
        return self._clock() if entry is None else entry[1]

    def check(self) -> bool:
        return True

    def reset(self) -> int | None:
        count = len(self._counts)
        self._counts.clear()
        return count

    def clear(self, key: str) -> None:
        self._counts.pop(key, None)

    # -- the sliding window counter (as limits' MemoryStorage computes it) ----------------------
    def _count(self, key: str, now: float) -> int:
        entry = self._counts.get(key)
        if entry is None:
            return 0
        if entry[1] <= now:
            del self._counts[key]
            return 0
        return int(entry[0])

    def _sliding_window_info(self, key: str, expiry: int, now: float) -> tuple[int, float, int, float]:
        previous_key, current_key = self.sliding_window_keys(key, expiry, now)
        previous_count = self._count(previous_key, now)
        current_count = self._count(current_key, now)
        previous_ttl = 0.0 if previous_count == 0 else (1 - (((now - expiry) / expiry) % 1)) * expiry
        current_ttl = (1 - ((now / expiry) % 1)) * expiry + expiry
        return previous_count, previous_ttl, current_count, current_ttl

    def acquire_sliding_window_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        if amount > limit:
            return False
        now = self._clock()
        self._sweep(now)
        previous_key, current_key = self.sliding_window_keys(key, expiry, now)
        previous_count = self._count(previous_key, now)
        current_count = self._count(current_key, now)
        previous_ttl = 0.0 if previous_count == 0 else (1 - (((now - expiry) / expiry) % 1)) * expiry
        if math.floor(previous_count * previous_ttl / expiry + current_count) + amount > limit:
            return False
        entry = self._counts.get(current_key)
        if entry is None:  # _count dropped it if it had expired
            self._counts[current_key] = [amount, now + 2 * expiry]
        else:
            entry[0] += amount  # one thread: no race to undo
        return True

    def get_sliding_window(self, key: str, expiry: int) -> tuple[int, float, int, float]:
        return self._sliding_window_info(key, expiry, self._clock())

    def clear_sliding_window(self, key: str, expiry: int) -> None:
        for window_key in self.sliding_window_keys(key, expiry, self._clock()):
            self.clear(window_key)


def _verdict(
    allowed: bool, limit: int, expiry: int, window: tuple[int, float, int, float]
) -> tuple[bool, int, float]:
    """(allowed, remaining, seconds to wait) from the sliding window's two counters, as
    ``SlidingWindowCounterRateLimiter.get_window_stats`` weighs them."""
    previous, previous_ttl, current, current_ttl = window
    weighted = previous * previous_ttl / expiry + current
    remaining = max(0, limit - math.floor(weighted))
    window_left = current_ttl - expiry  # until the current window closes
    if allowed:
        return True, remaining, window_left + expiry if current else previous_ttl
    if current < limit and previous:
        # the previous window's weight must fall until one more fits in this window
        wait = previous_ttl - expiry * (limit - current) / previous
    else:
        # this window is full: once it closes it becomes "previous", weighing
        # current * (1 - elapsed/expiry), which must fall below the limit
        wait = window_left + expiry * max(0.0, 1 - limit / current)
    return False, 0, max(wait, 0.001)


class RateLimiter:
    """``per_minute`` hits per client in any sliding minute, counted in this process."""

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.time) -> None:
        self.item = RateLimitItemPerMinute(per_minute)
        self.storage = WindowCounters(clock=clock)
        self.strategy = SlidingWindowCounterRateLimiter(self.storage)  # checks the storage's support
        self.limited = 0  # requests refused so far

    def hit(self, client: str) -> tuple[bool, int, float]:
        """Count one request of ``client``: (allowed, remaining, seconds to wait).

        The wait is, for a refused request, how long until one would be allowed (``Retry-After``);
        for an allowed one, how long until the quota is whole again (``RateLimit-Reset``).
        """
        item = self.item
        key = item.key_for(client)
        expiry = item.get_expiry()
        # What SlidingWindowCounterRateLimiter.hit() does, with the key built once for both calls.
        allowed = self.storage.acquire_sliding_window_entry(key, item.amount, expiry)
        verdict = _verdict(allowed, item.amount, expiry, self.storage.get_sliding_window(key, expiry))
        if not verdict[0]:
            self.limited += 1
        return verdict

    async def acquire(self, client: str) -> tuple[bool, int, float]:
        """:meth:`hit`, for the middleware (which also serves :class:`SharedRateLimiter`)."""
        return self.hit(client)


class SharedRateLimiter:
    """The same limit counted in Redis (``ROUTILUX_REDIS_URL``), so it holds across every server
    that shares it: ``limits``' own asynchronous Redis storage, whose sliding window counter is
    two keys per client updated atomically by a Lua script on the server. Nothing runs in this
    process between requests, so the reasons :class:`WindowCounters` exists (timer threads and
    unowned tasks of ``limits``' in-memory storages) do not apply here.

    **While Redis cannot be reached** the limit falls back to this process's own count (a
    :class:`RateLimiter`), rather than failing open or refusing everything: the API stays
    protected (each server then allows up to the limit by itself, so a client spread over N
    servers gets at most N times it for the outage), and an outage of the limiter's storage does
    not become an outage of the API. After a failure Redis is asked again only every
    ``retry_seconds`` (a request never waits for a dead Redis twice in a row), and not at all
    while the server's own calls find it unreachable (its latch, see
    :mod:`routilux.store.redis.reachability`); its client has a shorter timeout still, so even the
    request that does ask answers quickly.
    """

    def __init__(self, per_minute: int, redis_url: str, *, retry_seconds: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        from limits.aio.storage import RedisStorage

        from routilux.store.redis.connection import command_retry
        from routilux.store.redis.keys import RATE_LIMIT_PREFIX
        from routilux.store.redis.reachability import reachability, server_of_url

        self.item = RateLimitItemPerMinute(per_minute)
        redis_url = redis_url.removeprefix("async+")
        uri = "async+" + redis_url
        # Passed on to redis-py: the cluster's retry, and timeouts short enough that a frozen
        # Redis costs a request at most LIMITER_TIMEOUT_SECONDS before the request's own call
        # to Redis (which has the cluster's timeout) — within the 2 s of a 503 cluster_unavailable.
        # So short a timeout is no proof that Redis is lost: the retry, told it, takes it for a
        # suspicion only (routilux.store.redis.reachability).
        client_options: dict[str, Any] = {"socket_timeout": LIMITER_TIMEOUT_SECONDS,
                                          "socket_connect_timeout": LIMITER_TIMEOUT_SECONDS,
                                          "retry": command_retry(redis_url, timeout=LIMITER_TIMEOUT_SECONDS)}
        self.reachability = reachability(server_of_url(redis_url))
        self.storage = RedisStorage(uri, implementation="redispy", key_prefix=RATE_LIMIT_PREFIX, **client_options)
        self.fallback = RateLimiter(per_minute)  # counts while Redis cannot be reached
        self.retry_seconds = retry_seconds
        self.limited = 0
        self.unchecked = 0  # requests counted locally because Redis could not be asked
        self._clock = clock
        self._redis_down_until = 0.0  # don't ask Redis before this (clock) time
        self._next_warning = 0.0

    async def acquire(self, client: str) -> tuple[bool, int, float]:
        """As :meth:`RateLimiter.hit`; counted by :attr:`fallback` while Redis cannot be reached
        (see the class docstring)."""
        now = self._clock()
        if now < self._redis_down_until or self.reachability.unreachable:
            return self._locally(client)
        item = self.item
        key = item.key_for(client)
        expiry = item.get_expiry()
        try:
            allowed = await self.storage.acquire_sliding_window_entry(key, item.amount, expiry)
            window = await self.storage.get_sliding_window(key, expiry)
        except self.storage.base_exceptions as exc:
            self._redis_down_until = now + self.retry_seconds
            if now >= self._next_warning:
                self._next_warning = now + 60
                log.warning("rate limit storage unreachable, requests are limited per server meanwhile: %s", exc)
            return self._locally(client)
        verdict = _verdict(allowed, item.amount, expiry, window)
        if not verdict[0]:
            self.limited += 1
        return verdict

    def _locally(self, client: str) -> tuple[bool, int, float]:
        self.unchecked += 1
        verdict = self.fallback.hit(client)
        if not verdict[0]:
            self.limited += 1
        return verdict


class RateLimitMiddleware:
    """Refuse a client's requests past the limit; tell every client where it stands."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter | SharedRateLimiter) -> None:
        self.app = app
        self.limiter = limiter
        self.limit_header = str(limiter.item.amount).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan" or scope["path"] in EXEMPT_PATHS or (kind == "http" and scope["method"] == "OPTIONS"):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        allowed, remaining, reset_in = await self.limiter.acquire(client[0] if client else "unknown")
        reset_header = str(math.ceil(reset_in)).encode()
        if allowed:
            if kind != "http":
                await self.app(scope, receive, send)
                return
            headers = [
                (b"ratelimit-limit", self.limit_header),
                (b"ratelimit-remaining", str(remaining).encode()),
                (b"ratelimit-reset", reset_header),
            ]

            async def send_with_headers(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [*message.get("headers", ()), *headers]
                await send(message)

            await self.app(scope, receive, send_with_headers)
            return
        retry_after = str(max(1, math.ceil(reset_in)))
        if kind == "websocket" and "websocket.http.response" not in scope.get("extensions", {}):
            await receive()  # websocket.connect
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": POLICY_VIOLATION,
                        "reason": f"rate limit exceeded; retry in {retry_after}s"})
            return
        response = json_response(
            {"detail": {
                "error": "rate_limited",
                "message": f"Rate limit exceeded: {self.limiter.item.amount} requests per minute. "
                           f"Retry in {retry_after} s.",
            }},
            429,
            headers={
                "Retry-After": retry_after,
                "RateLimit-Limit": self.limit_header.decode(),
                "RateLimit-Remaining": "0",
                "RateLimit-Reset": reset_header.decode(),
            },
        )
        await response(scope, receive, send)

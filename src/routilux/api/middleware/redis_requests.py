"""In a cluster, the task serving each request is known as such to the Redis clients, so that its
calls fail at once while Redis is known to be unreachable (and are given up when it becomes so)
instead of each waiting for a timeout of its own: see :mod:`routilux.store.redis.reachability`.

Outermost, so the shared rate limiter's call is the request's too. Only the request's own task
counts: what it starts (a job, a relay) keeps trying as before. Requests forwarded from another
server are marked the same way where they are served (:func:`~.forwarding.serve_forwarded`).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from routilux.store.redis.reachability import serving_a_request


class RedisRequestsMiddleware:
    """Mark the task serving each HTTP request and WebSocket as serving a request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        with serving_a_request():
            await self.app(scope, receive, send)

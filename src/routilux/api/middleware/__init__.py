"""The layers every HTTP request passes before its route, and their one order.

Outermost first:

0. in a cluster, :class:`~.redis_requests.RedisRequestsMiddleware` marks the task serving the
   request, whose calls to Redis then fail at once while Redis is known to be unreachable;
1. :class:`~.http_metrics.HTTPMetricsMiddleware` counts every request for ``/metrics``
   (refusals too);
2. uvicorn's ``ProxyHeadersMiddleware`` settles the client's address (trusted proxies only);
3. Starlette's ``CORSMiddleware`` puts CORS headers on every answer, refusals included;
4. :class:`~.cross_site.CrossSiteMiddleware` refuses unsafe requests and WebSocket handshakes
   that browsers make for pages on other websites (after 2, which settles the scheme it compares);
5. :class:`~.ratelimit.RateLimitMiddleware` limits requests per client — before authentication,
   so that guessing keys is limited too;
6. :class:`~.auth.APIKeyMiddleware` checks the API key;
7. innermost, after the router matched a job's route: :func:`~.forwarding.answered_by_owner`
   sends it to the server that runs the job (a cluster only; applied per route by the app).

:mod:`.log_redaction` is not a layer: it keeps keys out of the server's log lines.
"""

from __future__ import annotations

import logging

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from routilux.api.middleware.auth import APIKeyMiddleware
from routilux.api.middleware.cross_site import CrossSiteMiddleware
from routilux.api.middleware.http_metrics import HTTPMetricsMiddleware, HTTPStats
from routilux.api.middleware.ratelimit import RateLimiter, RateLimitMiddleware, SharedRateLimiter
from routilux.server.settings import Settings

log = logging.getLogger("routilux.api")


def build_middleware(
    settings: Settings, limiter: RateLimiter | SharedRateLimiter | None, http_stats: HTTPStats
) -> list[Middleware]:
    """The layers 0-6 above, as ``settings`` configure them."""
    middleware = [Middleware(HTTPMetricsMiddleware, stats=http_stats)]
    if settings.redis_url is not None:  # imported only then: a single server never imports a Redis client
        from routilux.api.middleware.redis_requests import RedisRequestsMiddleware

        middleware.insert(0, Middleware(RedisRequestsMiddleware))
    if settings.trusted_proxies:
        middleware.append(Middleware(ProxyHeadersMiddleware, trusted_hosts=list(settings.trusted_proxies)))
    if "*" in settings.cors_origins:
        log.warning(
            "ROUTILUX_CORS_ORIGINS=*: ANY website may call this API from its visitors' browsers. "
            "Use this for local development only; list your dashboard's origins in production."
        )
    middleware.append(
        Middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_credentials=False,  # keys travel in a header, never in cookies; and never with *
            allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
            allow_headers=["Content-Type", "X-API-Key", "If-Match"],
            expose_headers=["ETag", "Location", "Retry-After", "RateLimit-Limit", "RateLimit-Remaining",
                            "RateLimit-Reset"],
        )
    )
    middleware.append(Middleware(CrossSiteMiddleware, origins=settings.cors_origins))
    if limiter is not None:
        middleware.append(Middleware(RateLimitMiddleware, limiter=limiter))
    if settings.api_key_enabled:
        middleware.append(Middleware(APIKeyMiddleware, keys=settings.api_keys))
    return middleware

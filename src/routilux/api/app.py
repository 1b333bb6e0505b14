"""The Starlette application: ``create_app(settings)`` builds it; its lifespan runs the server.

The control plane itself — store, engine, recorder, retention, metrics, cluster node — is built
and owned by :func:`routilux.server.lifespan.open_services`; the lifespan here only adds what
belongs to the edge: the open WebSocket sessions (closed with 1001 on shutdown) and the
``/metrics`` registry, and gives forwarded cluster requests a way into the routes.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from typing import Final

import anyio
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Route

from routilux.api.errors import install_error_handlers
from routilux.api.middleware import build_middleware
from routilux.api.middleware.forwarding import answered_by_owner, internal_app, serve_forwarded
from routilux.api.middleware.http_metrics import HTTPStats
from routilux.api.middleware.log_redaction import redact_api_keys_in_server_logs
from routilux.api.middleware.ratelimit import RateLimiter, SharedRateLimiter
from routilux.api.routes import (
    debug,
    discovery,
    docs,
    factory,
    flows,
    health,
    jobs,
    metrics,
    monitor,
    runtimes,
)
from routilux.api.ws import routes as ws_routes
from routilux.api.ws.fanout import Fanout
from routilux.api.ws.session import Sessions
from routilux.engine import Registry
from routilux.server.lifespan import open_services
from routilux.server.settings import Settings
from routilux.store.base import Store

log = logging.getLogger("routilux.api")

#: How long a busy event loop may keep the GIL from a worker thread that waits for it (CPython's
#: default is 5 ms). Store reads and writes and sync routines run in threads, and a request that
#: needs one waits for several such hand-overs: with the loop busy (a burst to a thousand
#: sockets), 5 ms each made ``GET /api/health`` take up to seconds while ``/api/health/live``,
#: which needs no thread, stayed under 50 ms. The switches cost microseconds.
GIL_SWITCH_SECONDS: Final[float] = 0.001


def create_app(
    settings: Settings | None = None, *, registry: Registry | None = None, store: Store | None = None
) -> Starlette:
    """Build the API application. ``registry``/``store`` override the defaults (tests, embedding)."""
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        serve_request = functools.partial(serve_forwarded, app, internal_app(app))
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(switch_interval, GIL_SWITCH_SECONDS))
        served = stopped_normally = False
        try:
            async with open_services(
                settings, serve_request=serve_request, registry=registry, store=store
            ) as services, anyio.create_task_group() as edge:
                sessions = Sessions(Fanout(services.engine.bus.feeds, settings.ws_max_queued_bytes))
                edge.start_soon(sessions.fanout.run)  # serves every socket's live events
                app.state.services = services
                app.state.sessions = sessions
                app.state.prometheus = metrics.metrics_registry(services, sessions, http_stats, limiter)
                app.state.serving = served = True
                try:
                    yield
                    stopped_normally = True  # the server asked: not a part that died
                finally:
                    # Also when a part of the server died and took the services down while the HTTP
                    # server goes on: /api/health/live then says so, and an orchestrator restarts it.
                    app.state.serving = False
                    await sessions.close_all()  # 1001, if the server did not already
                    edge.cancel_scope.cancel()
        finally:
            sys.setswitchinterval(switch_interval)
            if served and not stopped_normally:
                part_died(app)

    http_stats = HTTPStats()
    limiter: RateLimiter | SharedRateLimiter | None = None
    if settings.rate_limit_enabled:
        # With ROUTILUX_REDIS_URL the servers count together; otherwise each counts in-process.
        limiter = (SharedRateLimiter(settings.rate_limit_per_minute, settings.redis_url)
                   if settings.redis_url is not None else RateLimiter(settings.rate_limit_per_minute))
    app = Starlette(routes=_routes(settings), lifespan=lifespan,
                    middleware=build_middleware(settings, limiter, http_stats))
    app.state.settings = settings
    app.state.serving = False  # until the lifespan has started everything
    app.state.http_stats = http_stats
    app.state.rate_limiter = limiter
    install_error_handlers(app, cluster=settings.redis_url is not None)
    redact_api_keys_in_server_logs()
    return app


def part_died(app: Starlette) -> None:
    """A part of the server (recorder, pruner, metrics, cluster node, fan-out...) ended with an
    error while the HTTP server was serving: the engine stopped and the store closed, so the
    process must not go on answering. ``/api/health/live`` answers 503 already (``serving`` is
    false); the process is then asked to stop, and exits with status 1 (see
    :class:`routilux.api.main.Server`), so a supervisor (systemd, Kubernetes, gunicorn's arbiter)
    starts a new one. The cluster's parts retry a lost Redis and restart after other failures
    themselves: reaching this means something nobody foresaw."""
    app.state.serving = False
    app.state.failed = True
    log.critical("a part of the server stopped with an error (logged above): /api/health/live answers 503, "
                 "and the process stops with exit status 1 so that it is restarted")
    request_exit = getattr(app.state, "request_exit", None)
    if callable(request_exit):
        request_exit()
    else:  # served by another ASGI server: a graceful stop it understands
        os.kill(os.getpid(), signal.SIGTERM)


def _routes(settings: Settings) -> list[BaseRoute]:
    """Every route. Starlette tries them in order: the busiest (a job and its views) first; no two
    match the same method and path, so the order changes nothing else. In a cluster, a route
    about one job is answered by the server that runs it (:func:`answered_by_owner`)."""
    routes: list[BaseRoute] = [
        *jobs.routes, *monitor.routes, *flows.routes, *health.routes, *runtimes.routes, *factory.routes,
        *discovery.routes, *debug.routes, *metrics.routes, *ws_routes.routes,
    ]
    if settings.docs_enabled:
        routes += docs.routes
    if settings.redis_url is not None:
        routes = [
            Route(r.path, answered_by_owner(r.endpoint), methods=sorted(r.methods or ()))
            if isinstance(r, Route) and "{job_id}" in r.path else r
            for r in routes
        ]
    return routes

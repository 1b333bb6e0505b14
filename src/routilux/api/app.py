"""The Starlette application: ``create_app(settings)`` builds it, its lifespan owns everything.

The lifespan is the structured-concurrency root of the server: it opens the store (marking jobs
that were running when the process died as failed), starts the engine and the recorder that
writes job history, restores runtimes and flows, and on shutdown cancels running jobs, lets the
recorder write their final records, and closes the store — in that order.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import anyio
import anyio.abc
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from routilux.api import prometheus
from routilux.api.auth import APIKeyMiddleware
from routilux.api.catalog import FlowCatalog
from routilux.api.cluster import build_cluster_node, default_node_id
from routilux.api.demo_flows import register_demo_flows
from routilux.api.errors import install_error_handlers
from routilux.api.flow_files import sync_flows
from routilux.api.forwarding import JobForwardingMiddleware
from routilux.api.history import EventHistory
from routilux.api.logs import redact_api_keys_in_server_logs
from routilux.api.monitoring import start_metrics
from routilux.api.prometheus import HTTPMetricsMiddleware, HTTPStats, metrics_registry
from routilux.api.ratelimit import RateLimiter, RateLimitMiddleware, SharedRateLimiter
from routilux.api.recorder import Recorder
from routilux.api.retention import JobPruner
from routilux.api.routes import (
    debug,
    discovery,
    docs,
    factory,
    flows,
    health,
    jobs,
    monitor,
    runtimes,
)
from routilux.api.routes.runtimes import restore_runtimes
from routilux.api.services import Services
from routilux.api.settings import Settings
from routilux.api.ws import routes as ws_routes
from routilux.api.ws.session import Sessions
from routilux.engine import Engine, EngineSettings, Registry, default_registry
from routilux.store import open_store
from routilux.store.base import Store
from routilux.store.errors import StoreError

if TYPE_CHECKING:
    import redis.asyncio as aioredis

log = logging.getLogger("routilux.api")

INTERRUPTED = "interrupted: server restarted"


async def _connect_redis(settings: Settings) -> aioredis.Redis | None:
    """The Redis client of a cluster node (``ROUTILUX_REDIS_URL``), or None for a single server,
    which never imports a Redis client."""
    if settings.redis_url is None:
        return None
    import redis.exceptions

    from routilux.cluster.redis_events import connect, shown_url

    try:
        return await connect(settings.redis_url)
    except (redis.exceptions.RedisError, OSError, ValueError) as exc:
        raise StoreError(f"cannot reach Redis at ROUTILUX_REDIS_URL={shown_url(settings.redis_url)}: {exc}") from None


def _shared_store(client: aioredis.Redis, settings: Settings, node_id: str) -> Store:
    from routilux.store.redis import RedisStore

    return RedisStore(client, events_per_job=settings.events_per_job, node_id=node_id)


def create_app(
    settings: Settings | None = None, *, registry: Registry | None = None, store: Store | None = None
) -> Starlette:
    """Build the API application. ``registry``/``store`` override the defaults (tests, embedding)."""
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        client = await _connect_redis(settings)
        node_id = settings.node_id or default_node_id()
        if store is not None:
            the_store = store
        elif client is not None:  # one store for every node of the cluster
            the_store = _shared_store(client, settings, node_id)
        else:
            the_store = open_store(settings.db, events_per_job=settings.events_per_job)
        try:
            await the_store.open()
        except BaseException:
            if client is not None:
                await client.aclose()
            raise
        try:
            if client is None:
                # A single server owns every job in its store. In a cluster the others' jobs are
                # running: a dead node's jobs are failed by the reaper (routilux.cluster.nodes).
                interrupted = await the_store.mark_interrupted(INTERRUPTED)
                if interrupted:
                    log.warning("%d job(s) were running when the server stopped; marked failed", len(interrupted))
            engine = Engine(
                registry=registry if registry is not None else default_registry(),
                settings=EngineSettings(shared_pool_size=settings.shared_pool_size),
            )
            catalog = FlowCatalog(engine.registry, the_store)
            async with anyio.create_task_group() as tg:
                async with engine:
                    history = EventHistory(settings.history_per_job, settings.history_max_bytes)
                    recorder = Recorder(engine, the_store, history)
                    tg.start_soon(recorder.run)
                    # Retention (ROUTILUX_JOBS_KEEP / _MAX_AGE_SECONDS); ends with the recorder.
                    pruner = JobPruner(recorder, keep=settings.jobs_keep, max_age_seconds=settings.jobs_max_age_seconds)
                    recorder.on_job_end = pruner.job_ended
                    tg.start_soon(pruner.run)
                    node = None
                    if client is not None:  # subscribes to the bus before any job can start
                        node = build_cluster_node(app, client, the_store, engine, node_id=node_id,
                                                  events_per_job=settings.events_per_job,
                                                  lease_seconds=settings.cluster_lease_seconds,
                                                  group=settings.worker_group)
                        recorder.is_remote = node.bridge.is_remote
                        recorder.on_forget = lambda job_id: node.membership.release_later([job_id])
                        catalog.notify = node.notify
                        node.catalog = catalog
                    metrics = await start_metrics(tg, engine, the_store, catalog,
                                                  node.bridge.is_remote if node is not None else None)
                    await restore_runtimes(engine, the_store)
                    await catalog.load_stored()
                    if settings.flows_dir is not None:
                        result = await sync_flows(catalog, settings.flows_dir)
                        for error in result["errors"]:
                            log.error("flow file %s does not load: %s", error["file"], error["problems"])
                    if settings.debugger_mode:  # ROUTILUX_DEBUGGER_MODE: flows a debugger UI can show at once
                        await register_demo_flows(catalog)
                    # Everything loaded so far lives as long as the process: keep it out of
                    # the collector's full passes, which otherwise pause every request.
                    gc.collect()
                    gc.freeze()
                    # Fewer young collections means fewer promotions into the old generation,
                    # whose full passes (tens of ms with thousands of jobs) stall every request.
                    gc.set_threshold(20_000, 50, 100)
                    sessions = Sessions()
                    app.state.services = Services(settings, engine, the_store, catalog, recorder, sessions, metrics,
                                                 node)
                    if node is not None:  # answers forwarded requests from here on: services exist
                        await tg.start(node.run)
                    app.state.prometheus = metrics_registry(app.state.services, app.state.http_stats,
                                                            app.state.rate_limiter)
                    app.state.sessions = sessions
                    try:
                        yield
                    finally:
                        await sessions.close_all()  # 1001, if the server did not already
                # Leaving the engine cancelled every running job and closed the bus; the
                # recorder writes those final records, then ends, and the task group waits.
        finally:
            try:
                await the_store.close()
            finally:
                if client is not None:
                    with anyio.CancelScope(shield=True):
                        await client.aclose()

    # Starlette tries routes in order: the busiest (a job and its views) first. No two routes
    # here match the same method and path, so the order changes nothing else.
    routes = [*jobs.routes, *monitor.routes, *flows.routes, *health.routes, *runtimes.routes, *factory.routes,
              *discovery.routes, *debug.routes, *prometheus.routes, *ws_routes.routes]
    if settings.docs_enabled:
        routes += docs.routes
    http_stats = HTTPStats()
    limiter: RateLimiter | SharedRateLimiter | None = None
    if settings.rate_limit_enabled:
        # With ROUTILUX_REDIS_URL the servers count together; otherwise each counts in-process.
        limiter = (SharedRateLimiter(settings.rate_limit_per_minute, settings.redis_url)
                   if settings.redis_url is not None else RateLimiter(settings.rate_limit_per_minute))
    app = Starlette(routes=routes, lifespan=lifespan, middleware=_middleware(settings, limiter, http_stats))
    app.state.settings = settings
    app.state.http_stats = http_stats
    app.state.rate_limiter = limiter
    install_error_handlers(app)
    redact_api_keys_in_server_logs()
    return app


def _middleware(
    settings: Settings, limiter: RateLimiter | SharedRateLimiter | None, http_stats: HTTPStats
) -> list[Middleware]:
    """Outermost first: every request is counted for /metrics (refusals too), the client's
    address is settled (trusted proxies only), CORS headers go on every answer (refusals
    included), then rate limiting — before authentication, so that guessing keys is limited
    too — then the API key."""
    middleware = [Middleware(HTTPMetricsMiddleware, stats=http_stats)]
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
    if limiter is not None:
        middleware.append(Middleware(RateLimitMiddleware, limiter=limiter))
    if settings.api_key_enabled:
        middleware.append(Middleware(APIKeyMiddleware, keys=settings.api_keys))
    if settings.redis_url is not None:  # after the key check: only admitted requests travel
        middleware.append(Middleware(JobForwardingMiddleware, max_body_bytes=settings.max_body_bytes,
                                     max_wait_seconds=settings.max_wait_seconds))
    return middleware

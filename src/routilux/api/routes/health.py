"""Health: is the server up (``/api/health/live``, public), and can it reach its store
(``/api/health``, behind the key like the rest of ``/api``)."""

from __future__ import annotations

import contextlib
import logging

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from routilux import __version__
from routilux.api.responses import json_response
from routilux.api.services import services
from routilux.store.errors import StoreError

log = logging.getLogger("routilux.api")

#: How long health waits for its write probe (a store that hangs is as unhealthy as one that fails).
PROBE_SECONDS = 2.0


async def health(request: Request) -> Response:
    """200 ``healthy``, or 503 ``degraded`` with the ``reason`` while the store cannot be read or
    its writes fail (it recovers by itself once a read and a write succeed again). The reason says
    what failed, never where the store is."""
    svc = services(request)
    stores: dict[str, object]
    reason: str | None = None
    try:
        counts = await svc.store.counts()
        stores = {"accessible": True, "flow_count": counts.flow_count, "job_count": counts.job_count}
    except Exception:  # the health check reports the store's trouble rather than failing
        log.exception("store is not accessible")
        stores = {"accessible": False, "flow_count": len(svc.catalog), "job_count": len(svc.engine.jobs)}
        reason = "the store cannot be read"
    if reason is None and svc.store.write_error is not None:
        # Writes failed: try one now, so health recovers by itself even with no other traffic.
        with anyio.move_on_after(PROBE_SECONDS):
            with contextlib.suppress(StoreError):
                await svc.store.probe_writes()
        if svc.store.write_error is not None:
            reason = "the store's writes fail (disk full or read-only, or the store unreachable)"
    body: dict[str, object] = {
        "status": "healthy" if reason is None else "degraded",
        "auth_required": svc.settings.api_key_enabled,
        "monitoring": {"enabled": True, "events_lost": svc.recorder.lost},
        "stores": stores,
        "version": __version__,
    }
    if reason is None:
        return json_response(body)
    return json_response({**body, "reason": reason}, 503, headers={"Retry-After": "5"})


async def live(request: Request) -> Response:
    """For load balancers and container health checks: the process serves requests. Public (no
    key, not rate limited) and reveals nothing else. 503 once the server's parts have stopped
    (shutting down, or one of them died) while the HTTP server still answers: restart it."""
    if not request.app.state.serving:
        return json_response(STOPPED, 503, headers={"Retry-After": "1"})
    return json_response(LIVE)


LIVE = {"status": "ok"}
STOPPED = {"status": "stopped"}

routes = [Route("/api/health", health, methods=["GET"]), Route("/api/health/live", live, methods=["GET"])]

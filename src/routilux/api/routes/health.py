"""Health: is the server up (``/api/health/live``, public), and can it reach its store
(``/api/health``, behind the key like the rest of ``/api``)."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from routilux import __version__
from routilux.api.responses import json_response
from routilux.api.services import services

log = logging.getLogger("routilux.api")


async def health(request: Request) -> Response:
    svc = services(request)
    stores: dict[str, object]
    try:
        counts = await svc.store.counts()
        stores = {"accessible": True, "flow_count": counts.flow_count, "job_count": counts.job_count}
    except Exception:  # the health check reports the store's trouble rather than failing
        log.exception("store is not accessible")
        stores = {"accessible": False, "flow_count": len(svc.catalog), "job_count": len(svc.engine.jobs)}
    return json_response(
        {
            "status": "healthy" if stores["accessible"] else "degraded",
            "auth_required": svc.settings.api_key_enabled,
            "monitoring": {"enabled": True, "events_lost": svc.recorder.lost},
            "stores": stores,
            "version": __version__,
        }
    )


async def live(request: Request) -> Response:
    """For load balancers and container health checks: the process serves requests. Public (no
    key, not rate limited) and reveals nothing else."""
    return json_response(LIVE)


LIVE = {"status": "ok"}

routes = [Route("/api/health", health, methods=["GET"]), Route("/api/health/live", live, methods=["GET"])]

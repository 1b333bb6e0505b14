"""Health: is the server up (``/api/health/live``, public), and can it reach its store and, in a
cluster, the cluster's Redis (``/api/health``, behind the key like the rest of ``/api``)."""

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
from routilux.server.services import Services
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
    cluster = await _cluster_state(svc) if svc.cluster_node is not None else None
    if cluster is not None and not cluster["redis_reachable"]:
        reason = "the cluster's Redis cannot be reached (jobs running here go on; their events are kept)"
    try:
        if reason is not None:  # the store is that Redis: don't wait for it a second time
            raise StoreError("the cluster's Redis cannot be reached")
        counts = await svc.store.counts()
        stores = {"accessible": True, "flow_count": counts.flow_count, "job_count": counts.job_count}
    except Exception:  # the health check reports the store's trouble rather than failing
        if reason is None:  # an unreachable Redis was logged already, and is no mystery
            log.exception("store is not accessible")
        stores = {"accessible": False, "flow_count": len(svc.catalog), "job_count": len(svc.engine.jobs)}
        reason = reason or "the store cannot be read"
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
    if cluster is not None:
        body["cluster"] = cluster
    if reason is None:
        return json_response(body)
    return json_response({**body, "reason": reason}, 503, headers={"Retry-After": "5"})


async def _cluster_state(svc: Services) -> dict[str, object]:
    """Whether this node reaches the cluster's Redis now (a PING within ``PROBE_SECONDS``), and
    whether its request channel is subscribed (it subscribes again by itself once Redis is back)."""
    node = svc.cluster_node
    assert node is not None
    reachable = False
    with anyio.move_on_after(PROBE_SECONDS):
        try:
            reachable = bool(await node.client.ping())
        except Exception as exc:  # noqa: BLE001 - unreachable, whatever the error
            log.warning("the cluster's Redis does not answer PING: %s", exc)
    state: dict[str, object] = {"node_id": node.node_id, "redis_reachable": reachable,
                                "channel_subscribed": node.channel.connected}
    stats = getattr(svc.store, "stats", None)
    if callable(stats):  # events recorded here and not written yet (kept while Redis is away)
        state["pending_events"] = stats().pending_events
    return state


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

"""The API server as one node of a cluster (``ROUTILUX_REDIS_URL``): what ties
:mod:`routilux.cluster` to HTTP.

- :class:`ClusterNode` holds the node's parts (Redis client, event bridge, membership with its
  lease and reaper, message channel) and runs them under the lifespan's task group.
- Requests about another node's job travel through :mod:`routilux.api.forwarding`; this module
  places jobs on a worker group, asks owners for WebSocket snapshots, and applies change notices
  (flows, runtimes, forgotten jobs) so each node's caches follow the shared store.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.abc
import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from routilux.api.errors import APIError
from routilux.api.forwarding import (
    FORWARD_MARGIN_SECONDS,
    HOP_BY_HOP,
    internal_app,
    response_of,
    serve_forwarded,
)
from routilux.api.routes.runtimes import restore_runtimes

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from starlette.applications import Starlette

    from routilux.api.catalog import FlowCatalog
    from routilux.cluster.channel import (
        ForwardedRequest,
        ForwardedResponse,
        NodeChannel,
    )
    from routilux.cluster.nodes import ClusterMembership
    from routilux.cluster.redis_events import RedisEventBridge, RemoteJob
    from routilux.engine import Engine
    from routilux.store.base import Store

FORGET_PER_NOTICE: Final = 500
#: Not an HTTP route: what a node asks a job's owner for a WebSocket snapshot (through Redis only).
SNAPSHOT_PATH: Final = "/_cluster/snapshot/"
SNAPSHOT_TIMEOUT_SECONDS: Final = 2.0


def default_node_id() -> str:
    """Readable in logs and unique per process: host, pid and a short random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass
class ClusterNode:
    """One server's membership of the cluster: its parts, and the task that runs them."""

    node_id: str
    client: aioredis.Redis
    bridge: RedisEventBridge
    membership: ClusterMembership
    channel: NodeChannel
    engine: Engine
    store: Store
    catalog: FlowCatalog | None = None

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Join, then relay events, renew the lease, reap and answer requests until the engine
        closes the bus; then give the lease back. Started with ``await tg.start(node.run)``, which
        returns once this node can send and answer requests."""
        await self.membership.join()
        async with anyio.create_task_group() as tg:
            await tg.start(self.channel.run)
            tg.start_soon(self.bridge.run)
            task_status.started()
            try:
                await self.membership.run()  # ends when the bus closes: our jobs ended, released
            finally:
                with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                    await self.membership.leave()
            tg.cancel_scope.cancel()

    async def forward(self, node: str, scope: Scope, body: bytes, timeout: float) -> ForwardedResponse:
        """Send the HTTP request of ``scope`` (with ``body``) to ``node``; its answer, or
        :class:`~routilux.cluster.channel.OwnerUnavailable`."""
        request = self.channel.new_request(
            method=scope["method"], path=scope["path"], query=scope.get("query_string", b""),
            headers=[(k, v) for k, v in scope["headers"] if k not in HOP_BY_HOP], body=body,
            client=tuple(scope["client"]) if scope.get("client") else None,  # type: ignore[arg-type]
            timeout=timeout,
        )
        return await self.channel.request(node, request)

    async def place(self, request: Request, group: str) -> Response:
        """Start the job ``request`` asks for on a live node of worker ``group`` (this node is
        not one): that node answers, and owns the job."""
        from routilux.cluster.channel import OwnerUnavailable

        target = await self.membership.pick_node(group)
        if target is None:
            error = APIError(503, "no_worker_in_group",
                             f"no running server is in worker group '{group}' (ROUTILUX_WORKER_GROUP), so the "
                             "runtime's jobs cannot start; start one, or use another runtime", worker_group=group)
            error.headers["Retry-After"] = "5"
            raise error
        try:
            answer = await self.forward(target, request.scope, await request.body(), FORWARD_MARGIN_SECONDS)
        except OwnerUnavailable as exc:
            error = APIError(503, "worker_unavailable", f"node {exc.node} of worker group '{group}' {exc.why}; retry",
                             worker_group=group, node=exc.node)
            error.headers["Retry-After"] = "1"
            raise error from None
        return response_of(answer)

    async def remote_snapshot(self, job: RemoteJob) -> dict[str, Any] | None:
        """The owner's ``snapshot`` fields for ``job`` (routine states included), or None if it
        does not answer in time (the caller falls back on what the job's events said)."""
        from routilux.cluster.channel import OwnerUnavailable

        request = self.channel.new_request(method="GET", path=SNAPSHOT_PATH + job.job_id, query=b"", headers=[],
                                           body=b"", client=None, timeout=SNAPSHOT_TIMEOUT_SECONDS)
        try:
            answer = await self.channel.request(job.node, request)
        except OwnerUnavailable:
            return None
        return msgspec.json.decode(answer.body) if answer.status == 200 else None

    async def forget_everywhere(self, job_ids: Sequence[str]) -> None:
        """Deleted jobs: every node drops them from memory and lets go of those it owns."""
        self.forget(job_ids)
        for start in range(0, len(job_ids), FORGET_PER_NOTICE):
            await self.notify("forget:" + ",".join(job_ids[start:start + FORGET_PER_NOTICE]))

    def forget(self, job_ids: Sequence[str]) -> None:
        for job_id in job_ids:
            self.engine.forget_job(job_id)
        self.membership.release_later([j for j in job_ids if j in self.membership.owned])

    async def notify(self, notice: str) -> None:
        """Broadcast a change of shared state (``flow:<id>``, ``runtimes``) to the other nodes."""
        await self.channel.notify(f"{self.node_id} {notice}")

    async def on_notice(self, message: str) -> None:
        sender, _, notice = message.partition(" ")
        if sender == self.node_id:
            return
        kind, _, name = notice.partition(":")
        if kind == "resync":
            if self.catalog is not None:
                await self.catalog.load_stored()
            await restore_runtimes(self.engine, self.store)
        elif kind == "flow" and self.catalog is not None:
            await self.catalog.reload(name)
        elif kind == "runtimes":
            await restore_runtimes(self.engine, self.store)
        elif kind == "forget":
            self.forget(name.split(","))


def build_cluster_node(
    app: Starlette, client: aioredis.Redis, store: Store, engine: Engine, *, node_id: str, events_per_job: int,
    lease_seconds: float, group: str | None = None,
) -> ClusterNode:
    """The node's parts, wired; nothing runs until :meth:`ClusterNode.run`. The bridge and the
    membership subscribe to the bus here, before any job can start."""
    from routilux.cluster.channel import NodeChannel
    from routilux.cluster.nodes import WORKER_LOST, ClusterMembership
    from routilux.cluster.redis_events import RedisEventBridge

    def fence(job_ids: Sequence[str]) -> None:
        for job_id in job_ids:
            job = engine.get_job(job_id)
            if job is not None and not job.status.is_terminal:
                job.fail(WORKER_LOST, "interrupted")

    routes_only = internal_app(app)

    async def handle(request: ForwardedRequest) -> ForwardedResponse:
        if request.path.startswith(SNAPSHOT_PATH):
            return serve_snapshot(engine, request)
        return await serve_forwarded(app, routes_only, request)

    async def on_notice(message: str) -> None:
        await node.on_notice(message)

    bridge = RedisEventBridge(client, engine.bus, maxlen=events_per_job, node_id=node_id)
    membership = ClusterMembership(client, store, engine.bus, node_id=node_id, prefix=bridge.prefix,
                                   lease_seconds=lease_seconds, group=group, fence=fence)
    channel = NodeChannel(client, node_id=node_id, prefix=bridge.prefix, handle=handle,
                          is_alive=membership.is_alive, on_notice=on_notice)
    node = ClusterNode(node_id, client, bridge, membership, channel, engine, store)
    return node


# -- the owner's side: run a forwarded request through this node's routes -------------------------
def serve_snapshot(engine: Engine, request: ForwardedRequest) -> ForwardedResponse:
    from routilux.api.ws.session import snapshot_state_of
    from routilux.cluster.channel import ForwardedResponse

    job = engine.get_job(request.path[len(SNAPSHOT_PATH):])
    if job is None:
        return ForwardedResponse(request.id, 404, [])
    return ForwardedResponse(request.id, 200, [], msgspec.json.encode(snapshot_state_of(job)))

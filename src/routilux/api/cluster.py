"""The API server as one node of a cluster (``ROUTILUX_REDIS_URL``): what ties
:mod:`routilux.cluster` to HTTP.

- :class:`ClusterNode` holds the node's parts (Redis client, event bridge, membership with its
  lease and reaper, message channel) and runs them under the lifespan's task group.
- :class:`JobForwardingMiddleware` sends a request about a job that another node runs to that
  node, and returns its answer as is: pause, post, breakpoints, step, state... all behave as if
  the job ran here. The owner runs the request through its own routes (:func:`serve_forwarded`),
  so there is one implementation of every endpoint, never a second "remote" one.
- Change notices keep each node's flow catalogue and runtimes in step with the shared store.

Authentication and rate limiting happen once, on the node the client called; the owner trusts a
request that arrives through Redis (Redis is inside the deployment's trust boundary, like the
database).
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.abc
import msgspec
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from routilux.api.errors import APIError
from routilux.api.responses import json_response
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

log = logging.getLogger("routilux.api")

FORGET_PER_NOTICE: Final = 500
#: Not an HTTP route: what a node asks a job's owner for a WebSocket snapshot (through Redis only).
SNAPSHOT_PATH: Final = "/_cluster/snapshot/"
SNAPSHOT_TIMEOUT_SECONDS: Final = 2.0
FORWARDED: Final = "routilux.forwarded"  # scope key marking a request that came from another node
#: How long a forwarded request may take, beyond what the endpoint itself may hold it.
FORWARD_MARGIN_SECONDS: Final = 15.0
HOP_BY_HOP: Final = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"te",
                               b"proxy-authorization", b"proxy-connection", b"trailer"})


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


def internal_app(app: Starlette) -> ASGIApp:
    """The app's routes with its exception handlers but without its middleware (CORS, limits,
    keys and forwarding were the receiving node's business), built like Starlette's own stack."""
    handlers = {k: v for k, v in app.exception_handlers.items() if k not in (500, Exception)}
    unexpected = app.exception_handlers.get(Exception)
    return ServerErrorMiddleware(ExceptionMiddleware(app.router, handlers=handlers), handler=unexpected)


async def serve_forwarded(app: Starlette, routes_only: ASGIApp, request: ForwardedRequest) -> ForwardedResponse:
    """Run ``request`` through ``routes_only`` (:func:`internal_app`) and capture the answer."""
    from routilux.cluster.channel import ForwardedResponse

    scope: Scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": request.method,
        "scheme": "http", "path": request.path, "raw_path": request.path.encode(), "root_path": "",
        "query_string": request.query, "headers": request.headers, "client": request.client,
        "server": None, "app": app, "state": {}, FORWARDED: True,
    }
    sent_body = False

    async def receive() -> Message:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await anyio.sleep_forever()
        raise AssertionError  # unreachable

    status = 500
    headers: list[tuple[bytes, bytes]] = []
    chunks: list[bytes] = []

    async def send(message: Message) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    try:
        await routes_only(scope, receive, send)
    except Exception:  # ServerErrorMiddleware sent the 500 already; it re-raises for servers' logs
        log.debug("forwarded %s %s failed", request.method, request.path, exc_info=True)
    return ForwardedResponse(request.id, status, headers, b"".join(chunks))


# -- the receiving side: send a request about another node's job to its owner ---------------------
def job_in_path(method: str, path: str) -> str | None:
    """The job a request is about, if it is one that only the job's owner can answer."""
    parts = path.split("/")
    if len(parts) < 4 or parts[1] != "api" or not parts[3]:
        return None
    kind = parts[2]
    if kind == "jobs":
        return None if len(parts) == 4 and parts[3] == "cleanup" and method == "POST" else parts[3]
    if kind in ("debug", "breakpoints"):
        return parts[3]
    if kind == "monitor" and parts[3] == "jobs" and len(parts) >= 5 and parts[4]:
        return parts[4]
    return None


def _forward_timeout(path: str, max_wait_seconds: float) -> float:
    return (max_wait_seconds if path.endswith("/wait") else 0.0) + FORWARD_MARGIN_SECONDS


class JobForwardingMiddleware:
    """Innermost middleware: a request about a job another node owns goes to that node."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_wait_seconds: float) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_wait_seconds = max_wait_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or FORWARDED in scope:
            await self.app(scope, receive, send)
            return
        job_id = job_in_path(scope["method"], scope["path"])
        services = getattr(scope["app"].state, "services", None)
        node: ClusterNode | None = services.cluster_node if services is not None else None
        if job_id is None or node is None or services.engine.get_job(job_id) is not None:
            await self.app(scope, receive, send)
            return
        owner = await node.membership.owner_of(job_id)
        if owner is None or owner.node == node.node_id:
            await self.app(scope, receive, send)  # finished (served from the shared store) or unknown
            return
        try:
            body = await _read_body(receive, self.max_body_bytes)
        except APIError as exc:
            await json_response(exc.body(), exc.status)(scope, receive, send)
            return
        from routilux.cluster.channel import OwnerUnavailable

        try:
            answer = await node.forward(owner.node, scope, body, _forward_timeout(scope["path"], self.max_wait_seconds))
        except OwnerUnavailable as exc:
            record = await services.store.get_job(job_id)
            if record is not None and record.status in ("completed", "failed", "cancelled"):
                await self.app(scope, _replay(body), send)  # reaped meanwhile: the store answers
                return
            await _owner_unavailable(job_id, exc, node.membership.lease_seconds)(scope, receive, send)
            return
        await response_of(answer)(scope, receive, send)


def response_of(answer: ForwardedResponse) -> Response:
    """The owner's answer, as the response to our client."""
    response = Response(answer.body, answer.status)
    response.raw_headers = [(k, v) for k, v in answer.headers if k not in HOP_BY_HOP]
    return response


def _owner_unavailable(job_id: str, exc: Exception, lease_seconds: float):  # type: ignore[no-untyped-def]
    from routilux.cluster.channel import OwnerUnavailable

    assert isinstance(exc, OwnerUnavailable)
    retry = max(1, round(lease_seconds))
    message = (f"job {job_id} runs on node {exc.node}, which {exc.why}; if that node is gone the job is "
               f"marked failed (interrupted: worker lost) within about {retry + 1} seconds: retry then")
    body = {"detail": {"error": "owner_unavailable", "message": message, "job_id": job_id, "node": exc.node}}
    return json_response(body, 503, headers={"Retry-After": str(retry)})


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise APIError(400, "bad_request", "the client went away before sending the body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise APIError(413, "payload_too_large", f"the request body is larger than {limit} bytes", limit=limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await anyio.sleep_forever()
        raise AssertionError

    return receive

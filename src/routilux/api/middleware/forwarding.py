"""Requests about a job another server of the cluster runs: sent to that server, answered by it.

- :func:`answered_by_owner` (only with ``ROUTILUX_REDIS_URL``) wraps every HTTP route with a
  ``{job_id}`` in its path — the innermost layer, after the router matched the route, so the job
  is the route's own ``job_id`` and there is no second routing table. A request about a job
  another node owns goes to that node, and its answer is returned as is: pause, post,
  breakpoints, step, state... all behave as if the job ran here.
- :func:`serve_forwarded` is the owner's side: it runs the request through the owner's own routes,
  so there is one implementation of every endpoint, never a second "remote" one.
- :func:`place_job` starts a job on a server of another worker group, the same way.
- Jobs move (a drain, a lost server, see :mod:`routilux.cluster.nodes`): the owner is looked up
  per request; a request about a job that is moving waits for its new owner (up to
  :data:`MOVE_WAIT_SECONDS`) and goes there, else answers 503 ``owner_unavailable`` with
  ``Retry-After``; a job just handed to this node is resumed before its request is answered.

Nothing here imports a Redis client until a cluster uses it (a single server never does).
Authentication and rate limiting happen once, on the node the client called; the owner trusts a
request that arrives through Redis (Redis is inside the deployment's trust boundary, like the
database). A request never hangs: an owner that is gone gives ``503 owner_unavailable`` (see
:mod:`routilux.cluster.channel` for the bounds), and a job the reaper failed meanwhile is served
from the shared store.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

import anyio
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Scope

from routilux.api.body import read_body
from routilux.api.services import services
from routilux.bus import TERMINAL_STATUSES
from routilux.server.errors import Unavailable

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from routilux.cluster.channel import ForwardedRequest, ForwardedResponse, OwnerUnavailable
    from routilux.server.cluster_node import ClusterNode

log = logging.getLogger("routilux.api")

FORWARDED: Final = "routilux.forwarded"  # scope key marking a request that came from another node
#: How long a forwarded request may take, beyond what the endpoint itself may hold it.
FORWARD_MARGIN_SECONDS: Final = 15.0
#: How long a request about a moving job waits for its new owner before the 503 is passed on.
MOVE_WAIT_SECONDS: Final = 5.0
MOVE_POLL_SECONDS: Final = 0.1
HOP_BY_HOP: Final = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"te",
                               b"proxy-authorization", b"proxy-connection", b"trailer"})


# -- the owner's side: run a forwarded request through this node's routes -------------------------
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

    from routilux.store.redis.reachability import serving_a_request

    try:
        with serving_a_request():  # as on the node the client called (RedisRequestsMiddleware)
            await routes_only(scope, receive, send)
    except Exception:  # ServerErrorMiddleware sent the 500 already; it re-raises for servers' logs
        log.debug("forwarded %s %s failed", request.method, request.path, exc_info=True)
    return ForwardedResponse(request.id, status, headers, b"".join(chunks))


# -- the receiving side: send a request about another node's job to its owner ---------------------
Endpoint = Callable[[Request], Awaitable[Response]]


def answered_by_owner(endpoint: Endpoint) -> Endpoint:
    """``endpoint``, except that a request about a job another node owns is answered by that node."""

    async def handler(request: Request) -> Response:
        svc = services(request)
        node = svc.cluster_node
        job_id = request.path_params["job_id"]
        if node is None:
            return await endpoint(request)
        if job_id in node.moving:
            raise _moving(job_id)
        if svc.engine.get_job(job_id) is not None:
            return await endpoint(request)
        owner = await node.membership.owner_of(job_id)
        if owner is not None and owner.node == node.node_id:
            return await _answer_here(node, request, endpoint, job_id)
        if owner is None:
            return await endpoint(request)  # finished (served from the shared store) or unknown
        if FORWARDED in request.scope:
            raise _moving(job_id)  # it moved on while the request travelled: the sender retries
        body = await read_body(request, svc.settings.max_body_bytes)  # kept: the endpoint may read it
        wait = svc.settings.max_wait_seconds if request.url.path.endswith("/wait") else 0.0
        return await _follow_owner(node, request, endpoint, owner.node, body, wait + FORWARD_MARGIN_SECONDS)

    handler.__name__ = getattr(endpoint, "__name__", "handler")
    return handler


def _moving(job_id: str) -> Unavailable:
    return Unavailable("owner_unavailable", f"job {job_id} is moving to another server; retry",
                       retry_after=1, job_id=job_id, moving=True)


def _is_moving(answer: ForwardedResponse) -> bool:
    """Whether the owner answered that the job is moving (a drain or a fencing): retry on the new one."""
    return answer.status == 503 and b'"moving":true' in answer.body


async def _follow_owner(
    node: ClusterNode, request: Request, endpoint: Endpoint, target: str, body: bytes, timeout: float
) -> Response:
    """Forward to ``target``, the job's owner; while the job moves (a drain hands it to another
    node), wait for its new owner and send it there, for up to :data:`MOVE_WAIT_SECONDS`."""
    from routilux.cluster.channel import ChannelInterrupted, OwnerUnavailable

    svc = services(request)
    job_id = request.path_params["job_id"]
    deadline = anyio.current_time() + MOVE_WAIT_SECONDS
    while True:
        try:
            answer = await forward(node, target, request.scope, body, timeout)
        except OwnerUnavailable as exc:
            if isinstance(exc, ChannelInterrupted):  # Redis lost: the owner is not the trouble
                raise cluster_interrupted(exc) from None
            record = await svc.store.get_job(job_id)
            if record is not None and record.status in TERMINAL_STATUSES:
                return await endpoint(request)  # reaped meanwhile: the store answers
            owner = await node.membership.owner_of(job_id)
            if owner is not None and owner.node != target and anyio.current_time() < deadline:
                if owner.node != node.node_id:
                    target = owner.node  # adopted meanwhile: ask its new owner
                    continue
                return await _answer_here(node, request, endpoint, job_id)  # adopted by this very node
            retry = max(1, round(node.membership.lease_seconds))
            raise Unavailable(
                "owner_unavailable",
                f"job {job_id} runs on node {exc.node}, which {exc.why}; if that node is gone the job moves to "
                f"another server (or, with no checkpoint, is marked failed) within about {retry + 1} seconds: "
                "retry then",
                retry_after=retry, job_id=job_id, node=exc.node,
            ) from None
        if not _is_moving(answer) or anyio.current_time() > deadline:
            return response_of(answer)
        await anyio.sleep(MOVE_POLL_SECONDS)
        owner = await node.membership.owner_of(job_id)
        if owner is None:
            return await endpoint(request)
        if owner.node == node.node_id:  # handed to this very node
            return await _answer_here(node, request, endpoint, job_id)
        target = owner.node


def cluster_interrupted(exc: OwnerUnavailable) -> Unavailable:
    """503 ``cluster_unavailable``: a forwarded request's answer could not be heard (Redis lost)."""
    return Unavailable("cluster_unavailable", f"the cluster's shared store (Redis) was unreachable while node "
                       f"{exc.node} was asked; whether it did the request is unknown: check, or retry",
                       retry_after=2, node=exc.node)


async def _answer_here(node: ClusterNode, request: Request, endpoint: Endpoint, job_id: str) -> Response:
    """The job is assigned to this node: resume it first if it was handed here a moment ago. A
    live job this node still does not run (it is stopping and adopts nothing more: a drain handed
    it here as this node began its own) answers 503 "moving" — it moves on, and the client retries
    — never the stored record's ``409 illegal_transition``."""
    svc = services(request)
    if svc.engine.get_job(job_id) is None:
        if node.adopter is not None and not node.adopter.closed:  # a closed one adopts nothing: no wait
            await node.adopter.adopt_now()
        if svc.engine.get_job(job_id) is None:
            record = await svc.store.get_job(job_id)
            if record is not None and record.status not in TERMINAL_STATUSES:
                raise _moving(job_id)
    return await endpoint(request)


async def place_job(node: ClusterNode, request: Request, group: str) -> Response:
    """Start the job ``request`` asks for on a live node of worker ``group`` (this node is not
    one): that node answers, and owns the job."""
    from routilux.cluster.channel import ChannelInterrupted, OwnerUnavailable

    target = await node.membership.pick_node(group)
    if target is None:
        raise Unavailable("no_worker_in_group",
                          f"no running server is in worker group '{group}' (ROUTILUX_WORKER_GROUP), so the "
                          "runtime's jobs cannot start; start one, or use another runtime",
                          retry_after=5, worker_group=group)
    try:
        answer = await forward(node, target, request.scope, await request.body(), FORWARD_MARGIN_SECONDS)
    except OwnerUnavailable as exc:
        if isinstance(exc, ChannelInterrupted):
            raise cluster_interrupted(exc) from None
        raise Unavailable("worker_unavailable", f"node {exc.node} of worker group '{group}' {exc.why}; retry",
                          worker_group=group, node=exc.node) from None
    return response_of(answer)


async def forward(node: ClusterNode, target: str, scope: Scope, body: bytes, timeout: float) -> ForwardedResponse:
    """Send the HTTP request of ``scope`` (with ``body``) to node ``target``; its answer, or
    :class:`~routilux.cluster.channel.OwnerUnavailable`."""
    client = scope.get("client")
    request = node.channel.new_request(
        method=scope["method"], path=scope["path"], query=scope.get("query_string", b""),
        headers=[(k, v) for k, v in scope["headers"] if k not in HOP_BY_HOP], body=body,
        client=(client[0], client[1]) if client else None, timeout=timeout,
    )
    return await node.channel.request(target, request)


def response_of(answer: ForwardedResponse) -> Response:
    """The owner's answer, as the response to our client."""
    response = Response(answer.body, answer.status)
    response.raw_headers = [(k, v) for k, v in answer.headers if k not in HOP_BY_HOP]
    return response

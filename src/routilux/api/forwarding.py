"""Requests about a job another server of the cluster runs: sent to that server, answered by it.

- :class:`JobForwardingMiddleware` (innermost; only with ``ROUTILUX_REDIS_URL``) sends a request
  about a job another node owns to that node, and returns its answer as is: pause, post,
  breakpoints, step, state... all behave as if the job ran here.
- :func:`serve_forwarded` is the owner's side: it runs the request through the owner's own routes,
  so there is one implementation of every endpoint, never a second "remote" one.

Authentication and rate limiting happen once, on the node the client called; the owner trusts a
request that arrives through Redis (Redis is inside the deployment's trust boundary, like the
database). A request never hangs: an owner that is gone gives ``503 owner_unavailable`` (see
:mod:`routilux.cluster.channel` for the bounds), and a job the reaper failed meanwhile is served
from the shared store.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

import anyio
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from routilux.api.errors import APIError
from routilux.api.responses import json_response
from routilux.store.base import TERMINAL_STATUSES

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from routilux.api.cluster import ClusterNode
    from routilux.cluster.channel import ForwardedRequest, ForwardedResponse

log = logging.getLogger("routilux.api")

FORWARDED: Final = "routilux.forwarded"  # scope key marking a request that came from another node
#: How long a forwarded request may take, beyond what the endpoint itself may hold it.
FORWARD_MARGIN_SECONDS: Final = 15.0
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
            if record is not None and record.status in TERMINAL_STATUSES:
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

"""Every error response has one shape: ``{"detail": {"error": code, "message": text, ...}}``.

Handlers raise :class:`APIError` for what only the edge can judge (a body, a query parameter), and
let every other :class:`~routilux.errors.RoutiluxError` propagate — engine, control plane
(:mod:`routilux.server.errors`) and store errors alike. :data:`ERROR_STATUS` is the one map from
an error's class to its HTTP status; the handlers installed by :func:`install_error_handlers` turn
each into that shape. A store that cannot serve answers 503 ``store_unavailable`` with
``Retry-After`` and without the store's location (a database path is the server's business, and
goes to its log). In a cluster, a Redis that cannot be reached (lost, restarting, loading its
data) answers 503 ``cluster_unavailable`` with ``Retry-After``, whichever part needed it (the
store, the job's owner entry, the channel): the Redis clients' timeouts make that answer come
within 2 s, and at once when Redis is already known unreachable
(:mod:`routilux.store.redis.reachability`). Anything unexpected is a 500 whose body says nothing
about the server's insides.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from routilux.api.responses import json_response
from routilux.engine import errors as engine_errors
from routilux.errors import RoutiluxError
from routilux.server import errors as control_errors
from routilux.store.errors import StoreError, StoreUnreachable

log = logging.getLogger("routilux.api")


class APIError(Exception):
    """An error the client caused or should know about, with its HTTP status."""

    def __init__(self, status: int, code: str, message: str, /, **context: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.context = context
        self.headers: dict[str, str] = {}

    def body(self) -> dict[str, Any]:
        return {"detail": {"error": self.code, "message": self.message, **self.context}}


#: Every error class and the status it means to a client (the closest class in the MRO wins).
ERROR_STATUS: Final[dict[type[RoutiluxError], int]] = {
    control_errors.NotFound: 404,
    control_errors.Conflict: 409,
    control_errors.Invalid: 400,
    control_errors.Unprocessable: 422,
    control_errors.Unavailable: 503,
    StoreError: 503,
    engine_errors.IllegalTransition: 409,
    engine_errors.JobTerminated: 409,
    engine_errors.DuplicateRuntime: 409,
    engine_errors.RuntimeShutdown: 409,
    engine_errors.RuntimeNotFound: 404,
    engine_errors.UnknownRoutine: 404,
    engine_errors.UnknownSlot: 404,
    engine_errors.UnknownEvent: 400,
    engine_errors.UnknownRoutineClass: 400,
    engine_errors.FlowValidationError: 400,
    engine_errors.DSLError: 400,
    engine_errors.ConfigError: 400,
    engine_errors.SlotFull: 503,
}


def error_status(exc: RoutiluxError) -> int:
    for cls in type(exc).__mro__:
        status = ERROR_STATUS.get(cls)
        if status is not None:
            return status
    return 400


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return json_response(exc.body(), exc.status, headers=exc.headers or None)


async def _routilux_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RoutiluxError)
    if isinstance(exc, StoreError):
        return _store_unavailable(request, exc)
    status = error_status(exc)
    headers = None
    if status == 503:
        retry = exc.retry_after if isinstance(exc, control_errors.Unavailable) else 1
        headers = {"Retry-After": str(retry)}
    return json_response({"detail": exc.to_dict()}, status, headers=headers)


#: Seconds a client is told to wait while the cluster's Redis cannot be reached.
CLUSTER_RETRY_AFTER: Final = 2
CLUSTER_WARNING_SECONDS: Final = 5
_next_cluster_warning = 0.0


def _store_unavailable(request: Request, exc: StoreError) -> Response:
    """The store failed: the client learns that, and when to retry; the log learns where."""
    if isinstance(exc, StoreUnreachable) and getattr(request.app.state.settings, "redis_url", None):
        return cluster_unavailable(request, exc.message)
    log.error("store failure on %s %s: %s", request.method, request.url.path, exc.message)
    body = {"detail": {"error": "store_unavailable", "message": "the server's store cannot be used right now; "
                       "retry later"}}
    return json_response(body, 503, headers={"Retry-After": "1"})


def cluster_unavailable(request: Request, why: str) -> Response:
    """503 ``cluster_unavailable``: the cluster's Redis cannot be reached right now."""
    global _next_cluster_warning
    now = time.monotonic()
    if now >= _next_cluster_warning:  # one line per few seconds of an outage, not one per request
        _next_cluster_warning = now + CLUSTER_WARNING_SECONDS
        log.warning("%s %s answered 503 cluster_unavailable: the cluster's Redis is unreachable: %s "
                    "(more such answers are not logged for %ds)", request.method, request.url.path, why,
                    CLUSTER_WARNING_SECONDS)
    body = {"detail": {"error": "cluster_unavailable", "message": "the cluster's shared store (Redis) cannot be "
                       "reached right now; retry later"}}
    return json_response(body, 503, headers={"Retry-After": str(CLUSTER_RETRY_AFTER)})


async def _redis_unreachable(request: Request, exc: Exception) -> Response:
    return cluster_unavailable(request, str(exc) or type(exc).__name__)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    code = codes.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404:
        message = f"no endpoint at {request.url.path}"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    return json_response({"detail": {"error": code, "message": message}}, exc.status_code, headers=exc.headers)


async def _client_gone(request: Request, exc: Exception) -> Response:
    """The client went away while its body was read (or the server closed a body that came too
    slowly, :mod:`routilux.api.transport`): nobody is there to answer, and nothing went wrong here.
    The answer is dropped by the server; it only gives ``/metrics`` a status to count."""
    return json_response({"detail": {"error": "client_disconnected", "message": "the client disconnected"}}, 400)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    body = {"detail": {"error": "internal_error", "message": "the server failed to handle this request; see its log"}}
    return json_response(body, 500)


def install_error_handlers(app: Starlette, *, cluster: bool = False) -> None:
    """The handlers of every error; ``cluster`` adds Redis' connection errors (raised by the
    parts that talk to Redis directly: ownership, forwarding), imported only then: a single
    server never imports a Redis client."""
    if cluster:
        import redis.exceptions

        app.add_exception_handler(redis.exceptions.ConnectionError, _redis_unreachable)
        app.add_exception_handler(redis.exceptions.TimeoutError, _redis_unreachable)
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(RoutiluxError, _routilux_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unexpected)

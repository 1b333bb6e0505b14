"""Every error response has one shape: ``{"detail": {"error": code, "message": text, ...}}``.

Handlers raise :class:`APIError` (or let an engine error propagate); the exception handlers
installed by :func:`install_error_handlers` turn both into that shape with the right status, and
anything unexpected into a 500 whose body says nothing about the server's insides (the traceback
goes to the log only).
"""

from __future__ import annotations

import logging
from typing import Any, Final

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from routilux.api.responses import json_response
from routilux.engine import errors as engine_errors

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


def not_found(kind: str, ident: str, hint: str = "") -> APIError:
    message = f"{kind} '{ident}' not found" + (f"; {hint}" if hint else "")
    return APIError(404, f"{kind.replace(' ', '_')}_not_found", message, **{f"{kind.replace(' ', '_')}_id": ident})


#: Engine errors and the status each means to a client.
ENGINE_STATUS: Final[dict[type[engine_errors.RoutiluxError], int]] = {
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


def engine_status(exc: engine_errors.RoutiluxError) -> int:
    for cls in type(exc).__mro__:
        status = ENGINE_STATUS.get(cls)  # type: ignore[arg-type]
        if status is not None:
            return status
    return 400


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return json_response(exc.body(), exc.status, headers=exc.headers or None)


async def _engine_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, engine_errors.RoutiluxError)
    status = engine_status(exc)
    headers = {"Retry-After": "1"} if status == 503 else None
    return json_response({"detail": exc.to_dict()}, status, headers=headers)


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


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    body = {"detail": {"error": "internal_error", "message": "the server failed to handle this request; see its log"}}
    return json_response(body, 500)


def install_error_handlers(app: Starlette) -> None:
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(engine_errors.RoutiluxError, _engine_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)

"""API-key authentication: all or nothing, as the spec promises.

With ``ROUTILUX_API_KEY_ENABLED=true`` every ``/api`` request (and ``/metrics``) needs a valid ``X-API-Key``
header: missing is 401 (with ``WWW-Authenticate``), wrong is 403. Keys are compared in constant
time, each of them, so the time taken does not reveal which key (or how much of one) matched.
The OpenAPI document and the docs pages stay public so that clients can be generated, and so
does ``GET /api/health/live`` (load balancers carry no key). WebSockets authenticate in their
endpoint (:func:`websocket_key`), after accepting, so a refused client sees close code 1008.
"""

from __future__ import annotations

import hmac
from typing import Final

from starlette.types import ASGIApp, Receive, Scope, Send

from routilux.api.responses import json_response

MISSING = {
    "detail": {
        "error": "authentication_required",
        "message": "API key is required. Provide it in the X-API-Key header.",
    }
}
INVALID = {"detail": {"error": "invalid_api_key", "message": "The API key is not valid."}}


PUBLIC_PATHS: Final = frozenset({"/api/health/live"})
#: a WebSocket client that can set neither headers nor (wisely) URLs offers this subprotocol
SUBPROTOCOL_KEY_PREFIX: Final = "apikey."
#: the subprotocol the server selects when the client offers it alongside its key
SUBPROTOCOL: Final = "routilux"


def websocket_key(query_key: str | None, headers: list[tuple[bytes, bytes]], subprotocols: list[str]) -> str | None:
    """The key a WebSocket client presented: ``?api_key=``, the ``X-API-Key`` header, or a
    ``Sec-WebSocket-Protocol`` value ``apikey.<key>`` (for browsers, which can set no header)."""
    if query_key:
        return query_key
    for name, value in headers:
        if name == b"x-api-key":
            return value.decode("latin-1")
    for offered in subprotocols:
        if offered.startswith(SUBPROTOCOL_KEY_PREFIX) and len(offered) > len(SUBPROTOCOL_KEY_PREFIX):
            return offered[len(SUBPROTOCOL_KEY_PREFIX):]
    return None


def key_matches(candidate: str, keys: tuple[str, ...]) -> bool:
    given = candidate.encode()
    matched = False
    for key in keys:  # no early exit: every key is compared
        matched |= hmac.compare_digest(given, key.encode())
    return matched


class APIKeyMiddleware:
    def __init__(self, app: ASGIApp, keys: tuple[str, ...]) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        guarded = path.startswith("/api") or path == "/metrics"
        if not guarded or scope["method"] == "OPTIONS" or path in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        candidate = None
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                candidate = value.decode("latin-1")
                break
        if candidate is None:
            response = json_response(MISSING, 401, headers={"WWW-Authenticate": 'ApiKey header="X-API-Key"'})
        elif not key_matches(candidate, self.keys):
            response = json_response(INVALID, 403)
        else:
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)

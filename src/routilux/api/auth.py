"""API-key authentication: all or nothing, as the spec promises.

With ``ROUTILUX_API_KEY_ENABLED=true`` every ``/api`` request needs a valid ``X-API-Key``
header: missing is 401 (with ``WWW-Authenticate``), wrong is 403. Keys are compared in constant
time, each of them, so the time taken does not reveal which key (or how much of one) matched.
The OpenAPI document and the docs pages stay public so that clients can be generated.
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from routilux.api.responses import json_response

MISSING = {
    "detail": {
        "error": "authentication_required",
        "message": "API key is required. Provide it in the X-API-Key header.",
    }
}
INVALID = {"detail": {"error": "invalid_api_key", "message": "The API key is not valid."}}


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
        if scope["type"] != "http" or not scope["path"].startswith("/api") or scope["method"] == "OPTIONS":
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

"""Requests a browser makes for another website are refused: 403 ``cross_site_request``.

CORS only decides whether a page may *read* an answer. A page on any website can still make its
visitors' browsers *send* a simple POST (a form, or ``fetch`` with ``mode: "no-cors"``) — and on a
server without keys, ``POST /api/jobs/{id}/cancel`` needs no body. WebSocket handshakes are not
covered by CORS at all: any page could stream job events. So, before authentication:

* **WebSocket handshakes** whose ``Origin`` is not an allowed origin are refused with 403 before
  the upgrade (an HTTP answer where the server can send one — uvicorn can — else the handshake is
  closed unaccepted, which servers answer with 403 too).
* **Unsafe methods** (POST, PUT, PATCH, DELETE) are refused when ``Origin`` names an origin that is
  not allowed, or when the browser says the request is cross-site or same-site
  (``Sec-Fetch-Site``) and sends no usable ``Origin`` to judge it by.

Allowed origins are ``ROUTILUX_CORS_ORIGINS`` (``*`` allows every origin), and the server's own
origin — the request's scheme and ``Host`` — so pages served by the API itself (``/docs``) work.
A request without ``Origin`` and without ``Sec-Fetch-Site`` is not a browser's cross-site request
(curl, SDKs and servers send neither) and passes; so does one the browser marks
``Sec-Fetch-Site: same-origin`` or ``none`` (typed by the user). Browsers set both headers
themselves: a page cannot forge them. Safe methods (GET, HEAD, OPTIONS) pass: they change nothing,
and CORS keeps their answers from foreign pages.

A dashboard on another website works as before once its origin is listed; its requests are
cross-site and carry its ``Origin``, which is then allowed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from starlette.types import ASGIApp, Receive, Scope, Send

from routilux.api.responses import json_response

UNSAFE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_HTTP_SCHEME: Final = {"ws": "http", "wss": "https"}


class OriginPolicy:
    """Which ``Origin`` values may act on this server."""

    def __init__(self, origins: Iterable[str]) -> None:
        listed = [origin.rstrip("/").lower() for origin in origins]
        self.any = "*" in listed
        self.allowed = frozenset(listed)

    def allows(self, origin: str, scope: Scope, host: str | None) -> bool:
        """``origin`` (the header's value) is listed, or is the server's own as this request
        reached it."""
        if self.any:
            return True
        origin = origin.lower()
        if origin in self.allowed:
            return True
        if host is None:
            return False
        scheme = _HTTP_SCHEME.get(scope["scheme"], scope["scheme"])
        return origin == f"{scheme}://{host.lower()}"


def _headers(scope: Scope) -> tuple[str | None, str | None, str | None]:
    """``Origin``, ``Sec-Fetch-Site`` and ``Host`` (the first of each), decoded as Latin-1."""
    origin = fetch_site = host = None
    for name, value in scope["headers"]:
        if name == b"origin" and origin is None:
            origin = value.decode("latin-1")
        elif name == b"sec-fetch-site" and fetch_site is None:
            fetch_site = value.decode("latin-1").lower()
        elif name == b"host" and host is None:
            host = value.decode("latin-1")
    return origin, fetch_site, host


class CrossSiteMiddleware:
    """Refuse what :mod:`this module <routilux.api.middleware.cross_site>` says."""

    def __init__(self, app: ASGIApp, origins: Iterable[str]) -> None:
        self.app = app
        self.policy = OriginPolicy(origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" and scope["method"] in UNSAFE_METHODS:
            refusal = self._http_refusal(scope)
        elif kind == "websocket":
            refusal = self._websocket_refusal(scope)
        else:
            refusal = None
        if refusal is None:
            await self.app(scope, receive, send)
            return
        if kind == "websocket" and "websocket.http.response" not in scope.get("extensions", {}):
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008, "reason": "cross-site request refused"})
            return
        response = json_response({"detail": {"error": "cross_site_request", "message": refusal}}, 403)
        await response(scope, receive, send)

    def _http_refusal(self, scope: Scope) -> str | None:
        origin, fetch_site, host = _headers(scope)
        if fetch_site in ("same-origin", "none"):
            return None
        if origin is not None:  # "null" (sandboxed frames, files) is no allowed origin unless * is
            if self.policy.allows(origin, scope, host):
                return None
            return (f"requests from pages on {origin[:200]} are not allowed to change anything here "
                    "(ROUTILUX_CORS_ORIGINS)")
        if fetch_site in ("cross-site", "same-site") and not self.policy.any:
            return "a browser's request from another site, without an allowed Origin, may not change anything here"
        return None

    def _websocket_refusal(self, scope: Scope) -> str | None:
        origin, _fetch_site, host = _headers(scope)
        if origin is None or self.policy.allows(origin, scope, host):
            return None
        return f"WebSocket connections from pages on {origin[:200]} are not allowed (ROUTILUX_CORS_ORIGINS)"

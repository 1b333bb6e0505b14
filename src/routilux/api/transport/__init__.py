"""What happens on the socket before the application sees a request: the uvicorn protocols and
the options Routilux serves with, under ``python -m routilux.api.main`` and under gunicorn
(:mod:`routilux.api.worker`) alike.

* HTTP: :class:`~.protocol.GuardedHTTPProtocol` — httptools with limits on head size, head and
  body time and open connections (``ROUTILUX_MAX_HEADER_*``, ``ROUTILUX_*_TIMEOUT_SECONDS``,
  ``ROUTILUX_BODY_MIN_RATE``, ``ROUTILUX_MAX_CONNECTIONS``).
* WebSocket: :class:`~routilux.api.ws.protocol.BatchingWebSocketProtocol`, with uvicorn's
  ``ws_max_size`` set to ``ROUTILUX_WS_MAX_MESSAGE_BYTES``: the protocol refuses a larger message
  from its frame header and closes with 1009 before reading its payload. (uvicorn's default,
  16 MiB, let every socket buffer that much before the application could say no.)
* ``proxy_headers=False``: uvicorn would believe ``X-Forwarded-For`` from 127.0.0.1; the app
  trusts only ``ROUTILUX_TRUSTED_PROXIES``.

Plain ``uvicorn routilux.api.main:app`` serves with uvicorn's defaults and none of this.
"""

from __future__ import annotations

from typing import Any

from routilux.api.transport.protocol import GuardedHTTPProtocol, SocketLimits, protocol_for
from routilux.api.ws.protocol import BatchingWebSocketProtocol
from routilux.server.settings import Settings

__all__ = ["GuardedHTTPProtocol", "SocketLimits", "protocol_for", "uvicorn_options"]


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The ``uvicorn.Config`` options that put ``settings``' socket limits in force."""
    return {
        "http": protocol_for(SocketLimits.from_settings(settings)),
        "ws": BatchingWebSocketProtocol,
        "ws_max_size": settings.ws_max_message_bytes,
        "proxy_headers": False,
    }

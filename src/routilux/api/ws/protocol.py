"""uvicorn's WebSocket protocol, able to send many text frames with one system call.

Fanning one job out to many sockets means many small frames. Through plain ASGI each frame is one
``websocket.send`` message, which uvicorn frames and hands to the transport on its own, and the
transport writes each with its own ``send()`` system call: together about half of a busy server's
time. :class:`BatchingWebSocketProtocol` is uvicorn's sans-I/O WebSocket protocol plus one ASGI
extension, advertised in ``scope["extensions"]`` under :data:`SEND_FRAMES`: a ``websocket.send``
message carrying ``{SEND_FRAMES: [payload, ...]}`` (UTF-8 JSON ``bytes``) sends each payload as
its own text frame — frames stay separate WebSocket messages, in order, one JSON object each, as
the socket protocol promises — and writes them all at once. When the client negotiated
compression (``permessage-deflate``) the frames go through the ``websockets`` protocol as usual;
otherwise their headers are built here (server frames are never masked), skipping its per-frame
bookkeeping.

An application must not rely on the extension: under gunicorn's stock uvicorn worker, or any other
ASGI server, it is absent and :func:`routilux.api.ws.session.Session` sends one ASGI message per
frame. Flow control is uvicorn's: a batch waits while the transport's buffer is above its
high-water mark, exactly like a single frame.
"""

from __future__ import annotations

import struct
from typing import Any, Final

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

SEND_FRAMES: Final[str] = "routilux.websocket.send_frames"

_TEXT_FIN: Final[int] = 0x81
_HEAD_16 = struct.Struct("!BBH")
_HEAD_64 = struct.Struct("!BBQ")


def text_frames(payloads: list[bytes]) -> bytes:
    """``payloads`` as unmasked, uncompressed, final text frames (RFC 6455 §5.2), concatenated."""
    parts: list[bytes] = []
    append = parts.append
    for payload in payloads:
        n = len(payload)
        if n < 126:
            append(bytes((_TEXT_FIN, n)))
        elif n < 65536:
            append(_HEAD_16.pack(_TEXT_FIN, 126, n))
        else:
            append(_HEAD_64.pack(_TEXT_FIN, 127, n))
        append(payload)
    return b"".join(parts)


class BatchingWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's ``websockets-sansio`` protocol with the :data:`SEND_FRAMES` extension."""

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:  # the handshake went on to the application (its task starts later)
            scope["extensions"][SEND_FRAMES] = {}

    async def send(self, message: Any) -> None:
        payloads = message.get(SEND_FRAMES) if message["type"] == "websocket.send" else None
        if payloads is None:
            await super().send(message)
            if message["type"] == "websocket.http.response.body" and not message.get("more_body", False):
                # A handshake answered with an HTTP response (a 429, say) is complete; uvicorn
                # would otherwise log "ASGI callable returned without completing handshake."
                self.handshake_complete = True
            return
        await self.writable.wait()
        if self.disconnected or self.conn.state is not State.OPEN or self.transport.is_closing():
            raise ClientDisconnected()
        if not self.handshake_complete or self.close_sent or self.initial_response is not None:
            raise RuntimeError("frames can only be sent on an accepted, open WebSocket")
        conn = self.conn
        if conn.extensions:  # compression was negotiated: let websockets frame and deflate
            for payload in payloads:
                conn.send_text(payload)
            self.transport.write(b"".join(conn.data_to_send()))
        else:
            self.transport.write(text_frames(payloads))

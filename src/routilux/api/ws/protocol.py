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
high-water mark, exactly like a single frame; an empty batch only waits, so a sender can choose
what to send once the client takes more. The high-water mark is :data:`WRITE_HIGH_WATER` (the
kernel's socket buffers take far more first): a client that stopped reading costs the server at
most that plus one batch.

A close frame is not held behind a client that stopped reading: it is written at once (it reaches
the client after what is already buffered), and if the client has not taken everything within
uvicorn's close timeout the connection is aborted, so its buffers are freed rather than kept until
the client reads or TCP gives up.
"""

from __future__ import annotations

import struct
from typing import Any, Final

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

SEND_FRAMES: Final[str] = "routilux.websocket.send_frames"
#: The transport's write buffer above which sends wait (asyncio's default is 64 KiB).
WRITE_HIGH_WATER: Final[int] = 16 * 1024

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

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:  # the handshake went on to the application (its task starts later)
            scope["extensions"][SEND_FRAMES] = {}

    async def send(self, message: Any) -> None:
        if message["type"] == "websocket.close" and self.handshake_complete and not self.writable.is_set():
            await self._close_now(message)
            return
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
        if not payloads:  # only waiting for the client to take what is buffered
            return
        conn = self.conn
        if conn.extensions:  # compression was negotiated: let websockets frame and deflate
            for payload in payloads:
                conn.send_text(payload)
            self.transport.write(b"".join(conn.data_to_send()))
        else:
            self.transport.write(text_frames(payloads))

    async def _close_now(self, message: Any) -> None:
        """Send the close frame although the write buffer is over its high-water mark (the
        client stopped reading), then abort the connection if it is still not flushed when
        uvicorn would close it."""
        self.writable.set()  # let this one message through; nothing else sends after a close
        try:
            await super().send(message)
        finally:
            if not self.transport.is_closing() and self.transport.get_write_buffer_size() > WRITE_HIGH_WATER:
                self.writable.clear()
        if self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = self.loop.call_later(self.close_timeout, self._close_or_abort)

    def _close_or_abort(self) -> None:
        if self.transport.get_write_buffer_size():
            self.transport.abort()
        else:
            self.transport.close()

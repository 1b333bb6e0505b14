"""uvicorn's httptools protocol with limits on what one connection may cost before the app runs.

Stock uvicorn on httptools reads a request head of any size (llhttp has no limit, and
``h11_max_incomplete_event_size`` exists only for the much slower h11), waits forever for a head
or a body that trickles in, and counts connections only when ``limit_concurrency`` is set — then
logging a warning per refused request. :class:`GuardedHTTPProtocol` adds, per connection:

* **Head size.** Every chunk that belongs to a request head goes through a
  :class:`~.head.HeadMeter` before the parser: a request line over ``max_line`` bytes gets 414,
  a header line over it or a head over ``max_head`` in all 431 — after at most one read of the
  socket (≤ 256 KiB) was buffered. (Bytes of a pipelined request that arrive in the same read as
  the end of the previous body reach the parser uncounted; that is bounded by the read, too.)
* **Head time.** A connection's first head must be complete within ``header_timeout`` seconds of
  the connection opening, a later one within that of its first byte (an idle keep-alive
  connection is uvicorn's to close). Past it: 408 if any of the head came, else the connection
  is closed without a word.
* **Body rate.** A body still arriving must bring ``body_min_rate`` bytes a second, at least one
  byte, in each period of ``body_timeout`` seconds — unless the server itself stopped reading
  (uvicorn pauses reading while the app has not taken what was read, and the client waits for
  ``100 Continue`` until the app reads). Past it: 408 (if the response has not begun) and closed.
* **Connection cap.** A request that arrives while more than ``max_connections`` connections are
  open (HTTP and WebSocket, idle ones included) gets 503 with ``Retry-After``, WebSocket
  handshakes included, which uvicorn's own ``limit_concurrency`` lets through.

Refusals are answered in the API's error shape with ``Connection: close``; the server then stops
writing and reads (and drops) what the client still sends for up to :data:`LINGER_SECONDS`
before it closes, so that the client reads the answer instead of a reset. Every refusal is
counted in :data:`~.refusals.REFUSALS`, which logs them at most once a minute.

Parsing stays httptools': a normal request costs one ``bytes.find`` more (see ``bench/api``).
"""

from __future__ import annotations

import asyncio
import resource
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from routilux.api.responses import encode
from routilux.api.transport.head import CONTINUES, HeadMeter, HeadTooLarge
from routilux.api.transport.refusals import REFUSALS
from routilux.server.settings import Settings

#: How long a refused connection is kept half-closed, reading and dropping what its client sends.
LINGER_SECONDS: Final = 2.0
#: File descriptors left to the rest of the process (store, logs, Redis) under the default cap.
RESERVED_FILES: Final = 100
DEFAULT_MAX_CONNECTIONS: Final = 10_000


def default_max_connections() -> int:
    """The open-file limit less :data:`RESERVED_FILES`, at most :data:`DEFAULT_MAX_CONNECTIONS`:
    a cap the process can reach without running out of file descriptors, which would lock every
    new client out without a word in the log."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return DEFAULT_MAX_CONNECTIONS
    return max(10, min(DEFAULT_MAX_CONNECTIONS, soft - RESERVED_FILES))


@dataclass(frozen=True, slots=True)
class SocketLimits:
    """What one connection may cost (see the module docstring); ``max_connections=None``: no cap."""

    max_line: int = 8192
    max_head: int = 65_536
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    body_min_rate: int = 500
    max_connections: int | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> SocketLimits:
        return cls(
            max_line=settings.max_header_line_bytes,
            max_head=settings.max_header_bytes,
            header_timeout=settings.header_timeout_seconds,
            body_timeout=settings.body_timeout_seconds,
            body_min_rate=settings.body_min_rate,
            max_connections=settings.max_connections or default_max_connections(),
        )


def error_response(status: int, code: str, message: str, default_headers: list[tuple[bytes, bytes]],
                   extra: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    """A complete ``Connection: close`` HTTP/1.1 response with the API's error body."""
    body = encode({"detail": {"error": code, "message": message}})
    parts = [STATUS_LINE[status]]
    for name, value in (*default_headers, (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()), (b"connection", b"close"), *extra):
        parts += [name, b": ", value, b"\r\n"]
    parts += [b"\r\n", body]
    return b"".join(parts)


_Base = HttpToolsProtocol


def protocol_for(limits: SocketLimits) -> type[GuardedHTTPProtocol]:
    """A :class:`GuardedHTTPProtocol` class with these limits, for uvicorn's ``http=``."""
    return type("GuardedHTTPProtocol", (GuardedHTTPProtocol,), {"limits": limits})


class GuardedHTTPProtocol(HttpToolsProtocol):
    """uvicorn's ``HttpToolsProtocol`` within :attr:`limits` (see the module docstring)."""

    limits: ClassVar[SocketLimits] = SocketLimits()

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._meter = HeadMeter(self.limits.max_line, self.limits.max_head)
        self._in_head = True  # a head is due (the parser has not completed it)
        self._in_body = False  # a body is due (headers complete, message not)
        self._window = 0  # body bytes since the body timer last looked
        self._timer: asyncio.TimerHandle | None = None
        self._refused = False

    # -- connection -------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # Every request passes here and through the two callbacks below: the base class is called
        # by name (cheaper than super()) and the common case — a whole head, no body or all of
        # it — is decided with a few attribute reads.
        if self._refused:
            return  # lingering: the answer is sent, the rest is dropped
        end = CONTINUES
        if self._in_head:
            try:
                end = self._meter.feed(data)
            except HeadTooLarge as exc:
                self._refuse(exc.status, "request_line_too_long" if exc.status == 414 else "headers_too_large",
                             exc.message, "head_too_large")
                return
        else:
            self._window += len(data)
        _Base.data_received(self, data)
        if self._in_body or (self._in_head and self._meter.size):  # a head or a body is incomplete
            self._incomplete(data, end)

    def _incomplete(self, data: bytes, end: int) -> None:
        """After a read that left a head or a body incomplete: count what the meter could not, and
        start the clock that bounds how long the rest may take."""
        if self._refused or self.transport.is_closing():
            return
        if self._in_head and end != CONTINUES:
            try:  # the parser read on past the blank line the meter took for the head's end
                self._meter.count(len(data) - end)
            except HeadTooLarge as exc:
                self._refuse(431, "headers_too_large", exc.message, "head_too_large")
                return
        if self._timer is None:
            if self._in_body:  # a body is due: it must keep its rate
                self._window = 0
                self._timer = self.loop.call_later(self.limits.body_timeout, self._body_check)
            else:  # part of a head came on a connection already used: it must end in time
                self._timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    # -- parser callbacks -------------------------------------------------------------------------
    def on_headers_complete(self) -> None:
        self._in_head = False
        meter = self._meter  # (reset by hand: this runs for every request)
        meter.size = meter.line = 0
        meter.started = False
        if self._timer is not None:
            self._cancel_timer()
        upgrade = self.parser.should_upgrade() and self._should_upgrade()
        self._in_body = not upgrade
        cap = self.limits.max_connections
        if upgrade or cap is None or len(self.connections) <= cap:  # (upgrades: handle_websocket_upgrade)
            _Base.on_headers_complete(self)
            return
        app = self.app  # uvicorn picks the app here: this request's is the refusal
        self.app = self._busy_app()
        try:
            _Base.on_headers_complete(self)
        finally:
            self.app = app

    def on_message_complete(self) -> None:
        _Base.on_message_complete(self)
        self._in_body = False
        self._in_head = True
        if self._timer is not None:
            self._cancel_timer()

    def handle_websocket_upgrade(self) -> None:
        self._cancel_timer()
        if self._over_capacity():
            open_now = len(self.connections)
            self._refuse(503, "too_many_connections", self._busy_message(open_now), "busy",
                         extra=((b"retry-after", b"1"),))
            return
        super().handle_websocket_upgrade()

    # -- limits -----------------------------------------------------------------------------------
    def _over_capacity(self) -> bool:
        cap = self.limits.max_connections
        return cap is not None and len(self.connections) > cap

    def _busy_message(self, open_now: int) -> str:
        return (f"the server has {open_now} connections open, more than its limit of "
                f"{self.limits.max_connections}; retry later")

    def _busy_app(self) -> Any:
        open_now = len(self.connections)
        REFUSALS.note("busy", self.loop, open_now, self.limits.max_connections)
        body = encode({"detail": {"error": "too_many_connections", "message": self._busy_message(open_now)}})
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close"), (b"retry-after", b"1")]

        async def busy(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": body, "more_body": False})

        return busy

    def _head_timed_out(self) -> None:
        self._timer = None
        if not self._in_head or self._refused or self.transport.is_closing():
            return
        if self._meter.size == 0 and self.cycle is None:  # nothing came: nobody to answer
            REFUSALS.note("idle", self.loop, len(self.connections), self.limits.max_connections)
            self._refused = True
            self.transport.close()
            return
        self._refuse(408, "request_timeout",
                     f"the request line and headers did not arrive within {self.limits.header_timeout:g} s",
                     "head_timeout")

    def _body_check(self) -> None:
        self._timer = None
        if not self._in_body or self._refused or self.transport.is_closing():
            return
        limits = self.limits
        cycle = self.cycle
        waited_on_server = self.flow.read_paused or (cycle is not None and cycle.waiting_for_100_continue)
        if waited_on_server or self._window >= max(1, int(limits.body_min_rate * limits.body_timeout)):
            self._window = 0
            self._timer = self.loop.call_later(limits.body_timeout, self._body_check)
            return
        REFUSALS.note("body_too_slow", self.loop, len(self.connections), limits.max_connections)
        message = (f"the request body arrived slower than {limits.body_min_rate} bytes a second "
                   f"over {limits.body_timeout:g} s")
        answer = cycle is None or not cycle.response_started
        self._abandon_cycle()
        self._refused = True
        if answer:
            self.transport.write(error_response(408, "request_timeout", message, self.server_state.default_headers))
        self.transport.close()

    # -- refusing ---------------------------------------------------------------------------------
    def _refuse(self, status: int, code: str, message: str, kind: str,
                extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        """Answer ``status`` and close, lingering so the client can read the answer."""
        REFUSALS.note(kind, self.loop, len(self.connections), self.limits.max_connections)
        self._refused = True
        self._cancel_timer()
        self._abandon_cycle()
        transport = self.transport
        transport.write(error_response(status, code, message, self.server_state.default_headers, extra))
        if transport.can_write_eof():
            transport.write_eof()  # the answer is complete: FIN after it, and read on until the client's
            self._timer = self.loop.call_later(LINGER_SECONDS, transport.close)
        else:
            transport.close()

    def _abandon_cycle(self) -> None:
        """A request in progress on this connection will get no more of it, and must not write:
        what ``connection_lost`` tells it, said now (a write to a closed uvloop transport raises)."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

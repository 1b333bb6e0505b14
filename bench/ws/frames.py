"""What the WebSocket bench's clients decode and how they count (:class:`Sub`: loss, gaps, order,
latency per client), and the transports: a minimal RFC 6455 client (:class:`RawWs`) or the
``websockets`` library.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import os
import time
from typing import TYPE_CHECKING, Any, Final

import msgspec

from bench.report import BenchFailure
from bench.server import HOST

# Targets of the issue, for this 2-core machine.
TARGET_P99_MS: Final[float] = 100.0
TARGET_DELIVERIES_PER_S: Final[float] = 20_000.0
TARGET_IDLE_KB: Final[float] = 100.0

FLOW_ID: Final[str] = "ws_bench"
ROUTINE_ID: Final[str] = "ticker"
ROUTINE_MODULES: Final[str] = "bench.ws_routines"  # WsTicker, loaded by every Routilux server under test
WARMUP_CONNECTIONS: Final[int] = 20
IDLE_PING_EVERY: Final[float] = 10.0

if TYPE_CHECKING:  # the client process that owns the subscriptions
    from bench.ws.worker import Worker


# =============================================================================================
# What the clients decode
# =============================================================================================
class _Fields(msgspec.Struct):
    i: int = -1
    t: float = 0.0


class _Data(msgspec.Struct):
    fields: _Fields | None = None


class _Frame(msgspec.Struct):
    """The parts of any frame the clients look at (events, snapshot, gap, pong, error)."""

    type: str = ""
    seq: int = 0
    last_seq: int | None = None
    from_seq: int = 0
    to_seq: int = 0
    data: _Data | None = None


_DECODER = msgspec.json.Decoder(_Frame)
_END_TYPES: Final = frozenset({"routine_end", "end"})
_QUIET_TYPES: Final = frozenset({"subscribed", "unsubscribed", "metrics"})  # not events of the job
PING: Final[bytes] = b'{"type":"ping"}'
PONG: Final[bytes] = b'{"type":"pong"}'


class Sub:
    """One client connection's view of the stream (same code for both servers, both clients)."""

    __slots__ = (
        "base", "closed", "disorder", "done", "errors", "events", "expect", "first_t", "gap_named", "gaps",
        "holes", "last_recv", "latencies", "max_silence", "next_seq", "next_tick", "pongs", "ready", "send",
        "snapshot",
        "tick_disorder", "ticks", "worker",
    )

    def __init__(self, worker: Worker, expect: int) -> None:
        self.worker = worker
        self.expect = expect
        self.latencies = worker.latencies
        self.base = 0
        self.next_seq = 1
        self.snapshot = False
        self.pongs = 0
        self.ready = False
        self.done = False
        self.closed: int | None = None
        self.events = 0
        self.holes = 0
        self.disorder = 0
        self.gaps = 0
        self.gap_named = 0
        self.ticks = 0
        self.next_tick = 0
        self.tick_disorder = 0
        self.last_recv = 0.0
        self.max_silence = 0.0  # longest time between two frames on this connection, once streaming
        self.first_t = math.inf
        self.errors: list[str] = []
        self.send: Any = None  # set by the transport: send(text: bytes)

    def handle(self, payload: bytes | str) -> None:
        now = time.time()
        try:
            frame = _DECODER.decode(payload)
        except msgspec.MsgspecError as exc:
            if len(self.errors) < 3:
                self.errors.append(f"undecodable frame ({exc}): {payload[:200]!r}")
            return
        kind = frame.type
        if self.ticks and now - self.last_recv > self.max_silence:
            self.max_silence = now - self.last_recv
        self.last_recv = now
        self.worker.last_recv = now
        if kind == "log":
            self._event(frame.seq)
            fields = frame.data.fields if frame.data is not None else None
            if fields is not None and fields.i >= 0:
                t = fields.t
                self.latencies.append(now - t)
                self.first_t = min(self.first_t, t)
                i = fields.i
                if i < self.next_tick:  # a duplicate or a step back (a skip forward is loss)
                    self.tick_disorder += 1
                else:
                    self.next_tick = i + 1
                self.ticks += 1
                if i >= self.expect - 1:
                    self._finish()
            return
        if kind == "snapshot":
            self.snapshot = True
            self.base = frame.last_seq or 0
            self.next_seq = self.base + 1
            self._check_ready()
        elif kind == "pong":
            self.pongs += 1
            self._check_ready()
        elif kind == "ping":
            if self.send is not None:
                self.send(PONG)
        elif kind == "gap":
            self.gaps += 1
            self.gap_named += frame.to_seq - frame.from_seq + 1
        elif kind == "error":
            if len(self.errors) < 3:
                self.errors.append(f"error frame: {payload[:300]!r}")
        elif kind in _QUIET_TYPES:
            pass
        else:  # any other event of the job
            self._event(frame.seq)
            if kind in _END_TYPES:
                self._finish()

    def _event(self, seq: int) -> None:
        self.events += 1
        expected = self.next_seq
        if seq != expected:
            if seq > expected:
                self.holes += seq - expected
            else:
                self.disorder += 1
        if seq >= expected:
            self.next_seq = seq + 1

    def _check_ready(self) -> None:
        if not self.ready and (self.snapshot if self.worker.mode == "stream" else self.pongs > 0):
            self.ready = True
            self.worker.on_ready()

    def _finish(self) -> None:
        if not self.done:
            self.done = True
            self.worker.on_done()

    def on_closed(self, code: int | None) -> None:
        if self.closed is None:
            self.closed = code if code is not None else 1006
            self.worker.on_closed(self)


# =============================================================================================
# Transports: a minimal RFC 6455 client, or the websockets library
# =============================================================================================
_WS_GUID: Final[bytes] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _mask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if not n:
        return b""
    pad = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(pad, "big")).to_bytes(n, "big")


def _client_frame(opcode: int, payload: bytes) -> bytes:
    key = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + key + _mask(payload, key)


class RawWs(asyncio.Protocol):
    """A WebSocket client connection: handshake, unmasked server frames in, masked frames out."""

    def __init__(self, sub: Sub, path: str, port: int, opened: asyncio.Future[None]) -> None:
        self.sub = sub
        self.path = path
        self.port = port
        self.opened = opened
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.upgraded = False
        self.key = base64.b64encode(os.urandom(16))
        self.fragments: list[bytes] = []
        sub.send = self.send_text

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(  # type: ignore[union-attr]
            f"GET {self.path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {self.key.decode()}\r\nSec-WebSocket-Version: "
            "13\r\n\r\n".encode()
        )

    def send_text(self, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_client_frame(0x1, payload))

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_client_frame(0x8, (1000).to_bytes(2, "big")))
            self.transport.close()

    def _fail(self, why: str) -> None:
        if len(self.sub.errors) < 3:
            self.sub.errors.append(why)
        if not self.opened.done():
            self.opened.set_exception(BenchFailure(why))
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            head, buf = buf[:end], buf[end + 4 :]
            accept = base64.b64encode(hashlib.sha1(self.key + _WS_GUID).digest())
            if not head.startswith(b"HTTP/1.1 101") or accept not in head:
                self._fail(f"handshake refused: {head[:300]!r}")
                return
            self.upgraded = True
            self.opened.set_result(None)
        handle = self.sub.handle
        pos, n = 0, len(buf)
        while n - pos >= 2:
            b0, length = buf[pos], buf[pos + 1]
            if length & 0x80:
                self._fail("the server sent a masked frame")
                return
            hdr = 2
            if length == 126:
                if n - pos < 4:
                    break
                length, hdr = (buf[pos + 2] << 8) | buf[pos + 3], 4
            elif length == 127:
                if n - pos < 10:
                    break
                length, hdr = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            end = pos + hdr + length
            if end > n:
                break
            payload = buf[pos + hdr : end]
            pos = end
            opcode = b0 & 0x0F
            if opcode == 0x1 or opcode == 0x2:
                if b0 & 0x80:
                    handle(payload)
                else:
                    self.fragments = [payload]
            elif opcode == 0x0:
                self.fragments.append(payload)
                if b0 & 0x80:
                    handle(b"".join(self.fragments))
                    self.fragments = []
            elif opcode == 0x9:  # ping: answer with the same payload
                if self.transport is not None and not self.transport.is_closing():
                    self.transport.write(_client_frame(0xA, payload))
            elif opcode == 0x8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self.sub.on_closed(code)
                self.close()
                self.buf = b""
                return
        self.buf = buf[pos:] if pos < n else b""

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(BenchFailure(f"connection lost during the handshake: {exc!r}"))
        self.sub.on_closed(None)



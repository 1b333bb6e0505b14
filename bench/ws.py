"""WebSocket fan-out benchmark against real uvicorn processes (``make bench``; a bounded run is
in ``make test``).

    python bench/ws.py [--quick] [--check] [--json FILE] [--profile] [--only paced,target,capacity,idle]
                       [--clients N] [--rate R] [--seconds S] [--capacity-rate R]
                       [--capacity-seconds S] [--idle N] [--client-procs K] [--client raw|websockets]

Two servers run side by side on 127.0.0.1, each one uvicorn process (uvloop, httptools):

- Routilux, ``python -m routilux.api.main``, on a fresh SQLite file, with the paced source
  routine of ``bench/ws_routines.py`` loaded (``ROUTILUX_ROUTINE_MODULES=ws_routines``); as
  shipped, that runs uvicorn with ``routilux.api.ws.protocol.BatchingWebSocketProtocol``, which
  writes all the frames a socket has queued with one system call;
- the baseline, a bare Starlette app on uvicorn's stock ``websockets-sansio`` protocol, one ASGI
  message and one system call per frame (in this file, ``python bench/ws.py --serve-bare``): one
  ``/ws`` route whose connections each get an unbounded queue and a sender task, and a ``POST
  /start`` that runs the same paced loop as the routine, encoding each frame once (same JSON shape
  and size as a Routilux ``log`` event) and queueing it on every connection. Nothing else: no
  bus, no bounded queues, no gap bookkeeping, no store. The ratio to it is Routilux's overhead.

The source publishes ``log`` events (exactly one bus event each) at a fixed rate; every event
carries its publish time (``time.time()``) and index in ``data.fields``. Clients run in separate
processes (``--client-procs``), are all connected and have their ``snapshot`` before the source
starts, and record for every event the publish -> receipt latency (same machine, same clock),
the ``seq`` continuity (a hole is a lost event; ``gap`` frames name losses too) and the order of
the source's indexes. *Loss* is the number of source events a client never received, summed over
clients. A client stops at the source's last event; or, once the source should be done, after 5 s
without a frame; or 2 x duration + 10 s after the start (the bare baseline's queues are unbounded,
so its "loss" is what was still queued then). A *delivery* is one source event received by one
client. ``srv µs/deliv`` is the server's CPU time (all threads, source included) per delivery,
which time spent waiting for a core on a shared machine does not inflate, unlike latency. The
details under the table also give the longest silence any one socket saw while streaming.

The client is a minimal asyncio WebSocket client (RFC 6455 handshake and framing, no
extensions) parsing frames in ``data_received`` and decoding each with msgspec: about 4 µs of
Python per frame (about 12 µs with the socket reads and the loop when few frames come per read),
where the ``websockets`` library client costs about 30 µs (measured on this machine), which would
make one client process, not the server, the bottleneck at 100,000 frames/s. ``--client
websockets`` uses the library instead (``compression=None``, to match).

Rows (``×bare`` divides the row's figure by the bare baseline's figure of the same kind, same run):

1. ``paced``: ``--clients`` (100) clients on one job publishing ``--rate`` (1,000) events/s for
   ``--seconds`` (10). Target: p99 <= 100 ms and zero loss. ``×bare`` = p99 / bare p99.
2. ``paced at the capacity target`` (full runs): the same at 20,000 deliveries/s in all (200
   events/s to 100 clients); informational.
3. ``fan-out capacity``: the same clients, the source at ``--capacity-rate`` (5,000) events/s for
   ``--capacity-seconds`` (5): deliveries/s actually achieved, from the first publish to the last
   receipt (loss allowed and reported). Target >= 20,000 deliveries/s. ``×bare`` = ratio of rates.
4. ``idle connections``: server RSS growth for ``--idle`` (1,000) open, quiet connections (the
   generic ``/api/ws`` with no subscription; informational: job monitor sockets on an idle job),
   after a warm-up of 20 connections opened and closed. Clients send ``{"type": "ping"}`` every
   10 s and the server runs with ``ROUTILUX_WS_IDLE_TIMEOUT=600``. Target <= 100 KB per connection.

The table also shows the CPU each side used during a stream as a fraction of one core: the
machine has 2 cores shared by server, clients and anything else running (``other``).

``--check`` makes a missed target exit 1. ``--profile`` (automatic when a streamed target is
missed, except with ``--quick``) runs the paced scenario (and the capacity one if it missed) once
more while ``py-spy`` samples the Routilux server (when py-spy is installed; else cProfile), and
prints its top functions by self and inclusive samples.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import math
import os
import pstats
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgspec

BENCH_DIR: Final[Path] = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from _common import BenchFailure, _render, _verdict
from _servers import ServerProcess, free_port

HOST: Final[str] = "127.0.0.1"  # never anything else

# Targets of the issue, for this 2-core machine.
TARGET_P99_MS: Final[float] = 100.0
TARGET_DELIVERIES_PER_S: Final[float] = 20_000.0
TARGET_IDLE_KB: Final[float] = 100.0

FLOW_ID: Final[str] = "ws_bench"
ROUTINE_ID: Final[str] = "ticker"
WARMUP_CONNECTIONS: Final[int] = 20
IDLE_PING_EVERY: Final[float] = 10.0
CONNECT_PARALLEL: Final[int] = 50  # handshakes in flight per client process


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
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {self.key.decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
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


# =============================================================================================
# The client process
# =============================================================================================
class Worker:
    """A client process: ``clients`` connections to ``path``; reports over stdout/a JSON file."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.mode: str = spec["mode"]  # "stream" | "idle"
        self.latencies = array("d")
        self.subs: list[Sub] = []
        self.closers: list[Any] = []
        self.ready = 0
        self.finished = 0
        self.closed = 0
        self.last_recv = 0.0
        self.all_ready = asyncio.Event()
        self.all_done = asyncio.Event()

    def on_ready(self) -> None:
        self.ready += 1
        if self.ready >= self.spec["clients"]:
            self.all_ready.set()

    def on_done(self) -> None:
        self.finished += 1
        if self.finished >= self.spec["clients"]:
            self.all_done.set()

    def on_closed(self, sub: Sub) -> None:
        self.closed += 1
        if not sub.done and self.mode == "stream":
            sub._finish()

    async def _open_raw(self, sub: Sub, gate: asyncio.Semaphore) -> None:
        loop = asyncio.get_running_loop()
        async with gate:
            opened: asyncio.Future[None] = loop.create_future()
            _transport, protocol = await loop.create_connection(
                lambda: RawWs(sub, self.spec["path"], self.spec["port"], opened), HOST, self.spec["port"]
            )
            await opened
        self.closers.append(protocol.close)
        if self.mode == "idle":
            sub.send(PING)

    async def _open_lib(self, sub: Sub, gate: asyncio.Semaphore, tasks: list[asyncio.Task[None]]) -> None:
        from websockets.asyncio.client import connect

        async with gate:
            ws = await connect(
                f"ws://{HOST}:{self.spec['port']}{self.spec['path']}",
                compression=None,
                max_queue=None,
                ping_interval=None,
                open_timeout=60,
            )
        loop = asyncio.get_running_loop()
        sub.send = lambda text: loop.create_task(ws.send(text.decode()))

        async def read() -> None:
            try:
                async for message in ws:
                    sub.handle(message)
            except Exception as exc:  # noqa: BLE001 - recorded, the run decides
                if len(sub.errors) < 3:
                    sub.errors.append(repr(exc))
            sub.on_closed(ws.close_code)

        tasks.append(loop.create_task(read()))
        self.closers.append(lambda: loop.create_task(ws.close()))
        if self.mode == "idle":
            sub.send(PING)

    async def run(self) -> dict[str, Any]:
        spec = self.spec
        n = spec["clients"]
        self.subs = [Sub(self, spec.get("expect", 0)) for _ in range(n)]
        gate = asyncio.Semaphore(CONNECT_PARALLEL)
        lib_tasks: list[asyncio.Task[None]] = []
        t0 = time.perf_counter()
        if spec["client"] == "websockets":
            opening = [self._open_lib(s, gate, lib_tasks) for s in self.subs]
        else:
            opening = [self._open_raw(s, gate) for s in self.subs]
        await asyncio.wait_for(asyncio.gather(*opening), spec["connect_timeout"])
        await asyncio.wait_for(self.all_ready.wait(), spec["connect_timeout"])
        connect_seconds = time.perf_counter() - t0
        cpu0 = time.process_time()
        _say(f"READY {n}")
        timed_out = False
        if self.mode == "stream":
            timed_out = not await self._wait_stream()
        else:
            await self._wait_close_order()
        cpu = time.process_time() - cpu0
        closed_by_server = self.closed  # before we close anything ourselves
        unfinished = sum(1 for s in self.subs if not s.done)
        for close in self.closers:
            close()
        await asyncio.sleep(0.05)
        for task in lib_tasks:
            task.cancel()
        subs = self.subs
        return {
            "clients": n,
            "ready": self.ready,
            "connect_seconds": round(connect_seconds, 3),
            "cpu_seconds": cpu,
            "timed_out": unfinished if timed_out else 0,
            "closed_by_server": closed_by_server,
            "events": sum(s.events for s in subs),
            "ticks": sum(s.ticks for s in subs),
            "missing_ticks": sum(max(0, s.expect - s.ticks) for s in subs),
            "clients_with_loss": sum(1 for s in subs if s.ticks < s.expect or s.holes),
            "min_ticks": min((s.ticks for s in subs), default=0),
            "holes": sum(s.holes for s in subs),
            "disorder": sum(s.disorder for s in subs),
            "tick_disorder": sum(s.tick_disorder for s in subs),
            "gaps": sum(s.gaps for s in subs),
            "gap_named": sum(s.gap_named for s in subs),
            "first_t": min((s.first_t for s in subs), default=math.inf),
            "last_recv": max((s.last_recv for s in subs), default=0.0),
            "max_silence": max((s.max_silence for s in subs), default=0.0),
            "errors": [e for s in subs for e in s.errors][:5],
        }

    async def _wait_stream(self) -> bool:
        """Until every client saw the last event; or, once the source should have finished
        (``seconds`` after READY), nothing arrived for ``quiet`` seconds; or the deadline.
        True if every client finished."""
        spec = self.spec
        start = time.monotonic()
        deadline = start + spec["deadline"]
        source_done = start + spec["seconds"]
        while time.monotonic() < deadline:
            try:
                await asyncio.wait_for(self.all_done.wait(), 0.25)
                return True
            except TimeoutError:
                pass
            source_done_wall = time.time() - (time.monotonic() - source_done)
            if time.time() - max(self.last_recv, source_done_wall) > spec["quiet"]:
                return self.all_done.is_set()
        return self.all_done.is_set()

    async def _wait_close_order(self) -> None:
        """Idle mode: keep the connections open (pinging) until the parent writes a line."""
        loop = asyncio.get_running_loop()
        order = asyncio.Event()
        fd = sys.stdin.fileno()
        loop.add_reader(fd, order.set)
        deadline = time.monotonic() + self.spec["deadline"]
        try:
            while not order.is_set() and time.monotonic() < deadline:
                try:
                    await asyncio.wait_for(order.wait(), IDLE_PING_EVERY)
                except TimeoutError:
                    for sub in self.subs:
                        if sub.send is not None:
                            sub.send(PING)
        finally:
            loop.remove_reader(fd)


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def worker_main(spec_json: str) -> int:
    import resource

    spec = json.loads(spec_json)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = spec["clients"] + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, want), hard))
    worker = Worker(spec)
    with asyncio.Runner(loop_factory=_new_loop) as runner:
        result = runner.run(worker.run())
    Path(spec["out"]).write_text(json.dumps(result))
    Path(spec["out"] + ".lat").write_bytes(worker.latencies.tobytes())
    _say("DONE")
    return 0


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


# =============================================================================================
# The bare Starlette baseline (served by ``python bench/ws.py --serve-bare --port P``)
# =============================================================================================
def bare_app() -> Any:
    """One ``/ws`` route (a snapshot frame, then everything broadcast; answers ``ping``), and
    ``POST /start {"rate", "n"}`` broadcasting ``n`` paced frames shaped like Routilux ``log``
    events. Each connection: an unbounded deque and a sender task; each frame encoded once."""
    from collections import deque

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    encoder = msgspec.json.Encoder()
    job_id = "0" * 32
    conns: set[Conn] = set()
    state = {"seq": 0, "tasks": set()}

    class Conn:
        __slots__ = ("frames", "ready")

        def __init__(self) -> None:
            self.frames: deque[str] = deque()
            self.ready = asyncio.Event()

        def put(self, text: str) -> None:
            self.frames.append(text)
            self.ready.set()

    def frame(type_: str, data: dict[str, Any]) -> str:
        state["seq"] += 1
        return encoder.encode(
            {
                "seq": state["seq"],
                "type": type_,
                "job_id": job_id,
                "flow_id": FLOW_ID,
                "routine_id": ROUTINE_ID,
                "timestamp": "2025-01-01T12:00:00.123456Z",
                "data": data,
            }
        ).decode()

    def broadcast(text: str) -> None:
        for conn in conns:
            conn.put(text)

    async def ws_endpoint(ws: WebSocket) -> None:
        await ws.accept()
        conn = Conn()
        conns.add(conn)
        conn.put(encoder.encode({"type": "snapshot", "job_id": job_id, "last_seq": state["seq"]}).decode())

        async def sender() -> None:
            frames = conn.frames
            while True:
                while frames:
                    await ws.send_text(frames.popleft())
                conn.ready.clear()
                await conn.ready.wait()

        task = asyncio.get_running_loop().create_task(sender())
        try:
            while True:
                message = await ws.receive_text()
                if message.startswith('{"type":"ping"'):
                    conn.put(PONG.decode())
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            conns.discard(conn)
            task.cancel()

    async def source(rate: float, n: int) -> None:
        clock, wall = time.perf_counter, time.time
        t0 = clock()
        i = 0
        while i < n:
            due = min(n, int((clock() - t0) * rate) + 1)
            while i < due:
                broadcast(frame("log", {"level": "info", "message": "tick", "fields": {"i": i, "t": wall()}}))
                i += 1
            if i < n:
                await asyncio.sleep(max(0.0, t0 + i / rate - clock()))
        broadcast(frame("routine_end", {"status": "ok"}))

    async def start(request: Request) -> Response:
        body = await request.json()
        task = asyncio.get_running_loop().create_task(source(float(body["rate"]), int(body["n"])))
        state["tasks"].add(task)  # type: ignore[attr-defined]
        task.add_done_callback(state["tasks"].discard)  # type: ignore[attr-defined]
        return JSONResponse({"started": True, "seq": state["seq"]}, 202)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "connections": len(conns)})

    return Starlette(
        routes=[
            WebSocketRoute("/ws", ws_endpoint),
            Route("/start", start, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ]
    )


def serve_bare(port: int) -> None:
    """Run the baseline the way ``routilux.api.main`` runs Routilux: ``uvicorn.Config`` defaults."""
    import uvicorn

    config = uvicorn.Config(bare_app(), host=HOST, port=port, log_level="warning", lifespan="on")
    uvicorn.Server(config).run()


# =============================================================================================
# Server processes
# =============================================================================================
_PROFILE_BOOT = """\
import cProfile, signal, sys
out = sys.argv[1]
# uvicorn re-raises the signal that stopped it once it has shut down; with the default handler
# that would kill the process before the profile is written.
signal.signal(signal.SIGTERM, lambda *_: None)
import routilux.api.main as main
profiler = cProfile.Profile()
profiler.enable()
try:
    main.main()
finally:
    profiler.disable()
    profiler.dump_stats(out)
"""


def _machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all cores, all processes)."""
    import psutil

    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)


class Server(ServerProcess):
    """One uvicorn process on a free loopback port; stopped by :meth:`stop` (always)."""

    def __init__(self, kind: str, workdir: Path, *, cprofile_to: Path | None = None) -> None:
        self.kind = kind  # "bare" | "routilux"
        port = free_port()
        base = {k: v for k, v in os.environ.items() if not k.startswith("ROUTILUX_")}
        if kind == "bare":
            argv = [sys.executable, str(Path(__file__).resolve()), "--serve-bare", "--port", str(port)]
            ready_path, env = "/health", base
        else:
            ready_path = "/api/health"
            if cprofile_to is None:
                argv = [sys.executable, "-m", "routilux.api.main"]
            else:
                argv = [sys.executable, "-c", _PROFILE_BOOT, str(cprofile_to)]
            env = {
                **base,
                "ROUTILUX_DB": str(workdir / f"routilux.{port}.db"),
                "ROUTILUX_API_RELOAD": "false",
                "ROUTILUX_API_HOST": HOST,
                "ROUTILUX_API_PORT": str(port),
                "ROUTILUX_LOG_LEVEL": "warning",
                "ROUTILUX_ROUTINE_MODULES": "ws_routines",
                "ROUTILUX_WS_IDLE_TIMEOUT": "600",
                "PYTHONPATH": os.pathsep.join(p for p in (str(BENCH_DIR), os.environ.get("PYTHONPATH", "")) if p),
            }
        super().__init__(kind, port, argv, env, ready_path, workdir / f"{kind}.{port}.log")

    def rss(self) -> int:
        return self.rss_bytes()

    def output(self, tail: int | None = 4000) -> str:
        return super().output(tail)


# =============================================================================================
# Driving client processes from the parent
# =============================================================================================
class ClientProc:
    """One client worker process, spoken to by lines on its stdin/stdout."""

    def __init__(self, spec: dict[str, Any], workdir: Path, index: int) -> None:
        self.out = workdir / f"client.{os.getpid()}.{time.monotonic_ns()}.{index}.json"
        self.spec = {**spec, "out": str(self.out)}
        self.err_path = Path(str(self.out) + ".err")
        with open(self.err_path, "wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(self.spec)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        self._pending = b""

    def expect_line(self, word: str, timeout: float) -> str:
        """Wait (bounded) for a stdout line starting with ``word``."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while True:
            if b"\n" in self._pending:
                line, self._pending = self._pending.split(b"\n", 1)
                text = line.decode(errors="replace")
                if text.startswith(word):
                    return text
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchFailure(f"client process: no '{word}' within {timeout:.0f}s; stderr:\n{self.stderr()}")
            readable, _, _ = select.select([fd], [], [], min(left, 0.5))
            if readable:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise BenchFailure(f"client process exited before '{word}'; stderr:\n{self.stderr()}")
                self._pending += chunk

    def tell(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def result(self) -> tuple[dict[str, Any], array]:
        lat = array("d")
        lat.frombytes(Path(str(self.out) + ".lat").read_bytes())
        return json.loads(self.out.read_text()), lat

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")[-3000:] if self.err_path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        for path in (self.out, Path(str(self.out) + ".lat"), self.err_path):
            path.unlink(missing_ok=True)


def _split(total: int, parts: int) -> list[int]:
    parts = max(1, min(parts, total))
    return [total // parts + (1 if k < total % parts else 0) for k in range(parts)]


# =============================================================================================
# Scenarios
# =============================================================================================
@dataclass
class Stream:
    """What the clients of one streamed scenario saw, all client processes together."""

    clients: int
    rate: float
    n: int  # source events per client expected
    procs: int
    latencies: array = field(default_factory=lambda: array("d"))
    ticks: int = 0
    missing: int = 0
    holes: int = 0
    disorder: int = 0
    tick_disorder: int = 0
    gaps: int = 0
    gap_named: int = 0
    clients_with_loss: int = 0
    closed_by_server: int = 0
    timed_out: int = 0
    first_t: float = math.inf
    last_recv: float = 0.0
    max_silence: float = 0.0
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    other_cpu: float = 0.0
    wall: float = 0.0  # trigger -> every client process done
    errors: list[str] = field(default_factory=list)
    sorted_ms: list[float] = field(default_factory=list)

    def absorb(self, res: dict[str, Any], latencies: list[float]) -> float:
        """Add what one client process saw; returns the CPU seconds it used."""
        self.latencies.extend(latencies)
        self.ticks += res["ticks"]
        self.missing += res["missing_ticks"]
        self.holes += res["holes"]
        self.disorder += res["disorder"]
        self.tick_disorder += res["tick_disorder"]
        self.gaps += res["gaps"]
        self.gap_named += res["gap_named"]
        self.clients_with_loss += res["clients_with_loss"]
        self.closed_by_server += res["closed_by_server"]
        self.timed_out += res["timed_out"]
        self.first_t = min(self.first_t, res["first_t"])
        self.last_recv = max(self.last_recv, res["last_recv"])
        self.max_silence = max(self.max_silence, res["max_silence"])
        self.errors += res["errors"]
        return float(res["cpu_seconds"])

    @property
    def window(self) -> float:
        return self.last_recv - self.first_t if self.ticks and self.last_recv > self.first_t else 0.0

    @property
    def deliveries_per_s(self) -> float:
        return self.ticks / self.window if self.window > 0 else 0.0

    @property
    def server_us_per_delivery(self) -> float:
        """Server CPU (all its threads, source included) per delivery: steadier than latency on a
        shared machine, since time spent waiting for a core is not counted."""
        return self.server_cpu * 1e6 / self.ticks if self.ticks else math.nan

    def pct_ms(self, q: float) -> float:
        if not self.sorted_ms:
            return math.nan
        k = min(len(self.sorted_ms) - 1, max(0, math.ceil(q * len(self.sorted_ms)) - 1))  # nearest rank
        return self.sorted_ms[k]

    def as_dict(self) -> dict[str, Any]:
        w = self.wall or 1.0
        return {
            "clients": self.clients,
            "client_procs": self.procs,
            "rate_events_per_s": self.rate,
            "events_per_client": self.n,
            "deliveries": self.ticks,
            "expected_deliveries": self.n * self.clients,
            "loss": self.missing,
            "clients_with_loss": self.clients_with_loss,
            "seq_holes": self.holes,
            "gap_frames": self.gaps,
            "gap_named_events": self.gap_named,
            "out_of_order": self.disorder + self.tick_disorder,
            "closed_by_server": self.closed_by_server,
            "clients_timed_out": self.timed_out,
            "window_s": round(self.window, 3),
            "deliveries_per_s": round(self.deliveries_per_s, 1),
            "p50_ms": round(self.pct_ms(0.50), 3),
            "p90_ms": round(self.pct_ms(0.90), 3),
            "p99_ms": round(self.pct_ms(0.99), 3),
            "max_ms": round(self.sorted_ms[-1], 3) if self.sorted_ms else None,
            "max_silence_ms": round(self.max_silence * 1e3, 1),
            "server_us_per_delivery": round(self.server_us_per_delivery, 2),
            "server_cpu_cores": round(self.server_cpu / w, 3),
            "client_cpu_cores": round(self.client_cpu / w, 3),
            "other_cpu_cores": round(self.other_cpu / w, 3),
            "errors": self.errors,
        }


def _http() -> Any:
    import httpx

    return httpx.Client(timeout=30)


def _expect(response: Any, status: int, what: str) -> Any:
    if response.status_code != status:
        raise BenchFailure(f"{what}: expected {status}, got {response.status_code}: {response.text[:500]}")
    return response.json() if response.content else None


def setup_routilux(server: Server) -> None:
    flow = {
        "flow_id": FLOW_ID,
        "description": "benchmark: one paced source of log events",
        "routines": {ROUTINE_ID: {"class": "WsTicker"}},
        "connections": [],
    }
    with _http() as client:
        _expect(client.post(server.url + "/api/flows", json={"dsl_dict": flow}), 201, "create the bench flow")


def new_job(server: Server) -> str:
    with _http() as client:
        job = _expect(client.post(server.url + "/api/jobs", json={"flow_id": FLOW_ID}), 201, "start a job")
    return str(job["job_id"])


def end_job(server: Server, job_id: str) -> None:
    with _http() as client:
        client.post(f"{server.url}/api/jobs/{job_id}/complete")


def trigger(server: Server, job_id: str | None, rate: float, n: int) -> None:
    body = {"rate": rate, "n": n}
    with _http() as client:
        if server.kind == "bare":
            _expect(client.post(server.url + "/start", json=body), 202, "start the bare source")
        else:
            _expect(
                client.post(
                    f"{server.url}/api/jobs/{job_id}/post",
                    json={"routine_id": ROUTINE_ID, "slot_name": "start", "data": body},
                ),
                202,
                "start the ticker",
            )


def run_stream(
    server: Server, workdir: Path, *, clients: int, rate: float, seconds: float, procs: int, client: str
) -> Stream:
    """Connect ``clients`` (in ``procs`` processes), start the source, wait for them all."""
    n = max(1, round(rate * seconds))
    job_id = new_job(server) if server.kind == "routilux" else None
    path = f"/api/ws/jobs/{job_id}/monitor" if job_id else "/ws"
    spec = {
        "mode": "stream", "port": server.port, "path": path, "expect": n, "client": client,
        "connect_timeout": 60.0 + clients * 0.05, "deadline": seconds * 2 + 10.0, "quiet": 5.0,
        "seconds": seconds,
    }
    workers: list[ClientProc] = []
    stream = Stream(clients=clients, rate=rate, n=n, procs=procs)
    try:
        for k, count in enumerate(_split(clients, procs)):
            workers.append(ClientProc({**spec, "clients": count}, workdir, k))
        for w in workers:
            w.expect_line("READY", spec["connect_timeout"] + 10)
        cpu_server, busy = server.cpu_seconds(), _machine_busy()
        t0 = time.perf_counter()
        trigger(server, job_id, rate, n)
        for w in workers:
            w.expect_line("DONE", spec["deadline"] + 30)
        stream.wall = time.perf_counter() - t0
        stream.server_cpu = server.cpu_seconds() - cpu_server
        total_busy = _machine_busy() - busy
        for w in workers:
            w.process.wait(30)
            stream.client_cpu += stream.absorb(*w.result())
        stream.other_cpu = max(0.0, total_busy - stream.server_cpu - stream.client_cpu)
    finally:
        for w in workers:
            w.stop()
        if job_id is not None:
            try:
                end_job(server, job_id)
            except Exception as exc:  # noqa: BLE001 - best effort; the server is stopped afterwards anyway
                stream.errors.append(f"could not complete job {job_id}: {exc!r}")
    stream.sorted_ms = sorted(x * 1e3 for x in stream.latencies)
    stream.latencies = array("d")
    if stream.disorder or stream.tick_disorder:
        raise BenchFailure(f"events arrived out of order or duplicated: {stream.as_dict()}")
    if stream.errors:
        raise BenchFailure(f"client errors: {stream.errors}")
    return stream


@dataclass
class Idle:
    connections: int
    path: str
    rss_before: int = 0
    rss_after: int = 0
    fds_added: int = 0
    connect_seconds: float = 0.0

    @property
    def kb_per_connection(self) -> float:
        return (self.rss_after - self.rss_before) / 1024 / self.connections if self.connections else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "path": self.path,
            "server_rss_mb_before": round(self.rss_before / 1e6, 2),
            "server_rss_mb_after": round(self.rss_after / 1e6, 2),
            "server_fds_added": self.fds_added,
            "kb_per_connection": round(self.kb_per_connection, 2),
            "connect_seconds": round(self.connect_seconds, 2),
        }


def _open_idle(server: Server, workdir: Path, path: str, count: int, client: str) -> ClientProc:
    spec = {
        "mode": "idle", "port": server.port, "path": path, "clients": count, "client": client,
        "connect_timeout": 60.0 + count * 0.05, "deadline": 600.0,
    }
    proc = ClientProc(spec, workdir, 0)
    try:
        proc.expect_line("READY", spec["connect_timeout"] + 10)
    except BaseException:
        proc.stop()
        raise
    return proc


def _close_idle(proc: ClientProc) -> None:
    try:
        proc.tell("CLOSE")
        proc.expect_line("DONE", 60)
        proc.process.wait(30)
    finally:
        proc.stop()


def _settled_rss(server: Server, seconds: float = 1.0) -> int:
    """The server's RSS once it stopped moving (sampled for up to ``seconds``; the last sample)."""
    last = server.rss()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.2)
        last = server.rss()
    return last


def run_idle(server: Server, workdir: Path, path: str, connections: int, client: str) -> Idle:
    idle = Idle(connections=connections, path=path)
    _close_idle(_open_idle(server, workdir, path, WARMUP_CONNECTIONS, client))  # warm-up
    idle.rss_before = _settled_rss(server, 0.6)
    fds = server.num_fds()
    t0 = time.perf_counter()
    proc = _open_idle(server, workdir, path, connections, client)
    try:
        idle.connect_seconds = time.perf_counter() - t0
        idle.rss_after = _settled_rss(server, 1.0)
        idle.fds_added = server.num_fds() - fds
    finally:
        _close_idle(proc)
    if idle.fds_added < connections:
        raise BenchFailure(f"{path}: the server holds {idle.fds_added} new sockets, expected {connections}")
    return idle


# =============================================================================================
# Rows and the table
# =============================================================================================
@dataclass
class Row:
    scenario: str
    key: str
    server: str  # bare | routilux
    stream: Stream | None = None
    idle: Idle | None = None
    baseline: Row | None = None
    target: str = ""
    passed: bool | None = None
    sources: str = ""  # the routilux sources the servers ran (see sources_fingerprint)

    @property
    def figure(self) -> float:
        """What ``×bare`` compares: p99 (paced), deliveries/s (capacity), KB/conn (idle)."""
        if self.idle is not None:
            return self.idle.kb_per_connection
        if self.stream is None:
            return math.nan
        return self.stream.deliveries_per_s if self.key.startswith("capacity") else self.stream.pct_ms(0.99)

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or not self.baseline.figure or math.isnan(self.baseline.figure):
            return None
        return self.figure / self.baseline.figure

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"scenario": self.scenario, "key": self.key, "server": self.server}
        if self.stream is not None:
            out |= self.stream.as_dict()
        if self.idle is not None:
            out |= self.idle.as_dict()
        ratio = self.ratio
        out |= {"ratio_vs_bare": None if ratio is None else round(ratio, 3), "target": self.target,
                "passed": self.passed, "sources": self.sources}
        return out


def format_table(rows: list[Row]) -> str:
    lines: list[tuple[str, ...]] = [
        ("scenario", "clients", "ev/s", "p50 ms", "p99 ms", "loss", "deliveries/s", "KB/conn", "×bare",
         "srv µs/deliv", "srv CPU", "cli CPU", "other", "target", "result")
    ]
    for r in rows:
        ratio = "—" if r.ratio is None else f"{r.ratio:.2f}"
        if r.stream is not None:
            s, w = r.stream, (r.stream.wall or 1.0)
            lines.append((
                r.scenario, f"{s.clients}", f"{s.rate:,.0f}", f"{s.pct_ms(0.5):.1f}", f"{s.pct_ms(0.99):.1f}",
                f"{s.missing:,}", f"{s.deliveries_per_s:,.0f}", "—", ratio, f"{s.server_us_per_delivery:.1f}",
                f"{s.server_cpu / w:.0%}", f"{s.client_cpu / w:.0%}", f"{s.other_cpu / w:.0%}",
                r.target or "—", _verdict(r.passed),
            ))
        elif r.idle is not None:
            i = r.idle
            lines.append((
                r.scenario, f"{i.connections:,}", "—", "—", "—", "—", "—", f"{i.kb_per_connection:.1f}", ratio,
                "—", "—", "—", "—", r.target or "—", _verdict(r.passed),
            ))
    return "\n".join(_render(lines, {0, 13, 14}))


# =============================================================================================
# Profiling the server
# =============================================================================================
def _py_spy() -> str | None:
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    return found


def _collapsed_top(path: Path, top: int) -> str:
    """Top functions of py-spy's collapsed stacks: self (leaf) and inclusive sample shares."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            incl[name] += count
    if not total:
        return "py-spy recorded no samples"
    out = [f"{total:,} samples"]
    for title, counter in (("self", own), ("inclusive", incl)):
        out.append(f"\n--- top {top} by {title} samples ---")
        for name, count in counter.most_common(top):
            out.append(f"{count / total:6.1%}  {name}")
    return "\n".join(out)


def profile_stream(workdir: Path, *, clients: int, rate: float, seconds: float, procs: int, client: str,
                   top: int = 25) -> str:
    """Run a streamed scenario against a Routilux server that py-spy samples (or cProfile)."""
    spy = _py_spy()
    header = f"profiled: {clients} clients, {rate:,.0f} events/s for {seconds:g} s ({sources_fingerprint()})"
    if spy is not None:
        out = workdir / "py-spy.txt"
        with Server("routilux", workdir) as server:
            setup_routilux(server)
            recorder = subprocess.Popen(
                [spy, "record", "--pid", str(server.pid), "--rate", "250", "--format", "raw", "--function",
                 "--nonblocking", "--output", str(out), "--duration", str(int(seconds * 3 + 20))],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )
            try:
                time.sleep(1.0)
                stream = run_stream(server, workdir, clients=clients, rate=rate, seconds=seconds, procs=procs,
                                    client=client)
            finally:
                recorder.send_signal(signal.SIGINT)
                try:
                    _, err = recorder.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    recorder.kill()
                    _, err = recorder.communicate()
        if not out.exists():
            return f"py-spy failed: {err.decode(errors='replace')[-1000:]}"
        return (f"{header} under py-spy (Routilux server, all threads, samples while on CPU): "
                f"{stream.deliveries_per_s:,.0f} deliveries/s, loss {stream.missing:,}, "
                f"{stream.server_us_per_delivery:.1f} server µs/delivery\n" + _collapsed_top(out, top))
    stats_path = workdir / "routilux.prof"
    with Server("routilux", workdir, cprofile_to=stats_path) as server:
        setup_routilux(server)
        stream = run_stream(server, workdir, clients=clients, rate=rate, seconds=seconds, procs=procs, client=client)
    text = [f"{header} under cProfile (event-loop thread): {stream.deliveries_per_s:,.0f} deliveries/s"]
    for _ in range(50):
        if stats_path.exists():
            break
        time.sleep(0.1)
    for order in ("tottime", "cumulative"):
        buf = __import__("io").StringIO()
        pstats.Stats(str(stats_path), stream=buf).strip_dirs().sort_stats(order).print_stats(top)
        text.append(f"\n--- top {top} by {order} ---\n" + buf.getvalue())
    return "\n".join(text)


# =============================================================================================
# The run
# =============================================================================================
@dataclass
class Settings:
    clients: int = 100
    rate: float = 1_000.0
    seconds: float = 10.0
    capacity_rate: float = 5_000.0
    capacity_seconds: float = 5.0
    idle: int = 1_000
    client_procs: int = 1
    client: str = "raw"
    #: scenarios: paced, target (paced at TARGET_DELIVERIES_PER_S in all; informational), capacity, idle
    only: str = "paced,target,capacity,idle"
    idle_job_row: bool = True  # informational: idle job monitor sockets, on a fresh server

    @classmethod
    def quick(cls) -> Settings:
        return cls(clients=20, rate=300.0, seconds=3.0, capacity_rate=2_000.0, capacity_seconds=2.0, idle=200,
                   only="paced,capacity,idle", idle_job_row=False)


def sources_fingerprint() -> str:
    """A short hash of the routilux sources the servers will import (they change under the bench)."""
    import routilux

    root = Path(routilux.__file__).resolve().parent
    digest = hashlib.sha1()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return f"routilux {routilux.__version__}, sources sha1 {digest.hexdigest()[:12]} ({root})"


def run_bench(settings: Settings, log: Any = None) -> list[Row]:
    """Start both servers, run the scenarios in ``settings.only``, stop the servers; return the rows
    (paced, paced at the capacity target, capacity, then idle)."""
    say = log or (lambda _msg: None)
    s = settings
    only = {part.strip() for part in s.only.split(",") if part.strip()}
    unknown = only - {"paced", "target", "capacity", "idle"}
    if unknown:
        raise ValueError(f"unknown scenario(s) {sorted(unknown)}: use paced, target, capacity, idle")
    common = {"clients": s.clients, "procs": s.client_procs, "client": s.client}
    rows: list[Row] = []
    idle_rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="routilux-ws-bench-") as tmp:
        work = Path(tmp)
        sources = sources_fingerprint()
        with Server("bare", work) as bare, Server("routilux", work) as rx:
            setup_routilux(rx)
            say(f"servers up: bare on {bare.url} (pid {bare.pid}), routilux on {rx.url} (pid {rx.pid}); {sources}")

            if "idle" in only:  # first, while both servers are fresh
                b_idle = Row("idle connections, bare /ws", "idle_bare", "bare",
                             idle=run_idle(bare, work, "/ws", s.idle, s.client))
                say(f"idle bare: {b_idle.idle.kb_per_connection:.1f} KB/conn")  # type: ignore[union-attr]
                r_idle = Row("idle connections, /api/ws", "idle", "routilux", baseline=b_idle,
                             idle=run_idle(rx, work, "/api/ws", s.idle, s.client),
                             target=f"<= {TARGET_IDLE_KB:g} KB/conn")
                r_idle.passed = r_idle.idle.kb_per_connection <= TARGET_IDLE_KB  # type: ignore[union-attr]
                say(f"idle routilux: {r_idle.idle.kb_per_connection:.1f} KB/conn")  # type: ignore[union-attr]
                idle_rows = [b_idle, r_idle]
                if s.idle_job_row:  # on a fresh server: memory freed by the last row would be reused
                    with Server("routilux", work) as fresh:
                        setup_routilux(fresh)
                        job_id = new_job(fresh)
                        j_idle = Row("idle connections, job monitor", "idle_job", "routilux", baseline=b_idle,
                                     idle=run_idle(fresh, work, f"/api/ws/jobs/{job_id}/monitor", s.idle, s.client))
                    say(f"idle job monitor: {j_idle.idle.kb_per_connection:.1f} KB/conn")  # type: ignore[union-attr]
                    idle_rows.append(j_idle)

            def pair(key: str, title: str, rate: float, seconds: float) -> tuple[Row, Row]:
                b = Row(f"{title}, bare", f"{key}_bare", "bare",
                        stream=run_stream(bare, work, rate=rate, seconds=seconds, **common))
                r = Row(title, key, "routilux", baseline=b,
                        stream=run_stream(rx, work, rate=rate, seconds=seconds, **common))
                for row in (b, r):
                    st = row.stream
                    assert st is not None
                    say(f"{row.scenario}: p99 {st.pct_ms(0.99):.1f} ms, loss {st.missing:,}, "
                        f"{st.deliveries_per_s:,.0f} deliveries/s")
                return b, r

            if "paced" in only:
                b, r = pair("paced", f"paced {s.rate:,.0f} ev/s x {s.clients}", s.rate, s.seconds)
                st = r.stream
                assert st is not None
                r.target = f"p99 <= {TARGET_P99_MS:g} ms, 0 loss"
                r.passed = st.pct_ms(0.99) <= TARGET_P99_MS and st.missing == 0
                rows += [b, r]
            if "target" in only:
                low = TARGET_DELIVERIES_PER_S / s.clients
                rows += pair("paced_at_target", f"paced {low:,.0f} ev/s x {s.clients} (20k deliv/s)", low, s.seconds)
            if "capacity" in only:
                b, r = pair("capacity", f"capacity {s.capacity_rate:,.0f} ev/s offered", s.capacity_rate,
                            s.capacity_seconds)
                r.target = f">= {TARGET_DELIVERIES_PER_S:,.0f} deliv/s"
                r.passed = r.stream.deliveries_per_s >= TARGET_DELIVERIES_PER_S  # type: ignore[union-attr]
                rows += [b, r]
    for row in rows + idle_rows:
        row.sources = sources
    return rows + idle_rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Routilux WebSocket benchmark (see the module docstring).")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes: 20 clients, 300 ev/s for 3 s, capacity 2,000 ev/s for 2 s, 200 idle")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON to FILE")
    parser.add_argument("--profile", action="store_true", help="also profile the Routilux server during the paced scenario (py-spy, else cProfile)")
    parser.add_argument("--clients", type=int)
    parser.add_argument("--rate", type=float, help="paced source, events/s")
    parser.add_argument("--seconds", type=float, help="paced duration")
    parser.add_argument("--capacity-rate", type=float)
    parser.add_argument("--capacity-seconds", type=float)
    parser.add_argument("--idle", type=int, help="idle connections")
    parser.add_argument("--client-procs", type=int, help="client processes (default 1)")
    parser.add_argument("--client", choices=("raw", "websockets"), help="client implementation (default raw)")
    parser.add_argument("--only", help="comma list of: paced, target, capacity, idle (default all; quick: no target)")
    # internal entry points (child processes)
    parser.add_argument("--worker", metavar="SPEC", help=argparse.SUPPRESS)
    parser.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        return worker_main(args.worker)
    if args.serve_bare:
        serve_bare(args.port)
        return 0

    settings = Settings.quick() if args.quick else Settings()
    for name in ("clients", "rate", "seconds", "capacity_rate", "capacity_seconds", "idle", "client_procs", "client",
                 "only"):
        value = getattr(args, name)
        if value is not None:
            setattr(settings, name, value)

    print(f"Routilux WebSocket bench: {settings}, python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print("×bare = the row's figure / the bare baseline's: p99 (paced), deliveries/s (capacity), KB/conn (idle)")
    print("CPU columns: fraction of one core during the stream (server, client processes, everything else)\n")
    sys.stdout.flush()
    rows = run_bench(settings, log=lambda msg: print(f"  {msg}", flush=True))
    print()
    print(format_table(rows))
    print()
    for r in rows:
        if r.stream is not None:
            d = r.stream.as_dict()
            print(f"{r.scenario}: {d['deliveries']:,}/{d['expected_deliveries']:,} delivered, p90 {d['p90_ms']} ms, "
                  f"max {d['max_ms']} ms, seq holes {d['seq_holes']:,}, gap frames {d['gap_frames']:,} naming "
                  f"{d['gap_named_events']:,}, clients with loss {d['clients_with_loss']}, "
                  f"closed by server {d['closed_by_server']}, clients timed out {d['clients_timed_out']}, "
                f"window {d['window_s']} s, longest silence on a socket {d['max_silence_ms']} ms")
        elif r.idle is not None:
            d = r.idle.as_dict()
            print(f"{r.scenario}: server RSS {d['server_rss_mb_before']} -> {d['server_rss_mb_after']} MB for "
                  f"{d['connections']:,} connections ({d['server_fds_added']:,} fds), opened in {d['connect_seconds']} s")

    if args.json:
        Path(args.json).write_text(json.dumps([r.as_dict() for r in rows], indent=2))

    missed = [r for r in rows if r.passed is False]
    profile = {r.key for r in missed if r.stream is not None}
    if args.profile and not profile:
        profile = {"paced"}
    if profile and (args.profile or not args.quick):
        s = settings
        with tempfile.TemporaryDirectory(prefix="routilux-ws-profile-") as tmp:
            for key in sorted(profile, reverse=True):  # paced, then capacity
                rate, seconds = (s.rate, s.seconds) if key == "paced" else (s.capacity_rate, s.capacity_seconds)
                print(f"\n[{key}] " + profile_stream(Path(tmp), clients=s.clients, rate=rate, seconds=seconds,
                                                     procs=s.client_procs, client=s.client))
    if missed:
        print(f"\nMissed targets: {', '.join(r.scenario for r in missed)}")
        return 1 if args.check else 0
    print("\nAll targets met.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

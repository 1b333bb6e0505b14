"""The API bench's load generator: N keep-alive connections on one asyncio loop, one request in
flight on each, every answer's status and latency recorded (:class:`Load`).
"""

from __future__ import annotations

import asyncio
import json
import time
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.support.processes import machine_busy_seconds

from bench.api.servers import Server
from bench.report import (
    BenchFailure,
    percentile,
    wait_quiet,
)
from bench.server import HOST, new_loop


# ---------------------------------------------------------------------------------------------
# The load generator: N keep-alive connections, one request in flight on each
# ---------------------------------------------------------------------------------------------
def get(path: str, port: int, key: str | None = None) -> bytes:
    auth = f"X-API-Key: {key}\r\n" if key else ""
    return f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAccept: application/json\r\n{auth}\r\n".encode()


def post(path: str, port: int, body: Any) -> bytes:
    data = json.dumps(body, separators=(",", ":")).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAccept: application/json\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


@dataclass
class Load:
    """What one run of the client saw."""

    connections: int
    requests: int = 0
    seconds: float = 0.0
    latencies: array = field(default_factory=lambda: array("d"))  # seconds, in completion order
    statuses: Counter = field(default_factory=Counter)
    broken: int = 0  # connections lost or unparsable answers
    examples: list[str] = field(default_factory=list)  # first non-2xx answers, for the report
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    other_cpu: float = 0.0  # every other process on the machine (other work shares the 2 cores)
    attempts: int = 1  # measurements made; this is the last (see ``Settings.quiet_wait``)

    @property
    def errors(self) -> int:
        return self.broken + sum(n for status, n in self.statuses.items() if not 200 <= status < 300)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        return percentile(sorted(self.latencies), q, 0.0) * 1e3


class _Feed:
    """The shared request source: cycles ``requests`` until the deadline or the count is reached."""

    __slots__ = ("count", "deadline", "i", "load", "requests", "sent")

    def __init__(self, requests: Sequence[bytes], load: Load, deadline: float | None, count: int | None) -> None:
        self.requests = list(requests)
        self.load = load
        self.deadline = deadline
        self.count = count
        self.sent = 0
        self.i = 0

    def next(self) -> bytes | None:
        if self.count is not None and self.sent >= self.count:
            return None
        if self.deadline is not None and time.perf_counter() >= self.deadline:
            return None
        req = self.requests[self.i]
        self.i = (self.i + 1) % len(self.requests)
        self.sent += 1
        return req


class _Client(asyncio.Protocol):
    """One connection: send, read exactly one response (Content-Length framed), repeat."""

    def __init__(self, feed: _Feed, done: asyncio.Future[None]) -> None:
        self.feed = feed
        self.done = done
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.need = -1  # bytes of the current response (head + body), once the head is in
        self.status = 0
        self.t0 = 0.0
        self.waiting = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send_next(self) -> None:
        req = self.feed.next()
        if req is None:
            self.waiting = False
            self._finish()
            return
        self.waiting = True
        self.t0 = time.perf_counter()
        self.transport.write(req)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        while True:
            if self.need < 0:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    break
                head = buf[:end]
                try:
                    self.status = int(head[9:12])
                    lower = head.lower()
                    i = lower.index(b"\r\ncontent-length:") + 17
                    j = lower.find(b"\r\n", i)
                    self.need = end + 4 + int(head[i : j if j >= 0 else len(head)])
                except ValueError:
                    self._broken(f"unparsable response head: {head[:200]!r}")
                    return
            if len(buf) < self.need:
                break
            response, buf, self.need = buf[: self.need], buf[self.need :], -1
            load = self.feed.load
            load.latencies.append(time.perf_counter() - self.t0)
            load.statuses[self.status] += 1
            load.requests += 1
            if not 200 <= self.status < 300 and len(load.examples) < 3:
                load.examples.append(response[:400].decode(errors="replace"))
            if buf:
                self._broken(f"{len(buf)} unexpected bytes after a response")
                return
            self.send_next()
        self.buf = buf

    def _broken(self, why: str) -> None:
        load = self.feed.load
        load.broken += 1
        if len(load.examples) < 3:
            load.examples.append(why)
        self.waiting = False
        if self.transport is not None:
            self.transport.close()
        self._finish()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiting:
            self._broken(f"connection lost while waiting for a response: {exc!r}")
        self._finish()

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def _run_load(
    port: int, requests: Sequence[bytes], connections: int, duration: float | None, count: int | None
) -> Load:
    loop = asyncio.get_running_loop()
    load = Load(connections)
    feed = _Feed(requests, load, None, count)
    clients: list[tuple[asyncio.Transport, _Client, asyncio.Future[None]]] = []
    try:
        for _ in range(connections):
            done: asyncio.Future[None] = loop.create_future()
            transport, client = await loop.create_connection(lambda d=done: _Client(feed, d), HOST, port)
            clients.append((transport, client, done))  # type: ignore[arg-type]
        limit = (duration or 0.0) + 60.0 + (count or 0) * 0.01
        t0 = time.perf_counter()
        feed.deadline = t0 + duration if duration is not None else None
        for _, client, _ in clients:
            client.send_next()
        try:
            await asyncio.wait_for(asyncio.gather(*(d for _, _, d in clients)), limit)
        except TimeoutError:
            raise BenchFailure(
                f"the load did not finish within {limit:.0f}s: {load.requests} answers, "
                f"{sum(c.waiting for _, c, _ in clients)} connections still waiting"
            ) from None
        load.seconds = time.perf_counter() - t0
    finally:
        for transport, _, _ in clients:
            transport.close()
        await asyncio.sleep(0)
    return load


def run_load(
    server: Server,
    requests: Sequence[bytes],
    *,
    connections: int,
    duration: float | None = None,
    count: int | None = None,
    warmup: float = 0.0,
    quiet_wait: float = 0.0,
) -> Load:
    """Drive ``server`` with ``requests`` (cycled); measure the server's and this process's CPU.

    ``quiet_wait`` > 0 first waits up to that many seconds for the machine to be idle (other work
    on a shared machine skews the figures; the ``other CPU`` column shows how much there was)."""
    if quiet_wait > 0:
        wait_quiet(quiet_wait)
    if warmup > 0:
        with asyncio.Runner(loop_factory=new_loop) as runner:
            runner.run(_run_load(server.port, requests, connections, warmup, None))
    cpu_server, cpu_client, cpu_all = server.cpu_seconds(), time.process_time(), machine_busy_seconds()
    with asyncio.Runner(loop_factory=new_loop) as runner:
        load = runner.run(_run_load(server.port, requests, connections, duration, count))
    load.server_cpu = server.cpu_seconds() - cpu_server
    load.client_cpu = time.process_time() - cpu_client
    load.other_cpu = max(0.0, machine_busy_seconds() - cpu_all - load.server_cpu - load.client_cpu)
    return load


# ---------------------------------------------------------------------------------------------

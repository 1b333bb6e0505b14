"""Cluster bench scenario 3, the Redis hop: the same events seen on the job's owner A and, relayed
through Redis, on B; and a job's view answered locally vs forwarded.
"""

from __future__ import annotations

import asyncio
import math
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.api.rows import _expect
from bench.cluster.fanout import wait_stream
from bench.cluster.measure import Cpu, CpuMeter, _measured
from bench.cluster.nodes import Node
from bench.cluster.redis_server import FORWARD_SAMPLES, Redis
from bench.cluster.settings import Settings
from bench.report import (
    BenchFailure,
    percentile,
)
from bench.server import HOST, new_loop
from bench.ws.frames import _DECODER, _QUIET_TYPES, PONG, ROUTINE_ID, RawWs
from bench.ws.scenarios import end_job, new_job


# =============================================================================================
# 3. The Redis hop
# =============================================================================================
class HopWs(RawWs):
    """bench.ws's client connection, keeping the close frame's reason for the report."""

    def data_received(self, data: bytes) -> None:
        if self.upgraded and len(data) >= 4 and data[0] == 0x88 and self.buf == b"":
            self.sub.close_reason = data[4:2 + (data[1] & 0x7F)].decode(errors="replace")
        super().data_received(data)


class HopSub:
    """One socket of the hop scenario: arrival time (``perf_counter``) and seq of every tick."""

    def __init__(self, name: str, expect: int) -> None:
        self.name = name
        self.expect = expect
        self.arrival = array("d", [math.nan]) * expect  # by tick index
        self.seq = array("q", [0]) * expect
        self.latency = array("d")  # publish (time.time() in the event) -> receipt
        self.ticks = 0
        self.next_seq = 1
        self.holes = 0
        self.disorder = 0
        self.gaps = 0
        self.closed: int | None = None
        self.close_reason = ""
        self.errors: list[str] = []
        self.send: Any = None
        self.ready = asyncio.Event()
        self.done = asyncio.Event()

    def handle(self, payload: bytes | str) -> None:
        now = time.perf_counter()
        wall = time.time()
        try:
            frame = _DECODER.decode(payload)
        except Exception as exc:  # noqa: BLE001 - recorded
            self.errors.append(f"undecodable frame ({exc}): {payload[:200]!r}")
            return
        kind = frame.type
        if kind == "snapshot":
            self.next_seq = (frame.last_seq or 0) + 1
            self.ready.set()
        elif kind == "gap":
            self.gaps += frame.to_seq - frame.from_seq + 1
        elif kind == "ping":
            if self.send is not None:
                self.send(PONG)
        elif kind == "error":
            self.errors.append(f"error frame: {payload[:300]!r}")
        elif kind in _QUIET_TYPES or kind == "pong":
            pass
        else:
            seq = frame.seq
            if seq > self.next_seq:
                self.holes += seq - self.next_seq
            elif seq < self.next_seq:
                self.disorder += 1
            self.next_seq = max(self.next_seq, seq + 1)
            fields = frame.data.fields if frame.data is not None else None
            if kind == "log" and fields is not None and 0 <= fields.i < self.expect:
                i = fields.i
                if not math.isnan(self.arrival[i]):
                    self.disorder += 1
                    return
                self.arrival[i] = now
                self.seq[i] = seq
                self.latency.append(wall - fields.t)
                self.ticks += 1
                if self.ticks >= self.expect:
                    self.done.set()

    def on_closed(self, code: int | None) -> None:
        if self.closed is None:
            self.closed = code if code is not None else 1006
            self.done.set()


@dataclass
class Hop:
    rate: float
    n: int
    added_ms: list[float] = field(default_factory=list)  # B - A per tick, sorted
    a_ms: list[float] = field(default_factory=list)  # publish -> receipt on A, sorted
    b_ms: list[float] = field(default_factory=list)
    b_per_s: float = 0.0
    a_cpu: float = 0.0  # owner process, CPU seconds during the stream
    b_cpu: float = 0.0
    cpu: Cpu = field(default_factory=Cpu)
    redis_commands: list[dict[str, Any]] = field(default_factory=list)
    get_local_ms: list[float] = field(default_factory=list)  # GET /api/jobs/{id} on A (the owner), sorted
    get_forwarded_ms: list[float] = field(default_factory=list)  # the same on B, forwarded to A over Pub/Sub
    attempts: int = 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "rate_events_per_s": self.rate, "events": self.n,
            "get_job_local_p50_ms": round(percentile(self.get_local_ms, 0.5), 3),
            "get_job_local_p99_ms": round(percentile(self.get_local_ms, 0.99), 3),
            "get_job_forwarded_p50_ms": round(percentile(self.get_forwarded_ms, 0.5), 3),
            "get_job_forwarded_p99_ms": round(percentile(self.get_forwarded_ms, 0.99), 3),
            "added_p50_ms": round(percentile(self.added_ms, 0.5), 3),
            "added_p90_ms": round(percentile(self.added_ms, 0.9), 3),
            "added_p99_ms": round(percentile(self.added_ms, 0.99), 3),
            "added_max_ms": round(self.added_ms[-1], 3) if self.added_ms else None,
            "added_min_ms": round(self.added_ms[0], 3) if self.added_ms else None,
            "a_p50_ms": round(percentile(self.a_ms, 0.5), 3), "a_p99_ms": round(percentile(self.a_ms, 0.99), 3),
            "b_p50_ms": round(percentile(self.b_ms, 0.5), 3), "b_p99_ms": round(percentile(self.b_ms, 0.99), 3),
            "b_events_per_s": round(self.b_per_s, 1),
            "a_us_per_event": round(self.a_cpu * 1e6 / self.n, 1),
            "b_us_per_event": round(self.b_cpu * 1e6 / self.n, 1),
            "redis_us_per_event": round(self.cpu.redis * 1e6 / self.n, 1),
            **self.cpu.as_dict(), "redis_commands": self.redis_commands, "attempts": self.attempts,
        }


async def _hop_clients(a: Node, b: Node, job_id: str, n: int, rate: float, seconds: float) -> tuple[HopSub, HopSub]:
    loop = asyncio.get_running_loop()
    subs = (HopSub("A", n), HopSub("B", n))
    protocols = []
    path = f"/api/ws/jobs/{job_id}/monitor"
    for sub, server in zip(subs, (a, b), strict=True):
        opened: asyncio.Future[None] = loop.create_future()
        _t, protocol = await loop.create_connection(
            lambda s=sub, p=server.port, o=opened: HopWs(s, path, p, o), HOST, server.port)  # type: ignore[misc]
        await asyncio.wait_for(opened, 30)
        protocols.append(protocol)
    try:
        for sub, server in zip(subs, (a, b), strict=True):
            ready, done = (asyncio.ensure_future(e.wait()) for e in (sub.ready, sub.done))
            await asyncio.wait([ready, done], timeout=30, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            done.cancel()
            if not sub.ready.is_set():
                raise BenchFailure(
                    f"hop: the socket on {sub.name} ({server.url}{path}) got no snapshot within 30 s: closed "
                    f"{sub.closed} {sub.close_reason!r}, errors {sub.errors}; {server.name}'s log:\n"
                    f"{server.output()[-3000:]}")
        async with httpx.AsyncClient(timeout=30) as http:
            _expect(await http.post(f"{a.url}/api/jobs/{job_id}/post", json={
                "routine_id": ROUTINE_ID, "slot_name": "start", "data": {"rate": rate, "n": n}}), 202,
                "start the ticker")
        try:
            await asyncio.wait_for(asyncio.gather(*(s.done.wait() for s in subs)), seconds * 2 + 15)
        except TimeoutError:
            pass  # counted as loss below
    finally:
        for protocol in protocols:
            protocol.close()
        await asyncio.sleep(0.05)
    return subs


def _get_job_both(a: Node, b: Node, job_id: str, n: int = FORWARD_SAMPLES) -> tuple[list[float], list[float]]:
    """``GET /api/jobs/{id}`` of A's running job, alternately on A (served locally) and on B
    (forwarded to A over Redis Pub/Sub and answered by A's routes), one keep-alive connection
    each, one request at a time: the latencies in ms, sorted, local then forwarded."""
    local: list[float] = []
    forwarded: list[float] = []
    with httpx.Client(base_url=a.url, timeout=30) as ca, httpx.Client(base_url=b.url, timeout=30) as cb:
        for k in range(n + 10):  # the first 10 of each warm the connections up
            for client, out, name in ((ca, local, "A"), (cb, forwarded, "B")):
                t0 = time.perf_counter()
                view = _expect(client.get(f"/api/jobs/{job_id}"), 200, f"GET the job on {name}")
                if k >= 10:
                    out.append((time.perf_counter() - t0) * 1e3)
                if view["job_id"] != job_id or view["status"] in ("completed", "failed", "cancelled"):
                    raise BenchFailure(f"GET /api/jobs/{job_id} on {name}: {view}")
    return sorted(local), sorted(forwarded)


def run_hop(a: Node, b: Node, redis: Redis, db: int, *, rate: float, seconds: float, settings: Settings) -> Hop:
    n = max(1, round(rate * seconds))

    def once() -> Hop:
        job_id = new_job(a)
        wait_stream(redis, db, job_id)
        if a.owner_pid(job_id) != a.pid:
            raise BenchFailure(f"hop: job {job_id} posted to A is not owned by A")
        redis.reset_stats()
        meter = CpuMeter([a, b], redis)
        a0, b0 = a.cpu_seconds(), b.cpu_seconds()
        with asyncio.Runner(loop_factory=new_loop) as runner:
            sa, sb = runner.run(_hop_clients(a, b, job_id, n, rate, seconds))
        hop = Hop(rate, n, a_cpu=a.cpu_seconds() - a0, b_cpu=b.cpu_seconds() - b0)
        hop.cpu = meter.result()
        hop.redis_commands = redis.top_commands()
        hop.get_local_ms, hop.get_forwarded_ms = _get_job_both(a, b, job_id)
        end_job(a, job_id)
        problems = []
        for sub in (sa, sb):
            if sub.ticks != n or sub.holes or sub.gaps or sub.disorder or sub.errors:
                problems.append(f"{sub.name}: {sub.ticks}/{n} ticks, {sub.holes} seq holes, {sub.gaps} named in gap "
                                f"frames, {sub.disorder} out of order/duplicated, closed {sub.closed}, errors "
                                f"{sub.errors[:3]}")
        if problems:
            raise BenchFailure(f"hop, job {job_id} at {rate:g} ev/s: " + "; ".join(problems))
        differ = [i for i in range(n) if sa.seq[i] != sb.seq[i]]
        if differ:
            i = differ[0]
            raise BenchFailure(f"hop: {len(differ)} ticks arrived with different seqs on A and B (tick {i}: "
                               f"{sa.seq[i]} vs {sb.seq[i]})")
        hop.added_ms = sorted((sb.arrival[i] - sa.arrival[i]) * 1e3 for i in range(n))
        hop.a_ms = sorted(x * 1e3 for x in sa.latency)
        hop.b_ms = sorted(x * 1e3 for x in sb.latency)
        window = max(sb.arrival) - min(sb.arrival)
        hop.b_per_s = (n - 1) / window if window > 0 else 0.0
        return hop

    hop = _measured(settings, once)
    a.check_alive()
    b.check_alive()
    return hop



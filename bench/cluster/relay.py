"""Cluster bench scenario 4, relay only what a server serves (issue 17): three nodes on one Redis;
A runs a paced ticker job (``rate`` events/s, nobody watching), B watches it through a socket,
C has no socket and owns no job. Measured: the CPU of each node during the stream, and how many
events each relayed (its ``routilux_cluster_relayed_events_total``). C must stay near idle (target:
≤ 5% of a core while A runs ≥ 2,000 events/s) and relay nothing; B relays the job (it watches it).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.api.rows import _expect
from bench.cluster.fanout import wait_stream
from bench.cluster.hop import HopSub, HopWs
from bench.cluster.measure import Cpu, CpuMeter, _measured
from bench.cluster.nodes import Node
from bench.cluster.redis_server import Redis
from bench.cluster.settings import Settings
from bench.report import BenchFailure
from bench.server import HOST, new_loop
from bench.ws.scenarios import end_job, new_job, trigger

#: The idle node's target: at most this fraction of one core.
IDLE_TARGET_CORES = 0.05
#: ... while the owner runs at least this many events a second.
IDLE_TARGET_RATE = 2_000.0


@dataclass
class Idle:
    rate: float  # offered, events/s
    n: int
    seconds: float = 0.0  # first to last event on A
    a_cpu: float = 0.0  # CPU seconds during the stream
    b_cpu: float = 0.0
    c_cpu: float = 0.0
    relayed: dict[str, int] = field(default_factory=dict)  # events each node relayed during the stream
    cpu: Cpu = field(default_factory=Cpu)
    attempts: int = 1

    @property
    def events_per_s(self) -> float:
        return self.n / self.seconds if self.seconds > 0 else 0.0

    def cores(self, cpu: float) -> float:
        return cpu / self.seconds if self.seconds > 0 else 0.0

    @property
    def passed(self) -> bool:
        return (self.cores(self.c_cpu) <= IDLE_TARGET_CORES and self.events_per_s >= IDLE_TARGET_RATE
                and self.relayed.get("C", -1) == 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rate_events_per_s": self.rate, "events": self.n, "seconds": round(self.seconds, 3),
            "a_events_per_s": round(self.events_per_s, 1),
            "a_cores": round(self.cores(self.a_cpu), 4), "b_cores": round(self.cores(self.b_cpu), 4),
            "c_cores": round(self.cores(self.c_cpu), 4),
            "a_us_per_event": round(self.a_cpu * 1e6 / self.n, 1),
            "b_us_per_event": round(self.b_cpu * 1e6 / self.n, 1),
            "c_us_per_event": round(self.c_cpu * 1e6 / self.n, 2),
            "relayed": self.relayed, **self.cpu.as_dict(), "attempts": self.attempts,
        }


def relayed(node: Node) -> int:
    """The node's ``routilux_cluster_relayed_events_total``; -1 if it has none (a server from
    before issue 17, run by this bench for a "before" figure)."""
    with httpx.Client(base_url=node.url, timeout=30) as client:
        text = client.get("/metrics").text
    for line in text.splitlines():
        if line.startswith("routilux_cluster_relayed_events_total "):
            return int(float(line.split()[1]))
    return -1


def _last_seq(node: Node, job_id: str) -> int:
    with httpx.Client(base_url=node.url, timeout=30) as client:
        return int(_expect(client.get(f"/api/jobs/{job_id}/status"), 200, "the job's status")["last_seq"] or 0)


def run_idle(a: Node, b: Node, c: Node, redis: Redis, db: int, *, rate: float, seconds: float,
             settings: Settings) -> Idle:
    """A runs ``rate`` events/s for ``seconds`` while B watches the job and C does nothing."""
    n = max(1, round(rate * seconds))

    def once() -> Idle:
        job_id = new_job(a)
        wait_stream(redis, db, job_id)
        start = _last_seq(a, job_id)

        async def watch_on_b() -> None:
            loop = asyncio.get_running_loop()
            sub = HopSub("B", n)
            opened: asyncio.Future[None] = loop.create_future()
            path = f"/api/ws/jobs/{job_id}/monitor"
            _t, protocol = await loop.create_connection(
                lambda: HopWs(sub, path, b.port, opened), HOST, b.port)  # type: ignore[misc]
            await asyncio.wait_for(opened, 30)
            await asyncio.wait_for(sub.ready.wait(), 30)
            relayed0 = {name: relayed(node) for name, node in (("A", a), ("B", b), ("C", c))}
            meter = CpuMeter([a, b, c], redis)
            a0, b0, c0 = a.cpu_seconds(), b.cpu_seconds(), c.cpu_seconds()
            t0 = time.perf_counter()
            trigger(a, job_id, rate, n)
            deadline = time.monotonic() + seconds * 3 + 30
            while _last_seq(a, job_id) < start + n and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            result.seconds = time.perf_counter() - t0
            result.a_cpu, result.b_cpu, result.c_cpu = (a.cpu_seconds() - a0, b.cpu_seconds() - b0,
                                                        c.cpu_seconds() - c0)
            result.cpu = meter.result()
            try:
                await asyncio.wait_for(sub.done.wait(), 15)
            except TimeoutError:
                pass
            protocol.close()
            result.relayed = {name: relayed(node) - relayed0[name] if relayed0[name] >= 0 else -1
                              for name, node in (("A", a), ("B", b), ("C", c))}
            if sub.ticks != n or sub.holes or sub.gaps or sub.errors:
                raise BenchFailure(f"relay: B's socket got {sub.ticks}/{n} ticks, {sub.holes} holes, {sub.gaps} in "
                                   f"gaps, errors {sub.errors[:3]}")

        result = Idle(rate, n)
        with asyncio.Runner(loop_factory=new_loop) as runner:
            runner.run(watch_on_b())
        end_job(a, job_id)
        return result

    idle = _measured(settings, once)
    for node in (a, b, c):
        node.check_alive()
    return idle

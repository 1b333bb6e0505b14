"""Cluster bench scenario 1, job-start throughput: POST /api/jobs over connections spread across
the workers, and every job counted as completed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.api.load import Load, _Client, _Feed, post
from bench.api.rows import _checked, _expect, post_body
from bench.api.servers import POST_FLOW
from bench.cluster.measure import Cpu, CpuMeter, _measured
from bench.cluster.nodes import Node
from bench.cluster.redis_server import PREFIX, SPREAD_TRIES, STALLED_SECONDS, Redis
from bench.cluster.settings import Settings
from bench.report import (
    BenchFailure,
)
from bench.server import HOST, new_loop


# =============================================================================================
# 1. Job-start throughput
# =============================================================================================
@dataclass
class Post:
    load: Any  # bench.api's Load
    cpu: Cpu
    placement: dict[int, int]
    posted_total: int = 0
    seconds_to_completed: float = 0.0
    server_us_per_job: float = 0.0  # CPU from the first POST until all completed, per job
    redis_us_per_job: float = 0.0
    redis_commands: list[dict[str, Any]] = field(default_factory=list)
    reopened: int = 0  # times the connections were reopened to reach every worker
    attempts: int = 1


async def _connect(
    server: Node, feed: Any, connections: int
) -> tuple[list[tuple[Any, Any, asyncio.Future[None]]], dict[int, int], int]:
    """Open ``connections`` keep-alive connections, one after another (as bench.api does), and
    wait until the server has accepted them all. With several workers on gunicorn's shared socket
    the event loops race for each connection, and the split is often lopsided (31/1, even 0/32):
    unless every worker holds at least half its share, the connections are closed and opened
    again (up to ``SPREAD_TRIES`` times), so that the row measures every worker. Returns them, where
    they landed, and how many times it reopened."""
    loop = asyncio.get_running_loop()
    for reopened in range(SPREAD_TRIES):
        clients: list[tuple[Any, Any, asyncio.Future[None]]] = []
        try:
            for _ in range(connections):
                done: asyncio.Future[None] = loop.create_future()
                transport, client = await loop.create_connection(lambda d=done: _Client(feed, d), HOST, server.port)
                clients.append((transport, client, done))
            deadline = time.monotonic() + 10
            placement = server.placement()
            while sum(placement.values()) < connections and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
                placement = server.placement()
        except BaseException:
            for transport, _, _ in clients:
                transport.close()
            raise
        if sum(placement.values()) < connections:
            for transport, _, _ in clients:
                transport.close()
            raise BenchFailure(f"{server.name}: {connections} connections opened, the workers accepted {placement}")
        fair = connections // (2 * server.workers)  # each worker at least half its share
        if server.workers == 1 or min(placement.values()) >= fair or reopened == SPREAD_TRIES - 1:
            return clients, placement, reopened
        for transport, _, _ in clients:
            transport.close()
        await asyncio.sleep(0.1)
    raise AssertionError("unreachable")


async def _drive(server: Node, requests: list[bytes], connections: int, count: int) -> tuple[Any, dict[int, int], int]:
    """bench.api's ``_run_load`` (same client and accounting) on connections every worker
    holds some of (see :func:`_connect`)."""
    load = Load(connections)
    feed = _Feed(requests, load, None, count)
    clients, placement, reopened = await _connect(server, feed, connections)
    try:
        limit = 60.0 + count * 0.01
        t0 = time.perf_counter()
        for _, client, _ in clients:
            client.send_next()
        try:
            await asyncio.wait_for(asyncio.gather(*(d for _, _, d in clients)), limit)
        except TimeoutError:
            raise BenchFailure(f"{server.name}: the load did not finish within {limit:.0f}s: {load.requests} answers, "
                               f"{sum(c.waiting for _, c, _ in clients)} connections still waiting") from None
        load.seconds = time.perf_counter() - t0
        end = server.placement()
        if end != placement:
            raise BenchFailure(f"{server.name}: connections moved during the load: {placement} -> {end}")
    finally:
        for transport, _, _ in clients:
            transport.close()
        await asyncio.sleep(0)
    return load, placement, reopened


def wait_completed(server: Node, expected: int, timeout: float) -> float:
    """bench.api's ``wait_completed``, polling ``?status=completed`` alone: with the flow filter
    too, each poll makes the Redis store intersect two indexes of every job (ZINTERSTORE, ~3 ms of
    Redis CPU with a few thousand jobs), which would be counted against the jobs. Only the posted
    jobs complete on these servers (the seeded job stays idle)."""
    deadline = time.monotonic() + timeout
    last, moved = -1, time.monotonic()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        while True:
            done = _expect(client.get("/api/jobs", params={"status": "completed", "limit": 1}), 200, "count")["total"]
            if done >= expected:
                now = time.perf_counter()
                break
            if done != last:
                last, moved = done, time.monotonic()
            if time.monotonic() > deadline or time.monotonic() - moved > STALLED_SECONDS:
                counts = {st: _expect(client.get("/api/jobs", params={"status": st, "limit": 1}), 200,
                                           "count")["total"]
                          for st in ("pending", "running", "idle", "paused", "failed", "cancelled")}
                raise BenchFailure(f"{server.name}: only {done} of {expected} posted jobs completed (no progress for "
                                   f"{time.monotonic() - moved:.0f}s); other statuses {counts}")
            time.sleep(0.02)
        for status in ("failed", "cancelled"):
            bad = _expect(client.get("/api/jobs", params={"status": status, "limit": 1}), 200, "count")["total"]
            if bad:
                raise BenchFailure(f"{server.name}: {bad} posted job(s) ended {status}")
    if done != expected:
        raise BenchFailure(f"{server.name}: {done} jobs completed, {expected} posted")
    return now


def completed_everywhere(server: Node, redis: Redis | None, db: int | None, expected: int) -> None:
    """The completed count as fresh connections (any worker) and Redis' own index see it."""
    seen = []
    for _ in range(8):
        with httpx.Client(base_url=server.url, timeout=30, headers={"Connection": "close"}) as client:
            seen.append(_expect(client.get("/api/jobs", params={"flow_id": POST_FLOW, "status": "completed",
                                                                    "limit": 1}), 200, "count")["total"])
    if any(n != expected for n in seen):
        raise BenchFailure(f"{server.name}: completed jobs counted through fresh connections: {seen}, "
                           f"expected {expected}")
    if redis is not None and db is not None:
        with redis.client(db) as client:
            indexed = client.zcard(f"{PREFIX}:idx:status:completed")
        if indexed < expected:  # the seeded live job is idle, not completed: == expected
            raise BenchFailure(f"{server.name}: Redis indexes {indexed} completed jobs, expected {expected}")


def run_post(server: Node, redis: Redis | None, db: int | None, settings: Settings) -> Post:
    """POST ``settings.jobs`` jobs; wait until the store lists them all completed (repeated on a
    noisy machine: each attempt posts ``jobs`` more)."""
    posted = 0
    request = [post("/api/jobs", server.port, post_body())]

    def once() -> Post:
        nonlocal posted
        if redis is not None:
            redis.reset_stats()
        meter = CpuMeter([server], redis)
        with asyncio.Runner(loop_factory=new_loop) as runner:
            load, placement, reopened = runner.run(_drive(server, request, settings.connections, settings.jobs))
        cpu = meter.result(seconds=load.seconds)
        load.server_cpu, load.client_cpu, load.other_cpu = cpu.server, cpu.client, cpu.other
        _checked(f"{server.name}: POST /api/jobs", load)
        if load.statuses.get(201) != settings.jobs:
            raise BenchFailure(f"{server.name}: expected {settings.jobs} answers 201, got {dict(load.statuses)}")
        posted += settings.jobs
        done = wait_completed(server, posted, timeout=120 + settings.jobs * 0.05)
        to_done = meter.result()
        return Post(load, cpu, placement, posted, done - meter.t0, reopened=reopened,
                    server_us_per_job=to_done.server * 1e6 / settings.jobs,
                    redis_us_per_job=to_done.redis * 1e6 / settings.jobs,
                    redis_commands=redis.top_commands() if redis is not None else [])

    result = _measured(settings, once)
    completed_everywhere(server, redis, db, posted)
    server.check_alive()
    return result



"""Cluster bench scenario 2, fan-out: the WebSocket bench's clients on every worker, the paced job
on one.
"""

from __future__ import annotations

import json
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.cluster.measure import Cpu, CpuMeter
from bench.cluster.nodes import Node
from bench.cluster.redis_server import FANOUT_CONNECT_PARALLEL, PREFIX, Redis
from bench.report import (
    BenchFailure,
)
from bench.ws import worker as ws_worker
from bench.ws.scenarios import Stream, end_job, new_job, trigger
from bench.ws.servers import ClientProc, _split
from bench.ws.worker import worker_main


# =============================================================================================
# 2. Fan-out
# =============================================================================================
class FanClients(ClientProc):
    """The WebSocket bench's client process, started through ``python -m bench.cluster --ws-client``
    so it opens its connections ``connect_parallel`` at a time."""

    ENTRY = ("-m", "bench.cluster", "--ws-client")


def ws_client_main(spec_json: str) -> int:
    spec = json.loads(spec_json)
    ws_worker.CONNECT_PARALLEL = int(spec.get("connect_parallel", ws_worker.CONNECT_PARALLEL))
    return int(worker_main(spec_json))


def wait_stream(redis: Redis, db: int, job_id: str, timeout: float = 10.0) -> None:
    """Until the job's first events are in its Redis stream: before that, a worker that does not
    run the job cannot know it and refuses a socket 1008 (README)."""
    deadline = time.monotonic() + timeout
    with redis.client(db) as client:
        while not client.exists(f"{PREFIX}:job:{job_id}"):
            if time.monotonic() > deadline:
                raise BenchFailure(f"job {job_id}: no Redis stream after {timeout:g}s")
            time.sleep(0.01)


@dataclass
class Fan:
    stream: Any  # bench.ws's Stream
    cpu: Cpu
    owner_clients: int = 0
    other_clients: int = 0
    per_worker: dict[int, int] = field(default_factory=dict)
    redis_commands: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 1


def run_fanout(server: Node, redis: Redis, db: int, workdir: Path, *, clients: int, rate: float, seconds: float,
               procs: int, client: str) -> Fan:
    """bench.ws's ``run_stream`` on a cluster: the job's Redis stream awaited before the
    clients connect, where they landed noted, redis-server's CPU counted apart."""
    n = max(1, round(rate * seconds))
    job_id = new_job(server)
    wait_stream(redis, db, job_id)
    owner = server.owner_pid(job_id)
    path = f"/api/ws/jobs/{job_id}/monitor"
    spec = {
        "mode": "stream", "port": server.port, "path": path, "expect": n, "client": client,
        "connect_timeout": 60.0 + clients * 0.05, "deadline": seconds * 2 + 10.0, "quiet": 5.0,
        "seconds": seconds, "connect_parallel": FANOUT_CONNECT_PARALLEL,
    }
    workers: list[FanClients] = []
    stream = Stream(clients=clients, rate=rate, n=n, procs=procs)
    fan = Fan(stream, Cpu())
    try:
        for k, count in enumerate(_split(clients, procs)):
            workers.append(FanClients({**spec, "clients": count}, workdir, k))
        for w in workers:
            w.expect_line("READY", spec["connect_timeout"] + 10)
        fan.per_worker = server.placement()
        if sum(fan.per_worker.values()) < clients:
            raise BenchFailure(f"{server.name}: {clients} clients ready but the workers hold {fan.per_worker}")
        fan.owner_clients = fan.per_worker.get(owner, 0)
        fan.other_clients = sum(fan.per_worker.values()) - fan.owner_clients
        redis.reset_stats()
        meter = CpuMeter([server], redis)
        trigger(server, job_id, rate, n)
        for w in workers:
            w.expect_line("DONE", spec["deadline"] + 30)
        wall = time.perf_counter() - meter.t0
        fan.redis_commands = redis.top_commands()
        client_cpu = 0.0
        for w in workers:
            w.process.wait(30)
            client_cpu += stream.absorb(*w.result())
        fan.cpu = meter.result(client_cpu=client_cpu, seconds=wall)
        stream.wall = wall
        stream.server_cpu, stream.client_cpu, stream.other_cpu = fan.cpu.server, fan.cpu.client, fan.cpu.other
    finally:
        for w in workers:
            w.stop()
        try:
            end_job(server, job_id)
        except Exception as exc:  # noqa: BLE001 - reported below
            stream.errors.append(f"could not complete job {job_id}: {exc!r}")
    stream.sorted_ms = sorted(x * 1e3 for x in stream.latencies)
    stream.latencies = array("d")
    if stream.disorder or stream.tick_disorder:
        raise BenchFailure(f"{server.name}: events arrived out of order or duplicated: {stream.as_dict()}")
    if stream.errors:
        raise BenchFailure(f"{server.name}: client errors: {stream.errors}")
    server.check_alive()
    return fan


def _lossy(stream: Any) -> bool:
    return bool(stream.missing or stream.holes or stream.gaps or stream.gap_named or stream.closed_by_server
                or stream.timed_out)



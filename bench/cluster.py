"""Cluster benchmark: several Routilux processes on one Redis (``ROUTILUX_REDIS_URL``) against one
plain server, on this machine (``make bench``; a bounded run is in ``make test``).

    python bench/cluster.py [--quick] [--check] [--json FILE] [--only post,fanout,hop]
                            [--jobs N] [--connections N] [--clients N] [--rate R] [--seconds S]
                            [--capacity-rate R] [--capacity-seconds S] [--hop-rate R] [--hop-seconds S]
                            [--hop-capacity-rate R] [--hop-capacity-seconds S] [--client-procs K]
                            [--quiet-wait S]

What the issue asks: "job-start throughput and event fan-out with 1 vs 2 workers on this 2-core
machine, and the cost of the Redis hop per event (latency added, measured in the same run)".

One ``redis-server`` (``/usr/bin/redis-server --save "" --appendonly no`` on a free loopback
port) serves every scenario, each on a database of its own emptied (FLUSHDB) before its servers
start; it is stopped at the end. The Routilux servers under test, each on a free loopback port:

- *plain*: ``python -m uvicorn routilux.api.main:app`` with ``bench/api.py``'s flags (httptools,
  uvloop, no access log), one process on a fresh SQLite file, no Redis: the baseline;
- *gunicorn -w N*: ``python -m gunicorn -w N -k routilux.api.worker.UvicornWorker --bind
  127.0.0.1:PORT routilux.api.main:app`` (``--no-control-socket`` on gunicorn >= 24) with
  ``ROUTILUX_REDIS_URL``: every worker is a cluster node (shared store in Redis, job events in one
  Redis stream per job, jobs owned by the worker that started them, requests about a job
  forwarded to its owner over Pub/Sub). The workers share gunicorn's listening socket, so the
  kernel/event loops decide which worker accepts a connection: the table shows where the
  connections landed (``placement``). Ready once every worker has joined the cluster (its node in
  Redis) and logged its start-up;
- *A* and *B*: two ``python -m routilux.api.main`` processes with ``ROUTILUX_REDIS_URL`` on one
  Redis database (the hop scenario).

Every server loads ``bench/ws_routines.py`` (``ROUTILUX_ROUTINE_MODULES=ws_routines``). Any
non-2xx answer, broken connection, lost, duplicated or reordered event, failed job, dead worker
or ``Traceback``/``ERROR``/``CRITICAL`` line in a server's log fails the run
(:class:`BenchFailure`). CPU columns are fractions of one core over the measurement: the servers
(gunicorn's arbiter and workers), ``redis-server``, the client processes, and everything else on
the machine (``other``; the 2 cores are shared). Before each measurement the bench waits up to
``--quiet-wait`` s (default 30) for an idle machine and measures again (up to 3 times) when other
work took more than 15% of a core meanwhile (``--quick`` turns this off).

Rows, table 1 — job-start throughput (``POST /api/jobs``, ``bench/api.py``'s load generator and
request: 32 keep-alive connections, one request in flight on each, ``--jobs`` (10,000) jobs of the
two-routine flow ``bench_post`` with ``complete_when_idle: true`` and one entry item; every
server seeded alike with ``bench/api.py``'s ten flows and one idle job):

1. ``plain``: the single SQLite process. The baseline of ``×plain``.
2. ``gunicorn -w 1 + Redis``: the same load on one cluster node.
3. ``gunicorn -w 2 + Redis``: on two. ``×plain`` = jobs/s (201 answers per second) / row 1's.
   The workers race for each new connection on gunicorn's shared socket and the split is often
   lopsided (anything from 16/16 to 31/1, now and then 0/32): unless each worker holds at least 8,
   the bench closes the connections and opens them again (up to 10 times) before posting, so that
   the row measures both workers (``placement``; the JSON says how often it reopened).
   ``completed`` is the sustained rate: jobs / time from the first POST until ``GET
   /api/jobs?status=completed`` counts them all (through the server's port, i.e. any worker; then
   confirmed by 8 fresh connections and, in the cluster, by the Redis index itself). No job may
   fail or be cancelled. Informational: there is no target.

Table 2 — event fan-out: ``--clients`` (50) WebSocket clients on ``/api/ws/jobs/{id}/monitor`` of
one job whose ``WsTicker`` (``bench/ws_routines.py``) publishes ``log`` events at a steady pace,
through gunicorn's port, with ``bench/ws.py``'s client (its own RFC 6455 client, in a separate
process; connections opened 5 at a time so that both workers get some). The job runs on the worker
that took its ``POST``; the clients on the other worker get its events through Redis (``owner/other``
column: the clients each worker holds). Per client: every event once, in order (seq holes and
``gap`` frames are loss), publish -> receipt latency (``time.time()`` in the event vs at receipt,
same machine); deliveries/s = events received by all clients / (first publish -> last receipt).
*Loss must be 0* in every row, or the run fails (after all rows are measured; the message
carries the table). Each row on a fresh gunicorn and Redis database.

4. ``R ev/s x K, gunicorn -w 1``: ``--rate`` (1,000) events/s for ``--seconds`` (10): the baseline
   of ``×1w``.
5. the same, ``gunicorn -w 2``: ``×1w p99`` = p99 / row 4's, ``×1w deliv/s`` = deliveries/s / row
   4's (about 1.00 while both keep up with the pace). Informational.
6. ``capacity: R ev/s offered x K, gunicorn -w 1`` (full runs): ``--capacity-rate`` (4,000) events/s
   for ``--capacity-seconds`` (4), more than one process delivers: deliveries/s is what the
   server achieves (latency grows with the backlog).
7. the same, ``gunicorn -w 2``: ``×1w deliv/s`` is the capacity gained by the second worker.

Table 3 — the Redis hop: processes A and B on one Redis (fresh for each row); a job on A
publishing paced events; one WebSocket client on A (local delivery: A's bus to the socket) and
one on B (A's store appends each event to the job's Redis stream, B's bridge reads it with XREAD
and publishes it on B's bus), both in this process on one event loop. For every event both must
see, with the same seq, the bench takes its arrival time on each (``perf_counter``, same process)
and reports B - A: the latency the hop adds (p50, p99, max); B's received events/s (first to last
arrival); each side's publish -> receipt p50; and the CPU per event of A (the owner: ticker, bus,
Redis writes), B (the relay) and redis-server (``µs/ev``: CPU during the stream / events; at low
rates each event pays for its own wake-ups, so it falls as the rate rises).

After the stream, while the job still runs, 300 ``GET /api/jobs/{id}`` go alternately to A (the
owner answers) and to B (which forwards the request to A over Redis Pub/Sub and relays A's
answer), one request at a time: ``GET job A/B->A`` is their p50, the cost of job ownership's
forwarding round trip.

8. ``R ev/s x S s, A and B``: ``--hop-rate`` (500) events/s for ``--hop-seconds`` (5).
   Informational; the figure to watch is the p50 added latency.
9. the same at ``--hop-capacity-rate`` (5,000) for ``--hop-capacity-seconds`` (3) (full runs):
   the relay under load, and Redis' CPU per event, which bounds how many events one Redis serves.

``--check`` makes a missed target exit 1 (the rows here are informational: only a failed
correctness check, which raises anyway, makes one).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Final, Self

import httpx
import psutil

BENCH_DIR: Final[Path] = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from _common import BenchFailure, _render, _verdict, machine_busy_line
from _servers import ServerProcess, free_port


def _sibling(script: str) -> ModuleType:
    """``bench/<script>.py`` as module ``routilux_bench_<script>`` (the name ``tests/bench_support``
    gives it, so a test run loads it once; a plain ``import api`` could find ``tests/api``)."""
    name = f"routilux_bench_{script}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH_DIR / f"{script}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # first: msgspec resolves Struct annotations through it
    spec.loader.exec_module(module)
    return module


apib = _sibling("api")  # the HTTP load generator, the POST request, flows and checks
wsb = _sibling("ws")  # the WebSocket client process, its accounting, the ticker flow

HOST: Final[str] = "127.0.0.1"  # never anything else
REDIS_BINARY: Final[str] = "/usr/bin/redis-server"
WORKER_CLASS: Final[str] = "routilux.api.worker.UvicornWorker"
PREFIX: Final[str] = "routilux"  # the cluster's key prefix (routilux.cluster.redis_events)
FANOUT_CONNECT_PARALLEL: Final[int] = 5  # handshakes in flight: a burst lands mostly on one worker
LOG_PROBLEMS: Final = re.compile(r"Traceback|\bERROR\b|\bCRITICAL\b|\[ERROR\]|WORKER TIMEOUT|Worker \(pid:\d+\) was")
FORWARD_SAMPLES: Final = 300  # GET /api/jobs/{id} on A and on B, each, per hop row
SPREAD_TRIES: Final = 10  # POST connections reopened until every worker holds some (see _connect)
STALLED_SECONDS: Final = 30.0  # no job completing for this long fails the POST row
DB_POST: Final = {"w1": 1, "w2": 2}  # Redis database per scenario (emptied before it starts)
DB_FANOUT: Final = {"fanout_w1": 3, "fanout_w2": 4, "capacity_w1": 5, "capacity_w2": 6}
DB_HOP: Final = {"hop": 7, "hop_capacity": 8}


# =============================================================================================
# redis-server
# =============================================================================================
class Redis:
    """``redis-server`` on a free loopback port, nothing written to disk; stopped by :meth:`stop`."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.log_path = workdir / f"redis.{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._ps: psutil.Process | None = None

    def url(self, db: int) -> str:
        return f"redis://{HOST}:{self.port}/{db}"

    def start(self, timeout: float = 10.0) -> Redis:
        binary = shutil.which("redis-server") or REDIS_BINARY
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no",
                 "--dir", str(self.workdir), "--databases", "16"],
                stdout=log, stderr=subprocess.STDOUT,
            )
        self._ps = psutil.Process(self.process.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchFailure(f"redis-server exited with {self.process.returncode}: "
                                   f"{self.log_path.read_text(errors='replace')[-2000:]}")
            try:
                if self.command(0, "PING") in (True, "PONG"):
                    return self
            except Exception:  # noqa: BLE001, S110 - not up yet (redis.ConnectionError)
                pass
            time.sleep(0.05)
        self.stop()
        raise BenchFailure(f"redis-server did not answer PING within {timeout}s")

    def client(self, db: int) -> Any:
        import redis

        return redis.Redis.from_url(self.url(db))

    def command(self, db: int, *args: str) -> Any:
        with self.client(db) as client:
            reply = client.execute_command(*args)
        return reply.decode() if isinstance(reply, bytes) else reply

    def flush(self, db: int) -> None:
        if self.command(db, "FLUSHDB") not in ("OK", True):
            raise BenchFailure(f"FLUSHDB of Redis database {db} failed")

    def cpu_seconds(self) -> float:
        if self._ps is None:
            return 0.0
        t = self._ps.cpu_times()
        return t.user + t.system

    def reset_stats(self) -> None:
        self.command(0, "CONFIG", "RESETSTAT")

    def top_commands(self, n: int = 5) -> list[dict[str, Any]]:
        """The commands that took most of Redis' time since :meth:`reset_stats` (INFO commandstats)."""
        with self.client(0) as client:
            stats = client.info("commandstats")
        ranked = sorted(stats.items(), key=lambda kv: -kv[1]["usec"])[:n]
        return [{"command": name.removeprefix("cmdstat_"), "calls": v["calls"], "usec": v["usec"],
                 "usec_per_call": round(v["usec_per_call"], 1)} for name, v in ranked]

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# =============================================================================================
# Routilux server processes
# =============================================================================================
def _base_env(workdir: Path, name: str) -> dict[str, str]:
    """The parent's environment minus every ROUTILUX_* variable, plus what all servers share."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("ROUTILUX_")}
    return {
        **base,
        "ROUTILUX_DB": str(workdir / f"{name}.db"),  # unused with ROUTILUX_REDIS_URL (the store is Redis)
        "ROUTILUX_API_RELOAD": "false",
        "ROUTILUX_LOG_LEVEL": "warning",
        "ROUTILUX_ROUTINE_MODULES": "ws_routines",
        "ROUTILUX_WS_IDLE_TIMEOUT": "600",
        # Retention would prune beyond 10,000 finished jobs: a repeated POST measurement (noisy
        # machine) posts more than that, and every one of them must be counted as completed.
        "ROUTILUX_JOBS_KEEP": "100000000",
        "PYTHONPATH": os.pathsep.join(p for p in (str(BENCH_DIR), os.environ.get("PYTHONPATH", "")) if p),
    }


def _log_problems(text: str, limit: int = 12) -> list[str]:
    return [line for line in text.splitlines() if LOG_PROBLEMS.search(line)][:limit]


class Node(ServerProcess):
    """Routilux in one or more processes (a plain uvicorn, a gunicorn with N workers, or a
    ``python -m routilux.api.main``); ``redis_url`` None means no cluster (SQLite)."""

    def __init__(self, name: str, workdir: Path, *, kind: str, workers: int = 1, redis_url: str | None = None) -> None:
        port = free_port()
        env = _base_env(workdir, f"{name}.{port}")
        if redis_url is not None:
            env["ROUTILUX_REDIS_URL"] = redis_url
        if kind == "uvicorn":  # bench/api.py's plain server
            argv = [sys.executable, "-m", "uvicorn", "routilux.api.main:app", "--host", HOST, "--port", str(port),
                    *apib.UVICORN_FLAGS]
        elif kind == "main":
            argv = [sys.executable, "-m", "routilux.api.main"]
            env |= {"ROUTILUX_API_HOST": HOST, "ROUTILUX_API_PORT": str(port)}
        elif kind == "gunicorn":
            argv = [sys.executable, "-m", "gunicorn", "-w", str(workers), "-k", WORKER_CLASS,
                    "--bind", f"{HOST}:{port}", "--graceful-timeout", "10", *_no_control_socket(),
                    "routilux.api.main:app"]
        else:
            raise ValueError(kind)
        super().__init__(name, port, argv, env, "/api/health", workdir / f"{name}.{port}.log")
        self.kind = "routilux"  # what bench/ws.py's trigger() asks
        self.server_kind = kind
        self.workers = workers if kind == "gunicorn" else 1
        self.redis_url = redis_url
        self.procs: list[psutil.Process] = []  # the serving processes (gunicorn: its workers)

    def start(self, timeout: float = 60.0) -> Node:
        super().start(timeout)
        deadline = time.monotonic() + timeout
        if self.server_kind == "gunicorn":
            # The port answers as soon as one worker serves: wait for all of them.
            while True:
                kids = psutil.Process(self.pid).children()
                started = self.output().count("Application startup complete")
                if len(kids) == self.workers and started >= self.workers:
                    break
                if time.monotonic() > deadline or self.process is None or self.process.poll() is not None:
                    self.stop()
                    raise BenchFailure(f"{self.name}: {len(kids)} of {self.workers} workers started:\n{self.output()[-3000:]}")
                time.sleep(0.05)
            self.procs = kids
        else:
            self.procs = [psutil.Process(self.pid)]
        if self.redis_url is not None:  # every process has joined the cluster
            pids = {p.pid for p in self.procs}
            while pids - set(self.node_pids().values()):
                if time.monotonic() > deadline:
                    self.stop()
                    raise BenchFailure(f"{self.name}: not every process joined the cluster: {self.node_pids()}")
                time.sleep(0.05)
        return self

    def node_pids(self) -> dict[str, int]:
        """Cluster node id -> pid, from the membership hash in Redis."""
        import redis

        with redis.Redis.from_url(self.redis_url) as client:  # type: ignore[arg-type]
            nodes = client.hgetall(f"{PREFIX}:nodes")
        return {k.decode(): int(json.loads(v)["pid"]) for k, v in nodes.items()}

    def owner_pid(self, job_id: str) -> int:
        import redis

        with redis.Redis.from_url(self.redis_url) as client:  # type: ignore[arg-type]
            raw = client.hget(f"{PREFIX}:owners", job_id)
        if raw is None:
            raise BenchFailure(f"{self.name}: job {job_id} has no owner in Redis")
        node = json.loads(raw)["node"]
        pid = self.node_pids().get(node)
        if pid is None:
            raise BenchFailure(f"{self.name}: the owner of job {job_id}, node {node}, is not a member")
        return pid

    def cpu_seconds(self) -> float:
        """User + system CPU of every process of the server (arbiter and workers) so far."""
        total = super().cpu_seconds()
        for p in self.procs:
            if p.pid == self.pid:
                continue
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess as exc:
                raise BenchFailure(f"{self.name}: worker {p.pid} died:\n{self.output()[-3000:]}") from exc
        return total

    def placement(self) -> dict[int, int]:
        """pid -> established connections each serving process holds on the server's port."""
        out: dict[int, int] = {}
        for p in self.procs:
            out[p.pid] = sum(1 for c in p.net_connections("tcp")
                             if c.laddr and c.laddr.port == self.port and c.status == psutil.CONN_ESTABLISHED)
        return out

    def check_alive(self) -> None:
        """Every serving process still the one that started, and no problem in the log."""
        if self.process is None or self.process.poll() is not None:
            raise BenchFailure(f"{self.name} exited:\n{self.output()[-3000:]}")
        if self.server_kind == "gunicorn":
            kids = {p.pid for p in psutil.Process(self.pid).children()}
            if kids != {p.pid for p in self.procs}:
                raise BenchFailure(f"{self.name}: workers changed {sorted(p.pid for p in self.procs)} -> "
                                   f"{sorted(kids)} (a worker died):\n{self.output()[-3000:]}")
        problems = _log_problems(self.output())
        if problems:
            raise BenchFailure(f"{self.name} logged problems:\n" + "\n".join(problems) + f"\n--- log tail ---\n"
                               f"{self.output()[-3000:]}")

    def stop(self, timeout: float = 30.0) -> int:
        kids: list[psutil.Process] = []
        if self.process is not None and self.process.poll() is None:
            try:
                kids = psutil.Process(self.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                pass
        code = super().stop(timeout)
        for kid in kids:  # a worker left behind would keep the port
            try:
                kid.kill()
            except psutil.NoSuchProcess:
                pass
        return code


def _no_control_socket() -> list[str]:
    """gunicorn >= 24 opens a control socket in $XDG_RUNTIME_DIR or ~/.gunicorn; servers side by
    side (other people's tests) must not fight over it."""
    from gunicorn.config import KNOWN_SETTINGS

    return ["--no-control-socket"] if any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS) else []


# =============================================================================================
# Measuring: quiet machine, CPU, retries
# =============================================================================================
@dataclass
class Cpu:
    """CPU seconds used during one measurement: servers, redis-server, clients, everything else."""

    server: float = 0.0
    redis: float = 0.0
    client: float = 0.0
    other: float = 0.0
    seconds: float = 0.0

    def cores(self, what: str) -> float:
        return getattr(self, what) / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, float]:
        return {f"{k}_cpu_cores": round(self.cores(k), 3) for k in ("server", "redis", "client", "other")}


class CpuMeter:
    """Started on creation; :meth:`result` is the CPU used since."""

    def __init__(self, servers: list[Node], redis: Redis | None) -> None:
        self.servers = servers
        self.redis = redis
        self.s0 = sum(s.cpu_seconds() for s in self.servers)
        self.r0 = self.redis.cpu_seconds() if self.redis else 0.0
        self.c0 = time.process_time()
        self.m0 = apib._machine_busy()
        self.t0 = time.perf_counter()

    def result(self, client_cpu: float | None = None, seconds: float | None = None) -> Cpu:
        """``client_cpu``: the client processes' CPU if not this process's."""
        cpu = Cpu(server=sum(s.cpu_seconds() for s in self.servers) - self.s0,
                  redis=(self.redis.cpu_seconds() if self.redis else 0.0) - self.r0,
                  client=client_cpu if client_cpu is not None else time.process_time() - self.c0,
                  seconds=seconds if seconds is not None else time.perf_counter() - self.t0)
        busy = apib._machine_busy() - self.m0
        cpu.other = max(0.0, busy - cpu.server - cpu.redis - cpu.client)
        return cpu


def _noisy(cpu: Cpu, settings: Settings) -> bool:
    return cpu.seconds > 0 and cpu.other / cpu.seconds > settings.max_other


def _measured(settings: Settings, run: Any) -> Any:
    """``run()`` after waiting for a quiet machine; again (up to ``attempts``) while other work
    took more than ``max_other`` of a core during it. ``run`` returns an object with ``.cpu``."""
    tries = 0
    while True:
        if settings.quiet_wait > 0:
            apib.wait_quiet(settings.quiet_wait)
        result = run()
        tries += 1
        if settings.quiet_wait <= 0 or tries >= settings.attempts or not _noisy(result.cpu, settings):
            result.attempts = tries
            return result


def _pct(ordered: list[float], q: float) -> float:
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]  # nearest rank


# =============================================================================================
# 1. Job-start throughput
# =============================================================================================
@dataclass
class Post:
    load: Any  # bench/api.py's Load
    cpu: Cpu
    placement: dict[int, int]
    posted_total: int = 0
    seconds_to_completed: float = 0.0
    server_us_per_job: float = 0.0  # CPU from the first POST until all completed, per job
    redis_us_per_job: float = 0.0
    redis_commands: list[dict[str, Any]] = field(default_factory=list)
    reopened: int = 0  # times the connections were reopened to reach every worker
    attempts: int = 1


async def _connect(server: Node, feed: Any, connections: int) -> tuple[list[tuple[Any, Any, asyncio.Future[None]]], dict[int, int], int]:
    """Open ``connections`` keep-alive connections, one after another (as bench/api.py does), and
    wait until the server has accepted them all. With several workers on gunicorn's shared socket
    the event loops race for each connection, and the split is often lopsided (31/1, even 0/32):
    unless every worker holds at least half its share, the connections are closed and opened
    again (up to ``SPREAD_TRIES`` times), so that the row measures every worker. Returns them, where they landed, and how many times it reopened."""
    loop = asyncio.get_running_loop()
    for reopened in range(SPREAD_TRIES):
        clients: list[tuple[Any, Any, asyncio.Future[None]]] = []
        try:
            for _ in range(connections):
                done: asyncio.Future[None] = loop.create_future()
                transport, client = await loop.create_connection(lambda d=done: apib._Client(feed, d), HOST, server.port)
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
    """bench/api.py's ``_run_load`` (same client and accounting) on connections every worker
    holds some of (see :func:`_connect`)."""
    load = apib.Load(connections)
    feed = apib._Feed(requests, load, None, count)
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
    """bench/api.py's ``wait_completed``, polling ``?status=completed`` alone: with the flow filter
    too, each poll makes the Redis store intersect two indexes of every job (ZINTERSTORE, ~3 ms of
    Redis CPU with a few thousand jobs), which would be counted against the jobs. Only the posted
    jobs complete on these servers (the seeded job stays idle)."""
    deadline = time.monotonic() + timeout
    last, moved = -1, time.monotonic()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        while True:
            done = apib._expect(client.get("/api/jobs", params={"status": "completed", "limit": 1}), 200, "count")["total"]
            if done >= expected:
                now = time.perf_counter()
                break
            if done != last:
                last, moved = done, time.monotonic()
            if time.monotonic() > deadline or time.monotonic() - moved > STALLED_SECONDS:
                counts = {st: apib._expect(client.get("/api/jobs", params={"status": st, "limit": 1}), 200,
                                           "count")["total"]
                          for st in ("pending", "running", "idle", "paused", "failed", "cancelled")}
                raise BenchFailure(f"{server.name}: only {done} of {expected} posted jobs completed (no progress for "
                                   f"{time.monotonic() - moved:.0f}s); other statuses {counts}")
            time.sleep(0.02)
        for status in ("failed", "cancelled"):
            bad = apib._expect(client.get("/api/jobs", params={"status": status, "limit": 1}), 200, "count")["total"]
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
            seen.append(apib._expect(client.get("/api/jobs", params={"flow_id": apib.POST_FLOW, "status": "completed",
                                                                    "limit": 1}), 200, "count")["total"])
    if any(n != expected for n in seen):
        raise BenchFailure(f"{server.name}: completed jobs counted through fresh connections: {seen}, expected {expected}")
    if redis is not None and db is not None:
        with redis.client(db) as client:
            indexed = client.zcard(f"{PREFIX}:idx:status:completed")
        if indexed < expected:  # the seeded live job is idle, not completed: == expected
            raise BenchFailure(f"{server.name}: Redis indexes {indexed} completed jobs, expected {expected}")


def run_post(server: Node, redis: Redis | None, db: int | None, settings: Settings) -> Post:
    """POST ``settings.jobs`` jobs; wait until the store lists them all completed (repeated on a
    noisy machine: each attempt posts ``jobs`` more)."""
    posted = 0
    request = [apib.post("/api/jobs", server.port, apib.post_body())]

    def once() -> Post:
        nonlocal posted
        if redis is not None:
            redis.reset_stats()
        meter = CpuMeter([server], redis)
        with asyncio.Runner(loop_factory=apib._new_loop) as runner:
            load, placement, reopened = runner.run(_drive(server, request, settings.connections, settings.jobs))
        cpu = meter.result(seconds=load.seconds)
        load.server_cpu, load.client_cpu, load.other_cpu = cpu.server, cpu.client, cpu.other
        apib._checked(f"{server.name}: POST /api/jobs", load)
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


# =============================================================================================
# 2. Fan-out
# =============================================================================================
class FanClients(wsb.ClientProc):
    """bench/ws.py's client process, started through this file so it opens its connections
    ``connect_parallel`` at a time (see ``--ws-client``)."""

    def __init__(self, spec: dict[str, Any], workdir: Path, index: int) -> None:
        self.out = workdir / f"client.{os.getpid()}.{time.monotonic_ns()}.{index}.json"
        self.spec = {**spec, "out": str(self.out)}
        self.err_path = Path(str(self.out) + ".err")
        with open(self.err_path, "wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--ws-client", json.dumps(self.spec)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
            )
        self._pending = b""


def ws_client_main(spec_json: str) -> int:
    spec = json.loads(spec_json)
    wsb.CONNECT_PARALLEL = int(spec.get("connect_parallel", wsb.CONNECT_PARALLEL))
    return int(wsb.worker_main(spec_json))


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
    stream: Any  # bench/ws.py's Stream
    cpu: Cpu
    owner_clients: int = 0
    other_clients: int = 0
    per_worker: dict[int, int] = field(default_factory=dict)
    redis_commands: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 1


def run_fanout(server: Node, redis: Redis, db: int, workdir: Path, *, clients: int, rate: float, seconds: float,
               procs: int, client: str) -> Fan:
    """bench/ws.py's ``run_stream`` on a cluster: the job's Redis stream awaited before the
    clients connect, where they landed noted, redis-server's CPU counted apart."""
    n = max(1, round(rate * seconds))
    job_id = wsb.new_job(server)
    wait_stream(redis, db, job_id)
    owner = server.owner_pid(job_id)
    path = f"/api/ws/jobs/{job_id}/monitor"
    spec = {
        "mode": "stream", "port": server.port, "path": path, "expect": n, "client": client,
        "connect_timeout": 60.0 + clients * 0.05, "deadline": seconds * 2 + 10.0, "quiet": 5.0,
        "seconds": seconds, "connect_parallel": FANOUT_CONNECT_PARALLEL,
    }
    workers: list[FanClients] = []
    stream = wsb.Stream(clients=clients, rate=rate, n=n, procs=procs)
    fan = Fan(stream, Cpu())
    try:
        for k, count in enumerate(wsb._split(clients, procs)):
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
        wsb.trigger(server, job_id, rate, n)
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
            wsb.end_job(server, job_id)
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


# =============================================================================================
# 3. The Redis hop
# =============================================================================================
class HopWs(wsb.RawWs):
    """bench/ws.py's client connection, keeping the close frame's reason for the report."""

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
            frame = wsb._DECODER.decode(payload)
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
                self.send(wsb.PONG)
        elif kind == "error":
            self.errors.append(f"error frame: {payload[:300]!r}")
        elif kind in wsb._QUIET_TYPES or kind == "pong":
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
            "get_job_local_p50_ms": round(_pct(self.get_local_ms, 0.5), 3),
            "get_job_local_p99_ms": round(_pct(self.get_local_ms, 0.99), 3),
            "get_job_forwarded_p50_ms": round(_pct(self.get_forwarded_ms, 0.5), 3),
            "get_job_forwarded_p99_ms": round(_pct(self.get_forwarded_ms, 0.99), 3),
            "added_p50_ms": round(_pct(self.added_ms, 0.5), 3), "added_p90_ms": round(_pct(self.added_ms, 0.9), 3),
            "added_p99_ms": round(_pct(self.added_ms, 0.99), 3),
            "added_max_ms": round(self.added_ms[-1], 3) if self.added_ms else None,
            "added_min_ms": round(self.added_ms[0], 3) if self.added_ms else None,
            "a_p50_ms": round(_pct(self.a_ms, 0.5), 3), "a_p99_ms": round(_pct(self.a_ms, 0.99), 3),
            "b_p50_ms": round(_pct(self.b_ms, 0.5), 3), "b_p99_ms": round(_pct(self.b_ms, 0.99), 3),
            "b_events_per_s": round(self.b_per_s, 1),
            "a_us_per_event": round(self.a_cpu * 1e6 / self.n, 1), "b_us_per_event": round(self.b_cpu * 1e6 / self.n, 1),
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
            apib._expect(await http.post(f"{a.url}/api/jobs/{job_id}/post", json={
                "routine_id": wsb.ROUTINE_ID, "slot_name": "start", "data": {"rate": rate, "n": n}}), 202,
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
                view = apib._expect(client.get(f"/api/jobs/{job_id}"), 200, f"GET the job on {name}")
                if k >= 10:
                    out.append((time.perf_counter() - t0) * 1e3)
                if view["job_id"] != job_id or view["status"] in ("completed", "failed", "cancelled"):
                    raise BenchFailure(f"GET /api/jobs/{job_id} on {name}: {view}")
    return sorted(local), sorted(forwarded)


def run_hop(a: Node, b: Node, redis: Redis, db: int, *, rate: float, seconds: float, settings: Settings) -> Hop:
    n = max(1, round(rate * seconds))

    def once() -> Hop:
        job_id = wsb.new_job(a)
        wait_stream(redis, db, job_id)
        if a.owner_pid(job_id) != a.pid:
            raise BenchFailure(f"hop: job {job_id} posted to A is not owned by A")
        redis.reset_stats()
        meter = CpuMeter([a, b], redis)
        a0, b0 = a.cpu_seconds(), b.cpu_seconds()
        with asyncio.Runner(loop_factory=apib._new_loop) as runner:
            sa, sb = runner.run(_hop_clients(a, b, job_id, n, rate, seconds))
        hop = Hop(rate, n, a_cpu=a.cpu_seconds() - a0, b_cpu=b.cpu_seconds() - b0)
        hop.cpu = meter.result()
        hop.redis_commands = redis.top_commands()
        hop.get_local_ms, hop.get_forwarded_ms = _get_job_both(a, b, job_id)
        wsb.end_job(a, job_id)
        problems = []
        for sub in (sa, sb):
            if sub.ticks != n or sub.holes or sub.gaps or sub.disorder or sub.errors:
                problems.append(f"{sub.name}: {sub.ticks}/{n} ticks, {sub.holes} seq holes, {sub.gaps} named in gap "
                                f"frames, {sub.disorder} out of order/duplicated, closed {sub.closed}, errors {sub.errors[:3]}")
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


# =============================================================================================
# Rows and tables
# =============================================================================================
@dataclass
class Row:
    scenario: str
    key: str
    post: Post | None = None
    fan: Fan | None = None
    hop: Hop | None = None
    baseline: Row | None = None
    workers: int = 1
    target: str = ""
    passed: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """jobs/s ÷ the plain server's (POST); p99 ÷ 1 worker's (fan-out)."""
        b = self.baseline
        if b is None:
            return None
        if self.post is not None and b.post is not None and b.post.load.rps:
            return self.post.load.rps / b.post.load.rps
        if self.fan is not None and b.fan is not None and b.fan.stream.pct_ms(0.99):
            return self.fan.stream.pct_ms(0.99) / b.fan.stream.pct_ms(0.99)
        return None

    @property
    def rate_ratio(self) -> float | None:
        """deliveries/s ÷ 1 worker's (fan-out)."""
        b = self.baseline
        if self.fan is not None and b is not None and b.fan is not None and b.fan.stream.deliveries_per_s:
            return self.fan.stream.deliveries_per_s / b.fan.stream.deliveries_per_s
        return None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"scenario": self.scenario, "key": self.key, "workers": self.workers}
        if self.post is not None:
            p, load = self.post, self.post.load
            out |= {
                "connections": load.connections, "jobs": load.requests, "seconds": round(load.seconds, 3),
                "jobs_per_s": round(load.rps, 1), "p50_ms": round(load.percentile_ms(0.5), 3),
                "p99_ms": round(load.percentile_ms(0.99), 3), "errors": load.errors,
                "statuses": {str(k): v for k, v in sorted(load.statuses.items())},
                "jobs_posted_total": p.posted_total,
                "seconds_to_all_completed": round(p.seconds_to_completed, 3),
                "completed_per_s": round(load.requests / p.seconds_to_completed, 1) if p.seconds_to_completed else None,
                "server_us_per_job": round(p.server_us_per_job, 1), "redis_us_per_job": round(p.redis_us_per_job, 1),
                "redis_commands": p.redis_commands,
                "connections_per_process": list(p.placement.values()), "connections_reopened": p.reopened,
                "ratio_vs_plain": _r(self.ratio),
                **p.cpu.as_dict(), "attempts": p.attempts,
            }
        if self.fan is not None:
            f = self.fan
            out |= f.stream.as_dict()
            out |= {"clients_on_owner": f.owner_clients, "clients_on_other": f.other_clients,
                    "p99_ratio_vs_1w": _r(self.ratio), "deliveries_ratio_vs_1w": _r(self.rate_ratio),
                    **f.cpu.as_dict(), "redis_commands": f.redis_commands, "attempts": f.attempts}
        if self.hop is not None:
            out |= self.hop.as_dict()
        return out | {"target": self.target, "passed": self.passed, **self.extra}


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def _cores(cpu: Cpu) -> tuple[str, ...]:
    return tuple(f"{cpu.cores(k):.0%}" for k in ("server", "redis", "client", "other"))


def format_table(rows: list[Row]) -> str:
    posts: list[tuple[str, ...]] = [("job start (POST /api/jobs)", "conns", "jobs", "jobs/s", "p50 ms", "p99 ms",
                                     "×plain", "completed/s", "µs/job srv/redis", "placement", "srv CPU",
                                     "redis CPU", "cli CPU", "other CPU", "errors")]
    fans: list[tuple[str, ...]] = [("fan-out", "clients owner/other", "ev/s", "deliveries/s", "loss", "p50 ms",
                                    "p99 ms", "max ms", "×1w p99", "×1w deliv/s", "srv CPU", "redis CPU", "cli CPU",
                                    "other CPU", "target", "result")]
    hops: list[tuple[str, ...]] = [("Redis hop (B relayed - A local)", "events", "added p50 ms", "p99 ms", "max ms",
                                    "A p50 ms", "B p50 ms", "B ev/s", "µs/ev A/B/redis", "GET job A/B->A p50 ms",
                                    "srv CPU", "redis CPU", "cli CPU", "other CPU", "target")]
    for r in rows:
        ratio = "—" if r.ratio is None else f"{r.ratio:.2f}"
        if r.post is not None:
            p, load = r.post, r.post.load
            posts.append((r.scenario, str(load.connections), f"{load.requests:,}", f"{load.rps:,.0f}",
                          f"{load.percentile_ms(0.5):.2f}", f"{load.percentile_ms(0.99):.2f}", ratio,
                          f"{load.requests / p.seconds_to_completed:,.0f}" if p.seconds_to_completed else "—",
                          f"{p.server_us_per_job:,.0f}/{p.redis_us_per_job:,.0f}", "/".join(str(v) for v in p.placement.values()), *_cores(p.cpu), str(load.errors)))
        elif r.fan is not None:
            f, s = r.fan, r.fan.stream
            loss = s.missing + s.holes + s.gap_named
            rr = "—" if r.rate_ratio is None else f"{r.rate_ratio:.2f}"
            fans.append((r.scenario, f"{f.owner_clients}/{f.other_clients}", f"{s.rate:,.0f}",
                         f"{s.deliveries_per_s:,.0f}", f"{loss:,}", f"{s.pct_ms(0.5):.1f}", f"{s.pct_ms(0.99):.1f}",
                         f"{s.sorted_ms[-1]:.1f}" if s.sorted_ms else "—", ratio, rr, *_cores(f.cpu),
                         r.target or "—", _verdict(r.passed)))
        elif r.hop is not None:
            h, d = r.hop, r.hop.as_dict()
            hops.append((r.scenario, f"{h.n:,}", f"{d['added_p50_ms']:.2f}", f"{d['added_p99_ms']:.2f}",
                         f"{d['added_max_ms']:.2f}", f"{d['a_p50_ms']:.2f}", f"{d['b_p50_ms']:.2f}",
                         f"{h.b_per_s:,.0f}",
                         f"{d['a_us_per_event']:.0f}/{d['b_us_per_event']:.0f}/{d['redis_us_per_event']:.0f}",
                         f"{d['get_job_local_p50_ms']:.2f}/{d['get_job_forwarded_p50_ms']:.2f}",
                         *_cores(h.cpu), r.target or "—"))
    out: list[str] = []
    for lines, left in ((posts, {0, 9}), (fans, {0, 1, 14, 15}), (hops, {0, 14})):
        if len(lines) > 1:
            out += ([""] if out else []) + _render(lines, left)
    return "\n".join(out)


# =============================================================================================
# The run
# =============================================================================================
@dataclass
class Settings:
    jobs: int = 10_000
    connections: int = 32
    clients: int = 50
    rate: float = 1_000.0
    seconds: float = 10.0
    capacity_rate: float = 4_000.0  # 0: no capacity rows
    capacity_seconds: float = 4.0
    hop_rate: float = 500.0
    hop_seconds: float = 5.0
    hop_capacity_rate: float = 5_000.0  # 0: no second hop row
    hop_capacity_seconds: float = 3.0
    client_procs: int = 1
    client: str = "raw"
    only: str = "post,fanout,hop"
    #: Shared machine: wait up to this long for an idle machine before each measurement, and
    #: measure again (up to ``attempts``) when other work took more than ``max_other`` of a core.
    quiet_wait: float = 30.0
    attempts: int = 3
    max_other: float = 0.15

    @classmethod
    def quick(cls) -> Settings:
        return cls(jobs=1_000, clients=20, rate=300.0, seconds=3.0, capacity_rate=0.0, hop_rate=300.0,
                   hop_seconds=2.0, hop_capacity_rate=0.0, quiet_wait=0.0)


def run_bench(settings: Settings, log: Any = None) -> list[Row]:
    """Start redis-server, run the scenarios of ``settings.only`` (each on fresh servers and a
    fresh Redis database), stop everything; return the rows. Lost events raise
    :class:`BenchFailure` once every scenario has run (the message has the table)."""
    say = log or (lambda _msg: None)
    s = settings
    only = {part.strip() for part in s.only.split(",") if part.strip()}
    if only - {"post", "fanout", "hop"}:
        raise ValueError(f"unknown scenario(s) {sorted(only - {'post', 'fanout', 'hop'})}: use post, fanout, hop")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="routilux-cluster-bench-") as tmp:
        work = Path(tmp)
        try:
            with Redis(work) as redis:
                say(f"redis-server {redis.port} (pid {redis.process.pid if redis.process else 0}); {wsb.sources_fingerprint()}")
                if "post" in only:
                    with Node("plain", work, kind="uvicorn") as plain:
                        apib.seed_routilux(plain)
                        base = Row("plain uvicorn, SQLite (baseline)", "post_plain", post=run_post(plain, None, None, s))
                    say(f"{base.scenario}: {base.post.load.rps:,.0f} jobs/s")  # type: ignore[union-attr]
                    rows.append(base)
                    for label, n in (("w1", 1), ("w2", 2)):
                        redis.flush(DB_POST[label])
                        with Node(f"post-{label}", work, kind="gunicorn", workers=n,
                                  redis_url=redis.url(DB_POST[label])) as g:
                            apib.seed_routilux(g)
                            row = Row(f"gunicorn -w {n} + Redis", f"post_{label}", workers=n, baseline=base,
                                      post=run_post(g, redis, DB_POST[label], s))
                        say(f"{row.scenario}: {row.post.load.rps:,.0f} jobs/s, placement "  # type: ignore[union-attr]
                            f"{row.post.placement}")  # type: ignore[union-attr]
                        rows.append(row)
                if "fanout" in only:
                    pairs = [("fanout", f"{s.rate:,.0f} ev/s x {s.clients}", s.rate, s.seconds)]
                    if s.capacity_rate > 0:
                        pairs.append(("capacity", f"capacity: {s.capacity_rate:,.0f} ev/s offered x {s.clients}",
                                      s.capacity_rate, s.capacity_seconds))
                    for key, title, rate, seconds in pairs:
                        one: Row | None = None
                        for label, n in (("w1", 1), ("w2", 2)):
                            db = DB_FANOUT[f"{key}_{label}"]
                            redis.flush(db)
                            with Node(f"{key}-{label}", work, kind="gunicorn", workers=n, redis_url=redis.url(db)) as g:
                                wsb.setup_routilux(g)
                                fan = _measured(s, lambda g=g, db=db, rate=rate, seconds=seconds: run_fanout(
                                    g, redis, db, work, clients=s.clients, rate=rate, seconds=seconds,
                                    procs=s.client_procs, client=s.client))
                            row = Row(f"{title}, gunicorn -w {n}", f"{key}_{label}", fan=fan, workers=n, baseline=one,
                                      target="0 loss")
                            row.passed = not _lossy(fan.stream)
                            st = fan.stream
                            say(f"{row.scenario}: clients owner/other {fan.owner_clients}/{fan.other_clients}, "
                                f"p99 {st.pct_ms(0.99):.1f} ms, loss {st.missing:,}, {st.deliveries_per_s:,.0f} deliveries/s")
                            rows.append(row)
                            one = one or row
                if "hop" in only:
                    hops = [("hop", s.hop_rate, s.hop_seconds, "informational: p50 added")]
                    if s.hop_capacity_rate > 0:
                        hops.append(("hop_capacity", s.hop_capacity_rate, s.hop_capacity_seconds, "informational"))
                    for key, rate, seconds, target in hops:
                        db = DB_HOP[key]
                        redis.flush(db)
                        with Node("A", work, kind="main", redis_url=redis.url(db)) as a, \
                                Node("B", work, kind="main", redis_url=redis.url(db)) as b:
                            wsb.setup_routilux(a)
                            hop = run_hop(a, b, redis, db, rate=rate, seconds=seconds, settings=s)
                        row = Row(f"{rate:,.0f} ev/s x {seconds:g} s, A and B", key, hop=hop, target=target)
                        say(f"hop {rate:,.0f} ev/s: added p50 {_pct(hop.added_ms, 0.5):.2f} ms, "
                            f"p99 {_pct(hop.added_ms, 0.99):.2f} ms, B {hop.b_per_s:,.0f} ev/s")
                        rows.append(row)
            lossy = [r for r in rows if r.fan is not None and _lossy(r.fan.stream)]
            if lossy:
                details = "; ".join(f"{r.scenario}: {json.dumps(r.fan.stream.as_dict())}" for r in lossy)  # type: ignore[union-attr]
                raise BenchFailure(f"events lost in {len(lossy)} fan-out row(s):\n{format_table(rows)}\n{details}")
        except Exception as exc:  # any error fails the run; the servers' logs are kept for the report
            kept = Path(tempfile.mkdtemp(prefix="routilux-cluster-bench-logs-"))
            for log_file in work.glob("*.log"):
                shutil.copy2(log_file, kept / log_file.name)
            raise BenchFailure(f"{type(exc).__name__}: {exc}\n(every server's log is kept in {kept})") from exc
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Routilux cluster benchmark (see the module docstring).")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes: 1,000 jobs; 20 clients at 300 ev/s for 3 s; hop 300 ev/s for 2 s")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON to FILE")
    parser.add_argument("--only", help="comma list of: post, fanout, hop (default all)")
    parser.add_argument("--jobs", type=int, help="jobs to POST per server (default 10,000)")
    parser.add_argument("--connections", type=int, help="client connections for POST (default 32)")
    parser.add_argument("--clients", type=int, help="WebSocket clients in the fan-out (default 50)")
    parser.add_argument("--rate", type=float, help="fan-out source, events/s (default 1,000)")
    parser.add_argument("--seconds", type=float, help="fan-out duration (default 10)")
    parser.add_argument("--capacity-rate", type=float, help="fan-out capacity rows, events/s offered (default 4,000; 0: none)")
    parser.add_argument("--capacity-seconds", type=float, help="their duration (default 4)")
    parser.add_argument("--hop-rate", type=float, help="hop source, events/s (default 500)")
    parser.add_argument("--hop-seconds", type=float, help="hop duration (default 5)")
    parser.add_argument("--hop-capacity-rate", type=float, help="second hop row, events/s (default 5,000; 0: none)")
    parser.add_argument("--hop-capacity-seconds", type=float, help="its duration (default 3)")
    parser.add_argument("--client-procs", type=int, help="fan-out client processes (default 1)")
    parser.add_argument("--quiet-wait", type=float, metavar="S",
                        help="wait up to S seconds for an idle machine before each measurement, and measure again "
                             "if other work ran meanwhile (default 30; 0 with --quick; 0 turns it off)")
    parser.add_argument("--ws-client", metavar="SPEC", help=argparse.SUPPRESS)  # internal: a client process
    args = parser.parse_args(argv)
    if args.ws_client:
        return ws_client_main(args.ws_client)
    if argv is None:  # the command line: a SIGTERM still stops every server this run started
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    settings = Settings.quick() if args.quick else Settings()
    for name in ("jobs", "connections", "clients", "rate", "seconds", "capacity_rate", "capacity_seconds", "hop_rate",
                 "hop_seconds", "hop_capacity_rate", "hop_capacity_seconds", "client_procs", "only", "quiet_wait"):
        if getattr(args, name) is not None:
            setattr(settings, name, getattr(args, name))
    from importlib.metadata import version

    print(f"Routilux cluster bench: {settings}, {os.cpu_count()} CPUs")
    print(wsb.sources_fingerprint())
    redis_version = subprocess.run([shutil.which("redis-server") or REDIS_BINARY, "--version"], check=False,
                                   capture_output=True, text=True).stdout.split(" sha")[0]
    print(f"{apib.versions()}, gunicorn {version('gunicorn')}, redis-py {version('redis')}, {redis_version}")
    print("×plain = jobs/s / the plain single-process SQLite server's; ×1w = the 2-worker figure / the 1-worker's; "
          "placement = connections held by each serving process; CPU = fraction of one core")
    print(machine_busy_line() + "\n")
    sys.stdout.flush()
    rows = run_bench(settings, log=lambda msg: print(f"  {msg}", flush=True))
    print()
    print(format_table(rows))
    print()
    for r in rows:
        if r.post is not None:
            p = r.post
            print(f"{r.scenario}: {p.posted_total:,} posted, all completed {p.seconds_to_completed:.2f} s after the first "
                  f"POST; connections per process {list(p.placement.values())} (reopened {p.reopened} time(s) to reach "
                  f"every worker); other CPU {p.cpu.cores('other'):.0%} ({p.attempts} attempt(s))")
        elif r.fan is not None:
            d = r.fan.stream.as_dict()
            print(f"{r.scenario}: {d['deliveries']:,}/{d['expected_deliveries']:,} delivered, clients per process "
                  f"{list(r.fan.per_worker.values())}, p90 {d['p90_ms']} ms, seq holes {d['seq_holes']:,}, gap frames "
                  f"{d['gap_frames']:,} naming {d['gap_named_events']:,}, closed by server {d['closed_by_server']}, "
                  f"timed out {d['clients_timed_out']}, longest silence {d['max_silence_ms']} ms, "
                  f"srv µs/deliv {d['server_us_per_delivery']} ({r.fan.attempts} attempt(s))")
        elif r.hop is not None:
            d = r.hop.as_dict()
            print(f"{r.scenario}: added latency min {d['added_min_ms']} p50 {d['added_p50_ms']} p90 {d['added_p90_ms']} "
                  f"p99 {d['added_p99_ms']} max {d['added_max_ms']} ms; publish->receipt A p99 {d['a_p99_ms']}, "
                  f"B p99 {d['b_p99_ms']} ms; GET /api/jobs/{{id}} x {FORWARD_SAMPLES} on A p50/p99 "
                  f"{d['get_job_local_p50_ms']}/{d['get_job_local_p99_ms']} ms, on B (forwarded to A) "
                  f"{d['get_job_forwarded_p50_ms']}/{d['get_job_forwarded_p99_ms']} ms ({r.hop.attempts} attempt(s))")
        commands = (r.post or r.fan or r.hop).redis_commands  # type: ignore[union-attr]
        if commands:
            print("    redis-server's busiest commands: " + ", ".join(
                f"{c['command']} {c['calls']:,} calls x {c['usec_per_call']} µs" for c in commands))
    if args.json:
        Path(args.json).write_text(json.dumps([r.as_dict() for r in rows], indent=2))
    missed = [r for r in rows if r.passed is False]
    if missed:
        print(f"\nMissed targets: {', '.join(r.scenario for r in missed)}")
        return 1 if args.check else 0
    print("\nAll checks passed (every row is informational but for zero loss).")
    return 0


if __name__ == "__main__":
    sys.exit(main())

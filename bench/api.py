"""HTTP API benchmark against real uvicorn processes (``make bench``; a bounded run is in ``make test``).

    python bench/api.py [--quick] [--check] [--json FILE] [--profile]
                        [--jobs N] [--duration S] [--list-duration S] [--connections N]
                        [--rounds N] [--quiet-wait S]

Two servers (three for row 4) run side by side on 127.0.0.1, each one uvicorn process with one worker, started as
``python -m uvicorn APP --http httptools --loop uvloop --log-level warning --no-access-log``:

- the baseline, ``bench/bare_app.py``: one Starlette route answering a constant dict shaped like
  a job view with ``JSONResponse`` (no middleware, no lookups);
- Routilux, ``routilux.api.main:app``, on a fresh SQLite file in a temporary folder.

The load generator (the same for both) runs in this process: an asyncio client on uvloop that
opens N keep-alive HTTP/1.1 connections (default 32), each sending one request, waiting for the
whole response and sending the next (no pipelining), for a fixed time or a fixed request count.
It records each request's latency (send to last byte) and status. Any non-2xx answer or broken
connection makes the run fail loudly (:class:`BenchFailure`). The table also shows the CPU each
side used, as a fraction of one core: the machine has 2 cores shared by server and client, and
a server at ~100% while the client is well below it means the server is the bottleneck.

Rows, in order (``×bare`` is the row's req/s divided by the bare endpoint's, same run; see
rows 1-3 for how):

1. ``bare Starlette GET /job``: the baseline.
2. ``GET /api/jobs/{id} (live job)``: a job held in memory (idle, started without
   ``complete_when_idle``). Target: >= 50% of the baseline's req/s.
3. ``GET /api/flows``: 10 stored flows (9 of five routines, the posted one of two); informational.
4. ``GET /api/jobs/{id} (live job), API key + rate limit on``: the same request to a third server,
   Routilux with ``ROUTILUX_API_KEY_ENABLED=true`` and ``ROUTILUX_RATE_LIMIT_ENABLED=true`` (limit
   1,000,000 a minute, so nothing is refused but every request is counted), sending the key.
   Target: >= 70% of row 2's req/s (its ``×open`` column; ``×bare`` as for the others).
   Rows 1-4 are measured ``--rounds`` times (default 5, 3 s each), interleaved; each row shows its
   median round, and its ratios are the medians of the per-round ratios (measured back to back),
   which cancels the slow drifts in speed a shared VM has.
5. ``POST /api/jobs``: ``--jobs`` jobs (default 10,000) of a two-routine flow (Mapper -> DataSink)
   with ``complete_when_idle: true`` and one entry item, so each job runs, goes idle and
   completes. Target: >= 1,000 jobs/s (201 responses per second).
6. ``POST /api/jobs, completed + history written``: informational — jobs/s from the first POST
   until the store lists every one of them as completed *and* has written all their events (the
   jobs finish and their history is written after the 201, so this is the sustained rate; the
   JSON has the time to "all completed" too). No job may fail or be cancelled.
7. ``GET /api/jobs?limit=100``: with every posted job stored (>= 10,000), one connection sending
   requests back to back for 10 s: the latency a client sees. Target: p99 <= 20 ms.
8. ``GET /api/jobs/{id} (stored job)``: informational — 500 of the oldest posted jobs, cycled;
   they left memory (the recorder keeps the last 1,000 finished jobs) and are read from SQLite.

The machine may be shared (other people's tests and benchmarks): before each measurement the
bench waits up to ``--quiet-wait`` seconds (default 30) for an idle machine, and measures again, up
to 3 times, when other processes took more than 15% of a core meanwhile (a repeated POST row posts
``--jobs`` more jobs, so the list row then has more stored jobs than asked). The ``other CPU``
column shows what was left; ``--quick`` turns this off.

``--check`` makes a missed target exit 1. ``--profile`` (automatic when a target is missed)
also runs the GET-job and POST scenarios against a server under cProfile and prints the top
functions of its event-loop thread.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import pstats
import sys
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import psutil

BENCH_DIR: Final[Path] = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from _common import BenchFailure, _render, _verdict, machine_busy_line
from _servers import ServerProcess, free_port

HOST: Final[str] = "127.0.0.1"  # never anything else

# Targets of the issue, for this 2-core machine.
TARGET_GET_JOB_RATIO: Final[float] = 0.50  # of the bare endpoint's req/s
TARGET_POST_JOBS_PER_S: Final[float] = 1_000.0
TARGET_LIST_P99_MS: Final[float] = 20.0
TARGET_SECURED_RATIO: Final[float] = 0.70  # auth + rate limiting on, of the same server with both off
BENCH_KEY: Final[str] = "bench-key-0123456789abcdef"
STORED_JOBS: Final[int] = 10_000  # jobs stored when GET /api/jobs?limit=100 is measured

POST_FLOW: Final[str] = "bench_post"
FLOWS: Final[int] = 10
STORED_SAMPLE: Final[int] = 500  # oldest posted jobs read back by id from the store
UVICORN_FLAGS: Final[tuple[str, ...]] = (
    "--http", "httptools", "--loop", "uvloop", "--log-level", "warning", "--no-access-log", "--lifespan", "on",
)


# ---------------------------------------------------------------------------------------------
# Server processes
# ---------------------------------------------------------------------------------------------
_PROFILE_BOOT = """\
import cProfile, signal, sys
import uvicorn.main
out, args = sys.argv[1], sys.argv[2:]
# uvicorn re-raises the signal that stopped it once it has shut down; with the default handler
# that would kill the process before the profile is written.
signal.signal(signal.SIGTERM, lambda *_: None)
profiler = cProfile.Profile()
profiler.enable()
try:
    uvicorn.main.main(args, standalone_mode=False)
finally:
    profiler.disable()
    profiler.dump_stats(out)
"""


class Server(ServerProcess):
    """One uvicorn process serving ``app`` on a free loopback port; stopped by :meth:`stop`."""

    def __init__(
        self,
        name: str,
        app: str,
        *,
        ready_path: str,
        workdir: Path,
        env: dict[str, str] | None = None,
        app_dir: Path | None = None,
        profile_to: Path | None = None,
    ) -> None:
        port = free_port()
        self.profile_to = profile_to
        args = [app, "--host", HOST, "--port", str(port), *UVICORN_FLAGS]
        if app_dir is not None:
            args += ["--app-dir", str(app_dir)]
        if profile_to is None:
            argv = [sys.executable, "-m", "uvicorn", *args]
        else:
            argv = [sys.executable, "-c", _PROFILE_BOOT, str(profile_to), *args]
        # The server sees no ROUTILUX_* variable of ours (API keys, rate limits...) but its own.
        base = {k: v for k, v in os.environ.items() if not k.startswith("ROUTILUX_")}
        super().__init__(name, port, argv, {**base, **(env or {})}, ready_path, workdir / f"{name}.{port}.log")

    def rss_mb(self) -> float:
        return self.rss_bytes() / 1e6


def bare_server(workdir: Path) -> Server:
    return Server("bare", "bare_app:app", ready_path="/job", workdir=workdir, app_dir=BENCH_DIR)


def routilux_server(workdir: Path, *, profile_to: Path | None = None, secured: bool = False) -> Server:
    """Routilux; ``secured``: API key and rate limiting on (a limit nobody reaches)."""
    name = "routilux" if profile_to is None else f"routilux-profiled-{profile_to.stem}"
    name += "-secured" if secured else ""
    db = workdir / f"{name}.db"
    # Retention off: a repeated POST measurement waits for every posted job to be listed as
    # completed, which the default (keep 10,000 finished jobs) would never let happen.
    env = {"ROUTILUX_DB": str(db), "ROUTILUX_API_RELOAD": "false", "ROUTILUX_LOG_LEVEL": "warning",
           "ROUTILUX_JOBS_KEEP": "100000000"}
    if secured:
        env |= {"ROUTILUX_API_KEY_ENABLED": "true", "ROUTILUX_API_KEY": BENCH_KEY,
                "ROUTILUX_RATE_LIMIT_ENABLED": "true", "ROUTILUX_RATE_LIMIT_PER_MINUTE": "1000000"}
        return Server(name, "routilux.api.main:app", ready_path="/api/health/live", workdir=workdir, env=env)
    return Server(name, "routilux.api.main:app", ready_path="/api/health", workdir=workdir, env=env,
                  profile_to=profile_to)


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
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        k = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))  # nearest rank
        return ordered[k] * 1e3


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


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


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
        with asyncio.Runner(loop_factory=_new_loop) as runner:
            runner.run(_run_load(server.port, requests, connections, warmup, None))
    cpu_server, cpu_client, cpu_all = server.cpu_seconds(), time.process_time(), _machine_busy()
    with asyncio.Runner(loop_factory=_new_loop) as runner:
        load = runner.run(_run_load(server.port, requests, connections, duration, count))
    load.server_cpu = server.cpu_seconds() - cpu_server
    load.client_cpu = time.process_time() - cpu_client
    load.other_cpu = max(0.0, _machine_busy() - cpu_all - load.server_cpu - load.client_cpu)
    return load


def wait_quiet(limit: float, busy_percent: float = 10.0) -> bool:
    """Wait until the whole machine is below ``busy_percent`` over half a second, or ``limit`` s."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if psutil.cpu_percent(interval=0.5) < busy_percent:
            return True
    return False


def _machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all cores, all processes)."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)


# ---------------------------------------------------------------------------------------------
# Rows and the table
# ---------------------------------------------------------------------------------------------
@dataclass
class Row:
    scenario: str
    key: str  # short stable name: bare, get_job, flows, post, post_completed, list, stored_job
    load: Load | None = None
    baseline: Row | None = None
    target: str = ""
    passed: bool | None = None  # None: informational
    rate: float | None = None  # overrides load.rps (the sustained POST row)
    paired_ratio: float | None = None  # overrides rps / baseline rps (median of per-round ratios)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        if self.rate is not None:
            return self.rate
        return self.load.rps if self.load is not None else 0.0

    @property
    def ratio(self) -> float | None:
        if self.paired_ratio is not None:
            return self.paired_ratio
        if self.baseline is None or not self.baseline.rps:
            return None
        return self.rps / self.baseline.rps

    def as_dict(self) -> dict[str, Any]:
        load = self.load
        out: dict[str, Any] = {"scenario": self.scenario, "key": self.key, "req_per_s": round(self.rps, 1)}
        if load is not None:
            out |= {
                "connections": load.connections,
                "requests": load.requests,
                "seconds": round(load.seconds, 3),
                "p50_ms": round(load.percentile_ms(0.50), 3),
                "p99_ms": round(load.percentile_ms(0.99), 3),
                "max_ms": round(max(load.latencies) * 1e3, 3) if load.latencies else 0.0,
                "errors": load.errors,
                "statuses": {str(k): v for k, v in sorted(load.statuses.items())},
                "server_cpu_cores": round(load.server_cpu / load.seconds, 3) if load.seconds else 0.0,
                "client_cpu_cores": round(load.client_cpu / load.seconds, 3) if load.seconds else 0.0,
                "other_cpu_cores": round(load.other_cpu / load.seconds, 3) if load.seconds else 0.0,
                "attempts": load.attempts,
            }
        ratio = self.ratio
        out |= {
            "ratio_vs_bare": None if ratio is None else round(ratio, 3),
            "target": self.target,
            "passed": self.passed,
            **self.extra,
        }
        return out


def format_table(rows: list[Row]) -> str:
    lines: list[tuple[str, ...]] = [
        ("scenario", "conns", "requests", "req/s", "p50 ms", "p99 ms", "×bare", "srv CPU", "cli CPU", "other CPU",
         "errors", "target", "result")
    ]
    for r in rows:
        load = r.load
        ratio = r.ratio
        if load is not None and r.rate is None:
            cells = (
                str(load.connections),
                f"{load.requests:,}",
                f"{r.rps:,.0f}",
                f"{load.percentile_ms(0.50):.2f}",
                f"{load.percentile_ms(0.99):.2f}",
            )
            cpu = tuple(f"{c / load.seconds:.0%}" for c in (load.server_cpu, load.client_cpu, load.other_cpu))
            cpu += (str(load.errors),)
        else:
            cells = ("—", f"{r.extra.get('jobs', 0):,}", f"{r.rps:,.0f}", "—", "—")
            cpu = ("—", "—", "—", "—")
        target = r.target or "—"
        if "ratio_vs_open" in r.extra:
            target += f" (is {r.extra['ratio_vs_open']:.0%})"
        lines.append((r.scenario, *cells, "—" if ratio is None else f"{ratio:.2f}", *cpu, target, _verdict(r.passed)))
    return "\n".join(_render(lines, {0, 11, 12}))


def _checked(scenario: str, load: Load) -> Load:
    """Every answer 2xx and no broken connection, or the run fails loudly."""
    if load.errors or load.requests == 0:
        raise BenchFailure(
            f"{scenario}: {load.requests} answers, statuses {dict(load.statuses)}, {load.broken} broken; "
            f"first problems: {load.examples}"
        )
    return load


# ---------------------------------------------------------------------------------------------
# Seeding Routilux through its API
# ---------------------------------------------------------------------------------------------
def _flow_dicts() -> list[dict[str, Any]]:
    """``bench_post`` (Mapper -> DataSink, for the jobs) and nine ETL-like flows of five routines."""
    flows = [
        {
            "flow_id": POST_FLOW,
            "description": "benchmark: map one item, keep it",
            "routines": {
                "map": {"class": "Mapper", "config": {"mapping": {"n": "n"}}},
                "sink": {"class": "DataSink"},
            },
            "connections": [{"from": "map.output", "to": "sink.input"}],
        }
    ]
    for k in range(1, FLOWS):
        flows.append(
            {
                "flow_id": f"bench_etl_{k}",
                "description": "Validate incoming records, upper-case the good ones, keep both kinds.",
                "routines": {
                    "source": {"class": "DataSource"},
                    "validate": {"class": "DataValidator", "config": {"type": "string", "min_length": 1}},
                    "transform": {"class": "DataTransformer", "config": {"transformation": "upper"}},
                    "kept": {"class": "DataSink"},
                    "rejected": {"class": "DataSink"},
                },
                "connections": [
                    {"from": "source.output", "to": "validate.input"},
                    {"from": "validate.valid", "to": "transform.input"},
                    {"from": "validate.invalid", "to": "rejected.input"},
                    {"from": "transform.output", "to": "kept.input"},
                ],
            }
        )
    return flows


def _expect(response: httpx.Response, status: int, what: str) -> Any:
    if response.status_code != status:
        raise BenchFailure(f"{what}: expected {status}, got {response.status_code}: {response.text[:500]}")
    return response.json() if response.content else None


def seed_routilux(server: Server, key: str | None = None) -> str:
    """Create the flows and one live (idle) job; return that job's id."""
    headers = {"X-API-Key": key} if key else {}
    with httpx.Client(base_url=server.url, timeout=30, headers=headers) as client:
        for flow in _flow_dicts():
            _expect(client.post("/api/flows", json={"dsl_dict": flow}), 201, f"create flow {flow['flow_id']}")
        flows = _expect(client.get("/api/flows"), 200, "list flows")
        if flows["total"] != FLOWS or not all(f["runnable"] for f in flows["flows"]):
            raise BenchFailure(f"flows not stored as expected: {flows}")
        job = _expect(client.post("/api/jobs", json={"flow_id": POST_FLOW}), 201, "start the live job")
        view = _expect(client.get(f"/api/jobs/{job['job_id']}"), 200, "read the live job")
        if view["job_id"] != job["job_id"] or view["status"] not in ("running", "idle"):
            raise BenchFailure(f"the live job looks wrong: {view}")
        return str(job["job_id"])


def post_body() -> dict[str, Any]:
    return {
        "flow_id": POST_FLOW,
        "complete_when_idle": True,
        "entry": {"routine_id": "map", "slot_name": "input", "data": {"n": 1}},
    }


def wait_completed(server: Server, expected: int, timeout: float) -> float:
    """Poll until the store lists ``expected`` completed jobs of the post flow; return when."""
    deadline = time.monotonic() + timeout
    query = {"flow_id": POST_FLOW, "limit": 1}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        while True:
            done = _expect(client.get("/api/jobs", params={**query, "status": "completed"}), 200, "count")["total"]
            if done >= expected:
                now = time.perf_counter()
                break
            if time.monotonic() > deadline:
                raise BenchFailure(f"only {done} of {expected} posted jobs completed within {timeout:.0f}s")
            time.sleep(0.02)
        for status in ("failed", "cancelled"):
            bad = _expect(client.get("/api/jobs", params={**query, "status": status}), 200, "count")["total"]
            if bad:
                raise BenchFailure(f"{bad} posted job(s) ended {status}")
    return now


def flush_history(server: Server, job_id: str) -> float:
    """Return once the store has written everything published so far (the events endpoint flushes
    the store's write queue before reading), so the next measurement runs on a quiet server."""
    with httpx.Client(base_url=server.url, timeout=300) as client:
        _expect(client.get(f"/api/jobs/{job_id}/events", params={"limit": 1}), 200, "flush the store")
    return time.perf_counter()


def oldest_job_ids(server: Server, posted: int, n: int) -> list[str]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        page = _expect(
            client.get("/api/jobs", params={"flow_id": POST_FLOW, "status": "completed", "limit": n,
                                            "offset": max(0, posted - n)}),
            200,
            "oldest jobs",
        )
    return [j["job_id"] for j in page["jobs"]]


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------
@dataclass
class Settings:
    jobs: int = STORED_JOBS
    duration: float = 3.0  # each timed GET measurement
    list_duration: float = 10.0  # GET /api/jobs?limit=100, one connection (p99 needs samples)
    warmup: float = 0.5
    connections: int = 32
    rounds: int = 5
    #: Shared machine: before each measurement wait up to this many seconds for an idle machine,
    #: and measure again (up to ``attempts`` times) if other work took more than ``max_other``
    #: of a core meanwhile. 0 turns both off (the quick run, CI).
    quiet_wait: float = 30.0
    attempts: int = 3
    max_other: float = 0.15

    @classmethod
    def quick(cls) -> Settings:
        return cls(jobs=2_000, duration=1.5, list_duration=1.5, warmup=0.3, connections=32, rounds=1,
                   quiet_wait=0.0)


def _median_load(loads: list[Load]) -> Load:
    """The round with the median req/s (the lower middle one for an even count)."""
    return sorted(loads, key=lambda load: load.rps)[(len(loads) - 1) // 2]


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _noisy(load: Load, settings: Settings) -> bool:
    return load.seconds > 0 and load.other_cpu / load.seconds > settings.max_other


def _measured(scenario: str, settings: Settings, run: Callable[[], Load]) -> Load:
    """``run()`` once; with ``quiet_wait`` set, again (up to ``attempts``) while other work on the
    machine took more than ``max_other`` of a core during it. Every attempt must be error-free."""
    load = _checked(scenario, run())
    tries = 1
    while settings.quiet_wait > 0 and tries < settings.attempts and _noisy(load, settings):
        load = _checked(scenario, run())
        tries += 1
    load.attempts = tries
    return load


def run_bench(settings: Settings, workdir: Path | None = None, log: Any = None) -> list[Row]:
    """Start both servers, run every scenario, stop the servers; return the rows."""
    say = log or (lambda _msg: None)
    s = settings
    with tempfile.TemporaryDirectory(prefix="routilux-api-bench-") as tmp:
        work = workdir or Path(tmp)
        with bare_server(work) as bare, routilux_server(work) as rx, routilux_server(work, secured=True) as sec:
            say(f"servers up: bare on {bare.url}, routilux on {rx.url}, secured routilux on {sec.url}")
            live_id = seed_routilux(rx)
            secured_id = seed_routilux(sec, BENCH_KEY)
            timed = {"connections": s.connections, "duration": s.duration, "warmup": s.warmup,
                     "quiet_wait": s.quiet_wait}

            def timed_load(server: Server, requests: list[bytes], scenario: str) -> Load:
                return _measured(scenario, s, lambda: run_load(server, requests, **timed))

            bare_req = [get("/job", bare.port)]
            job_req = [get(f"/api/jobs/{live_id}", rx.port)]
            flows_req = [get("/api/flows", rx.port)]
            bares: list[Load] = []
            jobs: list[Load] = []
            flows: list[Load] = []
            secured_req = [get(f"/api/jobs/{secured_id}", sec.port, BENCH_KEY)]
            secureds: list[Load] = []
            for round_ in range(s.rounds):
                bares.append(timed_load(bare, bare_req, "bare GET"))
                jobs.append(timed_load(rx, job_req, "GET job"))
                secureds.append(timed_load(sec, secured_req, "GET job, secured"))
                flows.append(timed_load(rx, flows_req, "GET flows"))
                say(f"round {round_ + 1}: bare {bares[-1].rps:,.0f}, job {jobs[-1].rps:,.0f}, "
                    f"secured job {secureds[-1].rps:,.0f}, flows {flows[-1].rps:,.0f} req/s")
            # Each row shows its median round; the ratios are the medians of the per-round ratios
            # (bare and Routilux measured back to back), which cancel slow drifts of the machine.
            base = Row("bare Starlette GET /job", "bare", _median_load(bares))
            job_row = Row("GET /api/jobs/{id} (live job)", "get_job", _median_load(jobs), baseline=base,
                          target=f">= {TARGET_GET_JOB_RATIO:.0%} of bare req/s",
                          paired_ratio=_median([j.rps / b.rps for j, b in zip(jobs, bares, strict=True)]))
            job_row.passed = (job_row.ratio or 0.0) >= TARGET_GET_JOB_RATIO
            flows_row = Row(f"GET /api/flows ({FLOWS} flows)", "flows", _median_load(flows), baseline=base,
                            paired_ratio=_median([f.rps / b.rps for f, b in zip(flows, bares, strict=True)]))
            secured_row = Row("GET /api/jobs/{id} (live job), API key + rate limit on", "get_job_secured",
                              _median_load(secureds), baseline=base,
                              target=f">= {TARGET_SECURED_RATIO:.0%} of the open server's req/s",
                              paired_ratio=_median([x.rps / b.rps for x, b in zip(secureds, bares, strict=True)]))
            vs_open = _median([x.rps / j.rps for x, j in zip(secureds, jobs, strict=True)])
            secured_row.extra["ratio_vs_open"] = round(vs_open, 3)
            secured_row.extra["rounds_ratio_vs_open"] = [round(x.rps / j.rps, 3) for x, j in zip(secureds, jobs, strict=True)]
            secured_row.passed = vs_open >= TARGET_SECURED_RATIO
            for row, loads in ((base, bares), (job_row, jobs), (secured_row, secureds), (flows_row, flows)):
                row.extra["rounds_req_per_s"] = [round(load.rps, 1) for load in loads]
                if row.baseline is not None:
                    row.extra["rounds_ratio"] = [round(x.rps / b.rps, 3) for x, b in zip(loads, bares, strict=True)]

            # POST /api/jobs: `jobs` jobs, then wait until the store has them all completed and
            # has written their history. A retry (noisy machine) posts `jobs` more.
            posted_total = 0
            marks: dict[str, float] = {}

            def post_batch() -> Load:
                nonlocal posted_total
                if posted_total:
                    wait_quiet(s.quiet_wait)
                marks["t0"] = time.perf_counter()
                load = run_load(rx, [post("/api/jobs", rx.port, post_body())], connections=s.connections,
                                count=s.jobs, quiet_wait=s.quiet_wait if not posted_total else 0.0)
                posted_total += load.statuses.get(201, 0)
                if load.statuses.get(201) != s.jobs:
                    raise BenchFailure(f"POST /api/jobs: expected {s.jobs} answers 201, got {dict(load.statuses)}")
                marks["done"] = wait_completed(rx, posted_total, timeout=120 + s.jobs * 0.05)
                marks["written"] = flush_history(rx, live_id)
                return load

            rss_before = rx.rss_mb()
            posted = _measured("POST jobs", s, post_batch)
            t0, t_done, t_written = marks["t0"], marks["done"], marks["written"]
            post_row = Row("POST /api/jobs", "post", posted, baseline=base,
                           target=f">= {TARGET_POST_JOBS_PER_S:,.0f} jobs/s")
            post_row.passed = post_row.rps >= TARGET_POST_JOBS_PER_S
            sustained = Row("POST /api/jobs, completed + history written", "post_completed",
                            rate=s.jobs / (t_written - t0), baseline=base,
                            extra={"jobs": s.jobs, "seconds_to_all_completed": round(t_done - t0, 3),
                                   "seconds_to_history_written": round(t_written - t0, 3),
                                   "server_rss_mb_before": round(rss_before, 1),
                                   "server_rss_mb_after": round(rx.rss_mb(), 1)})
            say(f"posted {s.jobs:,} jobs at {posted.rps:,.0f}/s; all completed after {t_done - t0:.2f}s, "
                f"their history written after {t_written - t0:.2f}s")

            # GET /api/jobs?limit=100 with every posted job stored: latency at one connection.
            with httpx.Client(base_url=rx.url, timeout=30) as client:
                page = _expect(client.get("/api/jobs", params={"limit": 100}), 200, "list jobs")
            if len(page["jobs"]) != 100 or page["total"] < posted_total:
                raise BenchFailure(f"GET /api/jobs?limit=100: {len(page['jobs'])} jobs, total {page['total']}")
            listed = _measured(
                "GET jobs list",
                s,
                lambda: run_load(rx, [get("/api/jobs?limit=100", rx.port)], connections=1, duration=s.list_duration,
                                 warmup=s.warmup, quiet_wait=s.quiet_wait),
            )
            list_row = Row(f"GET /api/jobs?limit=100 ({page['total']:,} stored)", "list", listed, baseline=base,
                           target=f"p99 <= {TARGET_LIST_P99_MS:g} ms")
            list_row.passed = listed.percentile_ms(0.99) <= TARGET_LIST_P99_MS
            list_row.extra["stored_jobs"] = page["total"]

            # GET /api/jobs/{id} of jobs that left memory (read from SQLite): informational.
            old = oldest_job_ids(rx, posted_total, STORED_SAMPLE)
            stored = timed_load(rx, [get(f"/api/jobs/{j}", rx.port) for j in old], "GET stored job")
            stored_row = Row(f"GET /api/jobs/{{id}} (stored job, {len(old)} ids)", "stored_job", stored, baseline=base)
            for name, server in (("bare", bare), ("routilux", rx), ("secured routilux", sec)):
                if server.process is not None and server.process.poll() is not None:
                    raise BenchFailure(f"the {name} server died during the run:\n{server.output()}")
        return [base, job_row, flows_row, secured_row, post_row, sustained, list_row, stored_row]


def profile_server(settings: Settings, top: int = 25) -> str:
    """cProfile (event-loop thread) of a Routilux server under the GET-job and the POST load."""
    out: list[str] = []
    with tempfile.TemporaryDirectory(prefix="routilux-api-profile-") as tmp:
        work = Path(tmp)
        for label in ("get_job", "post_jobs"):
            prof = work / f"{label}.prof"
            server = routilux_server(work, profile_to=prof)
            with server:
                live_id = seed_routilux(server)
                if label == "get_job":
                    load = run_load(server, [get(f"/api/jobs/{live_id}", server.port)],
                                    connections=settings.connections, duration=settings.duration)
                else:
                    load = run_load(server, [post("/api/jobs", server.port, post_body())],
                                    connections=settings.connections, count=min(settings.jobs, 5_000))
                    wait_completed(server, load.statuses.get(201, 0), timeout=300)
            text = _stats_text(prof, top)
            out.append(
                f"cProfile of the server's event-loop thread, {label}: {load.requests:,} requests at "
                f"{load.rps:,.0f} req/s under the profiler (errors {load.errors})\n{text}"
            )
    return "\n".join(out)


def _stats_text(path: Path, top: int) -> str:
    import io

    if not path.exists():
        return "(no profile written)"
    buf = io.StringIO()
    for order in ("tottime", "cumulative"):
        buf.write(f"\n--- top {top} by {order} ---\n")
        pstats.Stats(str(path), stream=buf).strip_dirs().sort_stats(order).print_stats(top)
    return buf.getvalue()


def fingerprint() -> str:
    import routilux

    root = Path(routilux.__file__).resolve().parent
    digest = hashlib.sha1()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return f"routilux {routilux.__version__}, sources sha1 {digest.hexdigest()[:12]} ({root})"


def versions() -> str:
    from importlib.metadata import version

    names = ("uvicorn", "starlette", "httptools", "uvloop", "msgspec")
    return ", ".join(f"{n} {version(n)}" for n in names) + f", python {sys.version.split()[0]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Routilux HTTP API benchmark (see the module docstring).")
    parser.add_argument("--quick", action="store_true", help="small sizes (2,000 jobs, 1.5 s per scenario)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON to FILE")
    parser.add_argument("--profile", action="store_true", help="also cProfile the server under GET job and POST")
    parser.add_argument("--jobs", type=int, help=f"jobs to POST (and stored when listing; default {STORED_JOBS:,})")
    parser.add_argument("--duration", type=float, help="seconds per timed GET measurement (default 3)")
    parser.add_argument("--list-duration", type=float, help="seconds of the GET /api/jobs?limit=100 row (default 10)")
    parser.add_argument("--connections", type=int, help="client connections (default 32)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds of the GET rows; medians kept (default 5)")
    parser.add_argument("--quiet-wait", type=float, metavar="S",
                        help="wait up to S seconds for an idle machine before each measurement, and measure "
                             "again if other work ran meanwhile (default 30; 0 with --quick; 0 turns it off)")
    args = parser.parse_args(argv)

    settings = Settings.quick() if args.quick else Settings()
    for name in ("jobs", "duration", "list_duration", "connections", "rounds", "quiet_wait"):
        if getattr(args, name) is not None:
            setattr(settings, name, getattr(args, name))

    print(f"Routilux API bench: {settings.jobs:,} jobs, {settings.duration:g} s per timed GET, "
          f"{settings.connections} connections, {settings.rounds} round(s), {os.cpu_count()} CPUs")
    print(fingerprint())
    print(versions())
    print(f"uvicorn {' '.join(UVICORN_FLAGS)}, one worker each, on {HOST}; client: asyncio/uvloop in this process, "
          "keep-alive, one request in flight per connection")
    print("×bare = req/s of the row / req/s of the bare Starlette endpoint; CPU = fraction of one core "
          "(other = every other process on the machine)")
    print(machine_busy_line() + "\n")
    sys.stdout.flush()

    rows = run_bench(settings, log=lambda msg: print(f"  {msg}", flush=True))
    print()
    print(format_table(rows))
    for r in rows:
        if r.load is not None and _noisy(r.load, settings):
            print(f"note: other work on the machine took {r.load.other_cpu / r.load.seconds:.0%} of a core during "
                  f"'{r.scenario}' ({r.load.attempts} attempt(s)); that figure is pessimistic")
    if args.json:
        meta = {"fingerprint": fingerprint(), "versions": versions(), "settings": settings.__dict__}
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": [r.as_dict() for r in rows]}, indent=2))

    missed = [r for r in rows if r.passed is False]
    if args.profile or missed:
        print()
        print(profile_server(settings))
    if missed:
        print(f"\nMissed targets: {', '.join(r.scenario for r in missed)}")
        return 1 if args.check else 0
    print("\nAll targets met.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

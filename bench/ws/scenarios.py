"""The WebSocket bench's scenarios: a paced or capacity stream to many clients (:func:`run_stream`)
and idle connections (:func:`run_idle`), with what each measured.
"""

from __future__ import annotations

import math
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.processes import machine_busy_seconds

from bench.report import BenchFailure, percentile
from bench.report import expect_status as _expect
from bench.ws.frames import FLOW_ID, ROUTINE_ID, WARMUP_CONNECTIONS
from bench.ws.servers import ClientProc, Server, _split


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
        return percentile(self.sorted_ms, q)

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
        cpu_server, busy = server.cpu_seconds(), machine_busy_seconds()
        t0 = time.perf_counter()
        trigger(server, job_id, rate, n)
        for w in workers:
            w.expect_line("DONE", spec["deadline"] + 30)
        stream.wall = time.perf_counter() - t0
        stream.server_cpu = server.cpu_seconds() - cpu_server
        total_busy = machine_busy_seconds() - busy
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



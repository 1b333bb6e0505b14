"""The fan-out bench's scenarios (see :mod:`bench.fanout`): the burst to readers and sleepers, and
never-reading sockets alone; the health prober and RSS sampler that run beside them."""

from __future__ import annotations

import http.client
import json
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from bench.report import BenchFailure, Table, percentile, sources_fingerprint, verdict
from bench.report import expect_status as _expect
from bench.server import HOST
from bench.ws.scenarios import _http, end_job, new_job, setup_routilux
from bench.ws.servers import ClientProc, Server

TARGET_HEALTH_P99_MS: Final[float] = 250.0
TARGET_JOB_SECONDS: Final[float] = 1.0
TARGET_RSS_MB: Final[float] = 200.0
TARGET_SLEEPER_KB: Final[float] = 100.0
CLIENT_TIMEOUT: Final[float] = 300.0  # connect, and then each wait for the streams to end
#: The sleepers read again once the readers are done, or this long after the job is: uvicorn's
#: own keepalive closes a socket that has not answered a ping 40 s after it opened (20 s interval
#: + 20 s timeout), and the sleepers' client then still has the whole burst to parse before it.
SLEEP_AT_MOST: Final[float] = 5.0


@dataclass
class Settings:
    readers: int = 500
    sleepers: int = 500
    events: int = 10_000
    only: str = "burst,sleepers"

    @classmethod
    def quick(cls) -> Settings:
        return cls(readers=100, sleepers=100, events=2_000)


class Clients(ClientProc):
    ENTRY = ("-m", "bench.fanout", "--worker")

    def report(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.out.read_text())
        return result


class Prober(threading.Thread):
    """``GET /api/health`` then ``GET /api/health/live``, back to back (``pause`` s between
    rounds), and the server's RSS, until stopped. Health reads the store (a worker thread, the
    GIL); live answers from the event loop alone: the two apart tell a busy loop from a slow
    store read."""

    PATHS = ("/api/health", "/api/health/live")

    def __init__(self, server: Server, pause: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.pause = pause
        self.samples: dict[str, list[tuple[float, float]]] = {path: [] for path in self.PATHS}  # (start, s)
        self.peak_rss = 0
        self.failures = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection(HOST, self.server.port, timeout=120)
        while not self._stop_event.is_set():
            self.peak_rss = max(self.peak_rss, self.server.rss())
            for path in self.PATHS:
                start = time.perf_counter()
                try:
                    conn.request("GET", path)
                    response = conn.getresponse()
                    response.read()
                    ok = response.status == 200
                except (OSError, http.client.HTTPException):
                    ok = False
                    conn.close()
                    conn = http.client.HTTPConnection(HOST, self.server.port, timeout=120)
                self.samples[path].append((start, time.perf_counter() - start))
                self.failures += not ok
            self._stop_event.wait(self.pause)
        conn.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(130)

    def slowest(self, since: float, until: float, n: int = 5) -> list[tuple[float, float]]:
        """The ``n`` slowest health probes in the window: (seconds after ``since``, ms)."""
        inside = [(t - since, s * 1e3) for t, s in self.samples[self.PATHS[0]] if since <= t <= until]
        return [(round(t, 2), round(ms)) for t, ms in sorted(inside, key=lambda p: -p[1])[:n]]

    def latencies_ms(self, since: float, until: float, path: str = PATHS[0]) -> list[float]:
        return sorted(s * 1e3 for t, s in self.samples[path] if since <= t <= until)


@dataclass
class Burst:
    readers: int
    sleepers: int
    events: int
    job_seconds: float = 0.0  # trigger -> the ticker's routine_end (server clock)
    idle_seen_seconds: float = 0.0  # trigger -> GET .../status said idle
    delivery_seconds: float = 0.0  # trigger -> every reader has its job_end
    health_ms: list[float] = field(default_factory=list)
    live_ms: list[float] = field(default_factory=list)  # GET /api/health/live, the same window
    health_failures: int = 0
    rss_before: int = 0
    rss_connected: int = 0
    rss_peak: int = 0
    rss_after: int = 0
    slowest_probes: list[tuple[float, float]] = field(default_factory=list)
    sleepers_resumed_late: bool = False  # the readers were not done SLEEP_AT_MOST s after the trigger
    reader_report: dict[str, Any] = field(default_factory=dict)
    sleeper_report: dict[str, Any] = field(default_factory=dict)

    @property
    def rss_growth_mb(self) -> float:
        return (max(self.rss_peak, self.rss_after) - self.rss_before) / 1e6

    @property
    def health_p99(self) -> float:
        return percentile(self.health_ms, 0.99)

    def consistent(self) -> bool:
        reports = [r for r in (self.reader_report, self.sleeper_report) if r]
        return all(r["inconsistent"] == 0 and r["unfinished"] == 0 and not set(r["closed_by_server"]) - {"1013"}
                   for r in reports)

    def as_dict(self) -> dict[str, Any]:
        return {
            "readers": self.readers, "sleepers": self.sleepers, "events": self.events,
            "job_seconds": round(self.job_seconds, 3), "idle_seen_seconds": round(self.idle_seen_seconds, 3),
            "delivery_seconds": round(self.delivery_seconds, 3),
            "health_probes": len(self.health_ms), "health_failures": self.health_failures,
            "health_p50_ms": round(percentile(self.health_ms, 0.5), 1),
            "health_p99_ms": round(self.health_p99, 1),
            "health_max_ms": round(self.health_ms[-1], 1) if self.health_ms else None,
            "live_p99_ms": round(percentile(self.live_ms, 0.99), 1),
            "live_max_ms": round(self.live_ms[-1], 1) if self.live_ms else None,
            "slowest_probes_s_ms": self.slowest_probes,
            "sleepers_resumed_before_readers_done": self.sleepers_resumed_late,
            "rss_mb": {"before": round(self.rss_before / 1e6, 1), "connected": round(self.rss_connected / 1e6, 1),
                       "peak": round(self.rss_peak / 1e6, 1), "after": round(self.rss_after / 1e6, 1)},
            "readers_report": self.reader_report, "sleepers_report": self.sleeper_report,
        }


def _trigger(server: Server, job_id: str, n: int) -> None:
    with _http() as client:
        _expect(client.post(f"{server.url}/api/jobs/{job_id}/post",
                            json={"routine_id": "ticker", "slot_name": "start", "data": {"rate": 1e9, "n": n}}),
                202, "start the ticker")


def _burst_end(server: Server, job_id: str) -> float:
    """When the ticker's run ended, by the server's clock (its last ``routine_end``): the job's
    own account of its time, free of how long the status polls took to be answered."""
    with _http() as client:
        trace = _expect(client.get(f"{server.url}/api/jobs/{job_id}/trace", params={"limit": 10_000}), 200,
                        "job trace")["trace"]
    ends = [e["timestamp"] for e in trace if e["type"] == "routine_end" and e["routine_id"] == "ticker"]
    if not ends:
        raise BenchFailure(f"job {job_id}: no routine_end of the ticker in its trace")
    return datetime.fromisoformat(ends[-1].replace("Z", "+00:00")).timestamp()


def _wait_idle(server: Server, job_id: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with _http() as client:
        while time.monotonic() < deadline:
            status = _expect(client.get(f"{server.url}/api/jobs/{job_id}/status"), 200, "job status")["status"]
            if status == "idle":
                return
            time.sleep(0.01)
    raise BenchFailure(f"job {job_id} was not idle {timeout:.0f}s after the trigger")


def _settled_rss(server: Server, seconds: float = 1.0) -> int:
    end = time.monotonic() + seconds
    last = server.rss()
    while time.monotonic() < end:
        time.sleep(0.2)
        last = server.rss()
    return last


def run_burst(server: Server, work: Path, readers: int, sleepers: int, events: int, say: Any) -> Burst:
    """Open the sockets, trigger the burst, measure, then let the sleepers read; see the module doc."""
    burst = Burst(readers=readers, sleepers=sleepers, events=events)
    job_id = new_job(server)
    path = f"/api/ws/jobs/{job_id}/monitor"
    spec = {"port": server.port, "path": path, "timeout": CLIENT_TIMEOUT}
    burst.rss_before = _settled_rss(server, 0.6)
    procs: list[Clients] = []
    try:
        reading = Clients({**spec, "clients": readers, "sleepers": False}, work, 0) if readers else None
        sleeping = Clients({**spec, "clients": sleepers, "sleepers": True}, work, 1) if sleepers else None
        procs = [p for p in (reading, sleeping) if p is not None]
        for p in procs:
            p.expect_line("READY", CLIENT_TIMEOUT + 10)
        burst.rss_connected = _settled_rss(server, 0.6)
        say(f"{readers} readers and {sleepers} sleepers connected; RSS {burst.rss_before / 1e6:.0f} -> "
            f"{burst.rss_connected / 1e6:.0f} MB")
        prober = Prober(server)
        prober.start()
        try:
            t0, wall0 = time.perf_counter(), time.time()
            _trigger(server, job_id, events)
            _wait_idle(server, job_id, CLIENT_TIMEOUT)
            burst.idle_seen_seconds = time.perf_counter() - t0
            burst.job_seconds = _burst_end(server, job_id) - wall0
            say(f"job done {burst.job_seconds:.2f}s after the trigger (seen idle after {burst.idle_seen_seconds:.2f}s)")
            end_job(server, job_id)
            resumed = False
            if reading is not None:
                left = SLEEP_AT_MOST
                try:
                    reading.expect_line("DONE", max(0.1, left) if sleeping is not None else CLIENT_TIMEOUT + 30)
                except BenchFailure:
                    if sleeping is None:
                        raise
                    sleeping.tell("RESUME")  # the readers are slow: wake the sleepers before uvicorn closes them
                    resumed = True
                    reading.expect_line("DONE", CLIENT_TIMEOUT + 30)
            t_end = time.perf_counter()
            burst.delivery_seconds = t_end - t0
            burst.rss_after = _settled_rss(server, 1.0)
            if sleeping is not None:
                if not resumed:
                    sleeping.tell("RESUME")
                sleeping.expect_line("DONE", CLIENT_TIMEOUT + 30)
                burst.sleepers_resumed_late = resumed
        finally:
            prober.stop()
        burst.rss_peak = prober.peak_rss
        burst.health_ms = prober.latencies_ms(t0, t_end)
        burst.live_ms = prober.latencies_ms(t0, t_end, Prober.PATHS[1])
        burst.slowest_probes = prober.slowest(t0, t_end)
        burst.health_failures = prober.failures
        say(f"readers done {burst.delivery_seconds:.2f}s after the trigger; health p99 {burst.health_p99:.0f} ms "
            f"over {len(burst.health_ms)} probes; slowest at (s after trigger, ms): {burst.slowest_probes}")
        for p in procs:
            p.process.wait(30)
        burst.reader_report = reading.report() if reading is not None else {}
        burst.sleeper_report = sleeping.report() if sleeping is not None else {}
    finally:
        for p in procs:
            p.stop()
    return burst


@dataclass
class Row:
    scenario: str
    burst: Burst
    figure: str
    target: str
    passed: bool
    sources: str = ""

    def table_line(self) -> tuple[Table, tuple[str, ...]]:
        return TABLE, (self.scenario, self.figure, self.target, verdict(self.passed))

    def as_dict(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "figure": self.figure, "target": self.target, "passed": self.passed,
                "sources": self.sources, **self.burst.as_dict()}


TABLE = Table(("scenario", "figure", "target", "result"), frozenset({0, 1, 2, 3}))


def _report_line(name: str, r: dict[str, Any]) -> str:
    return (f"{r['clients']} {name}: {r['events']:,} events, {r['gaps']:,} gap frames naming {r['gap_named']:,}, "
            f"closed by the server {r['closed_by_server'] or 'none'}, unfinished {r['unfinished']}, "
            f"inconsistent {r['inconsistent']}")


def details(burst: Burst) -> list[str]:
    """What each group of sockets saw (printed under the table)."""
    title = f"{burst.readers} readers + {burst.sleepers} sleepers"
    lines = [f"{title}: {_report_line(name, r)}" for name, r in
             (("readers", burst.reader_report), ("sleepers", burst.sleeper_report)) if r]
    lines += [f"{title}: error: {e}" for r in (burst.reader_report, burst.sleeper_report) if r for e in r["errors"]]
    if burst.slowest_probes:
        lines.append(f"{title}: slowest GET /api/health (s after the trigger, ms): {burst.slowest_probes}")
    return lines


def _streams_figure(b: Burst) -> str:
    reports = [r for r in (b.reader_report, b.sleeper_report) if r]
    clients = sum(r["clients"] for r in reports)
    closed: dict[str, int] = {}
    for r in reports:
        for code, n in r["closed_by_server"].items():
            closed[code] = closed.get(code, 0) + n
    return (f"{sum(r['inconsistent'] for r in reports)} of {clients} inconsistent, "
            f"{sum(r['unfinished'] for r in reports)} unfinished, {sum(r['gaps'] for r in reports):,} gap frames "
            f"naming {sum(r['gap_named'] for r in reports):,} events, closed by the server: {closed or 'none'}")


def burst_rows(burst: Burst) -> list[Row]:
    b = burst
    title = f"{b.readers} readers + {b.sleepers} sleepers, {b.events:,} events"
    return [
        Row(f"{title}: GET /api/health p99", b, f"{b.health_p99:.0f} ms (p50 {percentile(b.health_ms, 0.5):.0f}, max "
            f"{b.health_ms[-1] if b.health_ms else 0:.0f}; {len(b.health_ms)} probes, {b.health_failures} failed; "
            f"/api/health/live p99 {percentile(b.live_ms, 0.99):.0f}, max {b.live_ms[-1] if b.live_ms else 0:.0f})",
            f"<= {TARGET_HEALTH_P99_MS:g} ms", b.health_p99 <= TARGET_HEALTH_P99_MS and not b.health_failures),
        Row(f"{title}: job done", b, f"{b.job_seconds:.2f} s (seen idle after {b.idle_seen_seconds:.2f} s, readers "
            f"done after {b.delivery_seconds:.1f} s)",
            f"<= {TARGET_JOB_SECONDS:g} s", b.job_seconds <= TARGET_JOB_SECONDS),
        Row(f"{title}: server RSS growth", b,
            f"{b.rss_growth_mb:.0f} MB ({b.rss_before / 1e6:.0f} -> connected {b.rss_connected / 1e6:.0f} -> "
            f"peak {b.rss_peak / 1e6:.0f}, after {b.rss_after / 1e6:.0f})",
            f"<= {TARGET_RSS_MB:g} MB", b.rss_growth_mb <= TARGET_RSS_MB),
        Row(f"{title}: streams consistent", b, _streams_figure(b), "each event once, in order, exact gaps",
            b.consistent()),
    ]


def sleeper_row(burst: Burst) -> Row:
    kb = (max(burst.rss_after, burst.rss_peak) - burst.rss_before) / 1024 / max(1, burst.sleepers)
    return Row(f"{burst.sleepers} never-reading sockets, {burst.events:,} events: RSS per socket", burst,
               f"{kb:.1f} KB ({burst.rss_before / 1e6:.0f} -> peak {burst.rss_peak / 1e6:.0f}, after "
               f"{burst.rss_after / 1e6:.0f} MB); streams: {_streams_figure(burst)}",
               f"<= {TARGET_SLEEPER_KB:g} KB", kb <= TARGET_SLEEPER_KB and burst.consistent())


def run_bench(settings: Settings, say: Any) -> list[Row]:
    only = {part.strip() for part in settings.only.split(",") if part.strip()}
    unknown = only - {"burst", "sleepers"}
    if unknown:
        raise ValueError(f"unknown scenario(s) {sorted(unknown)}: use burst, sleepers")
    rows: list[Row] = []
    sources = sources_fingerprint()
    say(sources)
    with tempfile.TemporaryDirectory(prefix="routilux-fanout-bench-") as tmp:
        work = Path(tmp)
        if "burst" in only:
            with Server("routilux", work) as server:
                setup_routilux(server)
                rows += burst_rows(run_burst(server, work, settings.readers, settings.sleepers, settings.events, say))
        if "sleepers" in only:
            with Server("routilux", work) as server:
                setup_routilux(server)
                # The same burst with no socket first: what the job itself costs (its events in
                # the history, the store's buffers) is then allocated, and not counted per socket.
                run_burst(server, work, 0, 0, settings.events, say)
                rows.append(sleeper_row(run_burst(server, work, 0, settings.sleepers, settings.events, say)))
    for row in rows:
        row.sources = sources
    return rows

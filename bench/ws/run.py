"""The WebSocket bench's rows (one line of its table each), its settings and the run of every scenario.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report import Table, sources_fingerprint, verdict
from bench.ws.frames import TARGET_DELIVERIES_PER_S, TARGET_IDLE_KB, TARGET_P99_MS
from bench.ws.scenarios import Idle, Stream, new_job, run_idle, run_stream, setup_routilux
from bench.ws.servers import Server


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

    def table_line(self) -> tuple[Table, tuple[str, ...]] | None:
        ratio = "—" if self.ratio is None else f"{self.ratio:.2f}"
        if self.stream is not None:
            s, w = self.stream, (self.stream.wall or 1.0)
            return TABLE, (
                self.scenario, f"{s.clients}", f"{s.rate:,.0f}", f"{s.pct_ms(0.5):.1f}", f"{s.pct_ms(0.99):.1f}",
                f"{s.missing:,}", f"{s.deliveries_per_s:,.0f}", "—", ratio, f"{s.server_us_per_delivery:.1f}",
                f"{s.server_cpu / w:.0%}", f"{s.client_cpu / w:.0%}", f"{s.other_cpu / w:.0%}",
                self.target or "—", verdict(self.passed),
            )
        if self.idle is not None:
            i = self.idle
            return TABLE, (
                self.scenario, f"{i.connections:,}", "—", "—", "—", "—", "—", f"{i.kb_per_connection:.1f}", ratio,
                "—", "—", "—", "—", self.target or "—", verdict(self.passed),
            )
        return None


TABLE = Table(
    ("scenario", "clients", "ev/s", "p50 ms", "p99 ms", "loss", "deliveries/s", "KB/conn", "×bare",
     "srv µs/deliv", "srv CPU", "cli CPU", "other", "target", "result"),
    frozenset({0, 13, 14}),
)


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



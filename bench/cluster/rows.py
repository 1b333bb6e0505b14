"""The cluster bench's rows: one line of one of its three tables each (job start, fan-out, hop).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.cluster.fanout import Fan
from bench.cluster.hop import Hop
from bench.cluster.measure import Cpu
from bench.cluster.post import Post
from bench.cluster.relay import IDLE_TARGET_CORES, Idle
from bench.report import (
    Table,
    verdict,
)


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
    idle: Idle | None = None
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
    def cpu_ratio(self) -> float | None:
        """Server CPU per job (start + completion) ÷ the plain server's (POST)."""
        b = self.baseline
        if self.post is not None and b is not None and b.post is not None and b.post.server_us_per_job:
            return self.post.server_us_per_job / b.post.server_us_per_job
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
                "ratio_vs_plain": _r(self.ratio), "cpu_per_job_ratio_vs_plain": _r(self.cpu_ratio),
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
        if self.idle is not None:
            out |= self.idle.as_dict()
        return out | {"target": self.target, "passed": self.passed, **self.extra}

    def table_line(self) -> tuple[Table, tuple[str, ...]] | None:
        return _table_line(self)


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def _cores(cpu: Cpu) -> tuple[str, ...]:
    return tuple(f"{cpu.cores(k):.0%}" for k in ("server", "redis", "client", "other"))


POSTS = Table(("job start (POST /api/jobs)", "conns", "jobs", "jobs/s", "p50 ms", "p99 ms", "×plain", "completed/s",
               "µs/job srv/redis", "CPU/job ×plain", "placement", "srv CPU", "redis CPU", "cli CPU", "other CPU",
               "errors", "target", "result"),
              frozenset({0, 10, 16, 17}), order=0)
FANS = Table(("fan-out", "clients owner/other", "ev/s", "deliveries/s", "loss", "p50 ms", "p99 ms", "max ms", "×1w p99",
              "×1w deliv/s", "srv CPU", "redis CPU", "cli CPU", "other CPU", "target", "result"),
             frozenset({0, 1, 14, 15}), order=1)
HOPS = Table(("Redis hop (B relayed - A local)", "events", "added p50 ms", "p99 ms", "max ms", "A p50 ms", "B p50 ms",
              "B ev/s", "µs/ev A/B/redis", "GET job A/B->A p50 ms", "srv CPU", "redis CPU", "cli CPU", "other CPU",
              "target"),
             frozenset({0, 14}), order=2)
IDLES = Table(("relay only what is watched", "events", "A ev/s", "A cores", "B cores (watches)", "C cores (idle)",
               "µs/ev A/B/C", "relayed A/B/C", "redis CPU", "target", "result"),
              frozenset({0, 9, 10}), order=3)


def _table_line(r: Row) -> tuple[Table, tuple[str, ...]] | None:
    ratio = "—" if r.ratio is None else f"{r.ratio:.2f}"
    if r.post is not None:
        p, load = r.post, r.post.load
        return POSTS, (r.scenario, str(load.connections), f"{load.requests:,}", f"{load.rps:,.0f}",
                       f"{load.percentile_ms(0.5):.2f}", f"{load.percentile_ms(0.99):.2f}", ratio,
                       f"{load.requests / p.seconds_to_completed:,.0f}" if p.seconds_to_completed else "—",
                       f"{p.server_us_per_job:,.0f}/{p.redis_us_per_job:,.0f}",
                       "—" if r.cpu_ratio is None else f"{r.cpu_ratio:.2f}",
                       "/".join(str(v) for v in p.placement.values()), *_cores(p.cpu), str(load.errors),
                       r.target or "—", verdict(r.passed))
    if r.fan is not None:
        f, s = r.fan, r.fan.stream
        loss = s.missing + s.holes + s.gap_named
        rr = "—" if r.rate_ratio is None else f"{r.rate_ratio:.2f}"
        return FANS, (r.scenario, f"{f.owner_clients}/{f.other_clients}", f"{s.rate:,.0f}",
                      f"{s.deliveries_per_s:,.0f}", f"{loss:,}", f"{s.pct_ms(0.5):.1f}", f"{s.pct_ms(0.99):.1f}",
                      f"{s.sorted_ms[-1]:.1f}" if s.sorted_ms else "—", ratio, rr, *_cores(f.cpu),
                      r.target or "—", verdict(r.passed))
    if r.hop is not None:
        h, d = r.hop, r.hop.as_dict()
        return HOPS, (r.scenario, f"{h.n:,}", f"{d['added_p50_ms']:.2f}", f"{d['added_p99_ms']:.2f}",
                      f"{d['added_max_ms']:.2f}", f"{d['a_p50_ms']:.2f}", f"{d['b_p50_ms']:.2f}",
                      f"{h.b_per_s:,.0f}",
                      f"{d['a_us_per_event']:.0f}/{d['b_us_per_event']:.0f}/{d['redis_us_per_event']:.0f}",
                      f"{d['get_job_local_p50_ms']:.2f}/{d['get_job_forwarded_p50_ms']:.2f}",
                      *_cores(h.cpu), r.target or "—")
    if r.idle is not None:
        i, d = r.idle, r.idle.as_dict()
        return IDLES, (r.scenario, f"{i.n:,}", f"{i.events_per_s:,.0f}", f"{d['a_cores']:.1%}",
                       f"{d['b_cores']:.1%}", f"{d['c_cores']:.1%} (≤ {IDLE_TARGET_CORES:.0%})",
                       f"{d['a_us_per_event']:.0f}/{d['b_us_per_event']:.0f}/{d['c_us_per_event']:.1f}",
                       "/".join(str(i.relayed.get(k, 0)) for k in "ABC"), f"{i.cpu.cores('redis'):.0%}",
                       r.target or "—", verdict(r.passed))
    return None



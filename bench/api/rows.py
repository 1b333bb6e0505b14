"""The API bench's rows (one line of its table each), the all-2xx check, and seeding Routilux
through its API (flows, the POST body, waiting for jobs to complete).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.api.load import Load
from bench.api.servers import FLOWS, POST_FLOW, Server
from bench.report import (
    BenchFailure,
    Table,
    verdict,
)
from bench.report import (
    expect_status as _expect,
)


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

    def table_line(self) -> tuple[Table, tuple[str, ...]]:
        return _table_line(self)


TABLE = Table(
    ("scenario", "conns", "requests", "req/s", "p50 ms", "p99 ms", "×bare", "srv CPU", "cli CPU", "other CPU",
     "errors", "target", "result"),
    frozenset({0, 11, 12}),
)


def _table_line(r: Row) -> tuple[Table, tuple[str, ...]]:
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
    return TABLE, (r.scenario, *cells, "—" if ratio is None else f"{ratio:.2f}", *cpu, target, verdict(r.passed))


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

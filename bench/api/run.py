"""The API bench's run: its settings, the scenarios in order with retries on a noisy machine, and
the server profile.
"""

from __future__ import annotations

import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.api.load import Load, get, post, run_load
from bench.api.rows import (
    Row,
    _checked,
    _expect,
    flush_history,
    oldest_job_ids,
    post_body,
    seed_routilux,
    wait_completed,
)
from bench.api.servers import (
    BENCH_KEY,
    FLOWS,
    ROUTILUX_HTTP,
    STORED_JOBS,
    STORED_SAMPLE,
    TARGET_GET_JOB_RATIO,
    TARGET_LIST_P99_MS,
    TARGET_POST_JOBS_PER_S,
    TARGET_SECURED_RATIO,
    Server,
    bare_server,
    routilux_server,
)
from bench.report import (
    BenchFailure,
    wait_quiet,
)


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
    routilux_http: str = ROUTILUX_HTTP  # uvicorn's --http for the Routilux servers

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
        http = s.routilux_http
        with bare_server(work) as bare, routilux_server(work, http=http) as rx, \
                routilux_server(work, secured=True, http=http) as sec:
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
            secured_row.extra["rounds_ratio_vs_open"] = [
                round(x.rps / j.rps, 3) for x, j in zip(secureds, jobs, strict=True)
            ]
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
            server = routilux_server(work, profile_to=prof, http=settings.routilux_http)
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


def versions() -> str:
    from importlib.metadata import version

    names = ("uvicorn", "starlette", "httptools", "uvloop", "msgspec")
    return ", ".join(f"{n} {version(n)}" for n in names) + f", python {sys.version.split()[0]}"



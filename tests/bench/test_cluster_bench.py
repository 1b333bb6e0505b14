"""The cluster benchmark, bounded (``make test``) and full size (``make bench``, ``-m slow``).

The bounded test runs ``python -m bench.cluster``'s quick sizes against real processes — a redis-server,
a plain uvicorn on SQLite, ``gunicorn -w 1`` and ``-w 2`` of Routilux's worker on Redis, and two
``python -m routilux.api.main`` on one Redis — and asserts correctness: every POST answered 201
and every posted job completed (counted through any worker and in Redis), every fan-out event
delivered to every client once, in order, with no loss and no gap, and every relayed event seen on
both sides of the Redis hop with the same seq, and a running job's view answered by a node that
forwards the request to the job's owner; and (issue 17) a node with no socket and no job relays
nothing and stays near idle while another runs 2,500 events/s, and a job's server CPU in cluster
mode is within a loose multiple of the plain server's (the ≤ 2× target is the full run's: a noisy
shared machine moves the quick ratio); plus bounds loose enough that a noisy 2-core machine does
not flake them. The unit tests check the hop client's accounting and the log check
without any process. The slow test runs the full sizes (zero loss is its only target: the
figures are informational).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
from bench.cluster import __main__ as cluster_main
from bench.cluster import hop, nodes, redis_server
from bench.cluster import run as cluster_run
from bench.cluster.settings import Settings
from bench.report import format_table, percentile


# ------------------------------------------------------------------------------------------------
# Unit: the hop client's accounting, the log check
# ------------------------------------------------------------------------------------------------
def _log(seq: int, i: int) -> bytes:
    return json.dumps({"seq": seq, "type": "log", "job_id": "j", "flow_id": "f", "routine_id": "ticker",
                       "timestamp": "2025-01-01T00:00:00Z",
                       "data": {"level": "info", "message": "tick", "fields": {"i": i, "t": time.time()}}}).encode()


async def test_hop_sub_records_arrivals_by_tick_and_counts_loss() -> None:
    sub = hop.HopSub("B", expect=4)
    sub.handle(b'{"type":"snapshot","job_id":"j","last_seq":3,"status":"running"}')
    assert sub.ready.is_set() and sub.next_seq == 4
    sub.handle(b'{"seq":4,"type":"routine_start","job_id":"j","data":{}}')
    sub.handle(_log(5, 0))
    sub.handle(_log(6, 1))
    sub.handle(b'{"type":"gap","job_id":"j","from_seq":7,"to_seq":7}')
    sub.handle(_log(8, 3))  # tick 2 (seq 7) lost
    sub.handle(_log(8, 3))  # a duplicate
    assert (sub.ticks, sub.holes, sub.gaps, sub.disorder) == (3, 1, 1, 2)
    assert list(sub.seq) == [5, 6, 0, 8]
    assert not math.isnan(sub.arrival[0]) and math.isnan(sub.arrival[2])
    assert len(sub.latency) == 3 and all(0 <= x < 5 for x in sub.latency)
    assert not sub.done.is_set()
    sub.on_closed(1000)
    assert sub.done.is_set() and sub.closed == 1000
    sub.handle(b"not json")
    assert sub.errors and "undecodable" in sub.errors[0]


def test_log_problems_are_found() -> None:
    text = ("[2026-11-26 06:30:28 +0000] [22319] [INFO] Starting gunicorn 27.0.1\n"
            "WARNING:  something harmless\n"
            "2026-11-26 06:30:29 ERROR routilux.cluster reading events from Redis failed\n"
            "Traceback (most recent call last):\n"
            "[2026-11-26 06:30:30 +0000] [22319] [ERROR] Worker (pid:22377) was sent SIGKILL!\n")
    found = nodes._log_problems(text)
    assert len(found) == 3 and "Starting" not in "".join(found) and "harmless" not in "".join(found)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0 and percentile(values, 0.99) == 99.0 and percentile(values, 1.0) == 100.0
    assert math.isnan(percentile([], 0.5))


# ------------------------------------------------------------------------------------------------
# Bounded (make test): ~40 s
# ------------------------------------------------------------------------------------------------
def _assert_complete_stream(row: dict[str, Any], table: str) -> None:
    """Every event reached every client, once, in order, and nothing was closed early."""
    assert row["loss"] == 0 and row["seq_holes"] == 0, table
    assert row["gap_frames"] == 0 and row["gap_named_events"] == 0, table
    assert row["deliveries"] == row["expected_deliveries"] == row["events_per_client"] * row["clients"], table
    assert row["out_of_order"] == 0 and row["closed_by_server"] == 0 and row["clients_timed_out"] == 0, table
    assert not row["errors"] and row["p99_ms"] >= row["p50_ms"] >= 0, table
    assert row["clients_on_owner"] + row["clients_on_other"] == row["clients"], table
    assert row["passed"] is True, table


def test_cluster_bench_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m bench.cluster --quick --json FILE`` end to end: the tables, the JSON, exit 0."""
    out = tmp_path / "cluster.json"
    t0 = time.monotonic()
    code = cluster_main.main(["--quick", "--json", str(out)])
    elapsed = time.monotonic() - t0
    printed = capsys.readouterr().out
    with capsys.disabled():
        print(f"\n{printed}({elapsed:.1f} s)")
    table = printed
    assert code == 0, table
    rows = json.loads(out.read_text())
    r = {row["key"]: row for row in rows}
    assert list(r) == ["post_plain", "post_w1", "post_w2", "fanout_w1", "fanout_w2", "hop", "relay"], table
    quick = Settings.quick()

    # Job start: every POST answered 201, every job completed, through any worker.
    for key, workers in (("post_plain", 1), ("post_w1", 1), ("post_w2", 2)):
        row = r[key]
        assert row["jobs"] == quick.jobs and row["statuses"] == {"201": quick.jobs} and row["errors"] == 0, table
        assert row["jobs_posted_total"] >= quick.jobs and row["seconds_to_all_completed"] > 0, table
        assert len(row["connections_per_process"]) == workers, table
        assert sum(row["connections_per_process"]) == quick.connections, table
        fair = quick.connections // (2 * workers)  # what the bench reconnects for, 10 tries at most
        reopened_all = row["connections_reopened"] == redis_server.SPREAD_TRIES - 1
        assert min(row["connections_per_process"]) >= fair or reopened_all, table
        assert row["jobs_per_s"] >= 50 and row["completed_per_s"] >= 25, table  # loose: a noisy shared machine
    assert r["post_plain"]["ratio_vs_plain"] is None and r["post_w2"]["ratio_vs_plain"] > 0, table
    for key in ("post_w1", "post_w2"):  # server CPU per job, cluster mode / plain (target <= 2 in the full run)
        assert 0 < r[key]["cpu_per_job_ratio_vs_plain"] <= 4, table

    # Fan-out: zero loss on one worker and on two (clients on both, the job on one).
    for key in ("fanout_w1", "fanout_w2"):
        row = r[key]
        _assert_complete_stream(row, table)
        assert row["clients"] == quick.clients and row["rate_events_per_s"] == quick.rate, table
        assert row["p99_ms"] <= 2_000, table
        assert row["deliveries_per_s"] >= 0.5 * quick.rate * quick.clients, table
    assert r["fanout_w1"]["clients_on_other"] == 0, table
    assert r["fanout_w2"]["p99_ratio_vs_1w"] is not None and r["fanout_w2"]["deliveries_ratio_vs_1w"] > 0.5, table

    # The Redis hop: every event on both sides with the same seq (checked by the bench), figures sane.
    hop = r["hop"]
    assert hop["events"] == round(quick.hop_rate * quick.hop_seconds), table
    assert hop["added_min_ms"] <= hop["added_p50_ms"] <= hop["added_p99_ms"] <= hop["added_max_ms"], table
    assert hop["added_p50_ms"] <= 500, table
    assert hop["b_events_per_s"] >= 0.5 * quick.hop_rate, table
    assert hop["redis_us_per_event"] > 0 and hop["b_us_per_event"] > 0, table
    # GET /api/jobs/{id} answered by the owner A, and by B through a forwarding round trip to A
    assert 0 < hop["get_job_local_p50_ms"] <= 500 and 0 < hop["get_job_forwarded_p50_ms"] <= 1_000, table
    # Relay only what a server serves: C (no socket, no job) relays nothing and idles; B relays the job it watches.
    relay = r["relay"]
    assert relay["relayed"]["C"] == 0 and relay["relayed"]["A"] == 0, table
    assert relay["relayed"]["B"] >= relay["events"], table
    assert relay["c_cores"] <= 0.05 and relay["a_events_per_s"] >= 2_000, table
    assert relay["passed"] is True, table
    assert "All checks passed" in printed or not any(
        row["passed"] is False for row in rows if not row["key"].startswith("post_")), table


# ------------------------------------------------------------------------------------------------
# Full size (make bench)
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_cluster_bench_full() -> None:
    rows = cluster_run.run_bench(Settings())  # raises BenchFailure on any error or lost event
    table = format_table(rows)
    print("\n" + table)
    r = {row.key: row for row in rows}
    assert list(r) == ["post_plain", "post_w1", "post_w2", "fanout_w1", "fanout_w2", "capacity_w1", "capacity_w2",
                       "hop", "hop_capacity", "relay"], table
    assert r["relay"].passed is True, table
    for key in ("post_plain", "post_w1", "post_w2"):
        assert r[key].post.load.statuses == {201: Settings().jobs}, table
    for key in ("fanout_w1", "fanout_w2", "capacity_w1", "capacity_w2"):
        assert r[key].passed is True, table
    assert r["hop"].hop.added_ms and r["hop_capacity"].hop.added_ms, table

"""Monitoring over HTTP, against what scripted jobs actually did.

Each figure is compared with the job's own records served by the API (execution history, state,
stored events): counts and statuses exactly, durations to the microsecond they were measured
with. Covered: a completed job with retried activations, a failed and a cancelled job, a flow's
figures over its jobs, the dashboard views of routines and queues, routine info, Prometheus'
``/metrics`` (parsed with prometheus-client's own parser), and the ``metrics`` frames of a job
monitor socket.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from tests.support.rest import create_flow, error_of, start_job, wait_job
from tests.support.servers import ServerProcess, start_deployment


def retry_flow(flow_id: str) -> dict[str, Any]:
    """relay -> flaky (fails the first attempt of each activation, retried) -> sink."""
    return {
        "flow_id": flow_id,
        "routines": {
            "relay": {"class": "Relay"},
            "flaky": {"class": "Flaky", "config": {"failures": 1},
                      "error_handler": {"strategy": "retry", "max_retries": 2, "retry_delay": 0.001}},
            "sink": {"class": "Collect"},
        },
        "connections": [{"from": "relay.output", "to": "flaky.input"}, {"from": "flaky.output", "to": "sink.input"}],
    }


async def run_to_end(client: httpx.AsyncClient, flow_id: str, items: list[Any], routine: str = "relay") -> str:
    """Start a job, post every item, let it go idle, complete it; return its id."""
    job_id = (await start_job(client, flow_id=flow_id))["job_id"]
    for item in items:
        response = await client.post(f"/api/jobs/{job_id}/post",
                                     json={"routine_id": routine, "slot_name": "input", "data": item})
        assert response.status_code == 202, response.text
    for _ in range(500):
        status = (await client.get(f"/api/jobs/{job_id}/status")).json()
        if status["status"] in ("idle", "failed"):
            break
        await asyncio.sleep(0.01)
    if status["status"] == "idle":
        assert (await client.post(f"/api/jobs/{job_id}/complete", json={})).status_code == 200
    await wait_job(client, job_id)
    return job_id


async def metrics_of(client: httpx.AsyncClient, job_id: str, **params: str) -> dict[str, Any]:
    """The job's metrics once the aggregator has seen its end (it trails the engine by a batch)."""
    for _ in range(200):
        response = await client.get(f"/api/jobs/{job_id}/metrics", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        if body["end_time"] is not None:
            return body
        await asyncio.sleep(0.01)
    raise AssertionError(f"the metrics of {job_id} never showed its end: {body}")


async def settled_flow_metrics(client: httpx.AsyncClient, flow_id: str, *, total_jobs: int) -> dict[str, Any]:
    """The flow's metrics once they count ``total_jobs``, the same from both of its endpoints. On
    one server that is at once; in a cluster another server's job that just ended is counted from
    its owner's published figures, which follow a change within about 50 ms (README, "Metrics"
    under the cluster section), and each endpoint may be answered by another server."""
    for _ in range(200):
        body: dict[str, Any] = (await client.get(f"/api/flows/{flow_id}/metrics")).json()
        other: dict[str, Any] = (await client.get(f"/api/monitor/flows/{flow_id}/metrics")).json()
        if body["total_jobs"] == total_jobs and body["job_duration"]["count"] == total_jobs and body == other:
            return body
        await asyncio.sleep(0.025)
    raise AssertionError(f"the flow's metrics did not settle at {total_jobs} jobs: {body} vs {other}")


async def history_of(client: httpx.AsyncClient, job_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/api/jobs/{job_id}/execution-history", params={"limit": 10000})
    return response.json()["history"]


async def events_of(client: httpx.AsyncClient, job_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/api/jobs/{job_id}/events", params={"limit": 10000})
    return response.json()["events"]


# -- one job ------------------------------------------------------------------------------------------
async def test_a_job_with_retries_counts_exactly_what_its_history_and_events_say(
    client: httpx.AsyncClient, uid: str
) -> None:
    flow_id = (await create_flow(client, dsl_dict=retry_flow(f"mon-{uid}")))["flow_id"]
    job_id = await run_to_end(client, flow_id, [1, 2, 3])
    m = await metrics_of(client, job_id)
    history = await history_of(client, job_id)
    events = await events_of(client, job_id)
    state = (await client.get(f"/api/jobs/{job_id}/state")).json()

    assert m["status"] == "completed" == state["status"]
    assert m["events_seen"] == len(events) and m["events_lost"] == 0
    by_type = Counter(e["type"] for e in events)
    assert m["totals"] == {
        "activations": sum(1 for h in history if h["attempt"] == 1),
        "retries": sum(1 for h in history if h["attempt"] > 1),
        "slot_calls": by_type["slot_call"],
        "events_emitted": by_type["event_emit"],
        "errors": sum(1 for h in history if h["status"] in ("failed", "retrying")),
    }
    assert m["totals"]["slot_calls"] == 9 and m["totals"]["errors"] >= 1
    for rid, r in m["routines"].items():
        mine = [h for h in history if h["routine_id"] == rid]
        assert r["execution_count"] == len(mine) == state["routine_states"][rid]["execution_count"], rid
        assert r["error_count"] == state["routine_states"][rid]["error_count"], rid
        assert r["retry_count"] == sum(1 for h in mine if h["attempt"] > 1), rid
        assert r["total_duration"] == pytest.approx(sum(h["duration"] for h in mine), rel=1e-9, abs=1e-9)
        assert r["max_duration"] == pytest.approx(max(h["duration"] for h in mine))
        assert r["status"] == "idle" and r["active"] == 0
    assert [(s["routine_id"], s["unconsumed"], s["received"]) for s in m["slots"]] == [
        ("flaky", 0, 3), ("relay", 0, 3), ("sink", 0, 3)]
    assert {(e["routine_id"], e["type"], e["status"]) for e in m["errors"]} == {("flaky", "ValueError", "retrying")}
    assert all(e["traceback"] is None for e in m["errors"])

    # the spec's path and the alias are the same; tracebacks on request
    assert (await client.get(f"/api/monitor/jobs/{job_id}/metrics")).json() == m
    traced = await metrics_of(client, job_id, include_traceback="true")
    assert all("ValueError: flaky failure 1" in e["traceback"] for e in traced["errors"])


async def test_failed_and_cancelled_jobs_say_why(client: httpx.AsyncClient, uid: str) -> None:
    boom = await create_flow(client, dsl_dict={"flow_id": f"mon-boom-{uid}", "routines": {"boom": {"class": "Boom"}}})
    failed = await run_to_end(client, boom["flow_id"], [1], routine="boom")
    m = await metrics_of(client, failed)
    assert m["status"] == "failed" and m["routines"]["boom"]["status"] == "failed"
    assert [(e["routine_id"], e["type"], e["status"]) for e in m["errors"]] == [("boom", "RuntimeError", "failed")]

    slow = await create_flow(client, dsl_dict={"flow_id": f"mon-slow-{uid}",
                                               "routines": {"slow": {"class": "Slow", "config": {"delay": 30}}}})
    entry = {"routine_id": "slow", "slot_name": "input", "data": 1}
    job = await start_job(client, flow_id=slow["flow_id"], entry=entry)
    for _ in range(200):
        live = (await client.get(f"/api/jobs/{job['job_id']}/metrics")).json()
        if live["routines"].get("slow", {}).get("active") == 1:
            break
        await asyncio.sleep(0.01)
    assert live["status"] == "running" and live["end_time"] is None and live["duration"] >= 0
    assert live["routines"]["slow"]["status"] == "running"
    assert (await client.post(f"/api/jobs/{job['job_id']}/cancel", json={"reason": "enough"})).status_code == 200
    m = await metrics_of(client, job["job_id"])
    assert m["status"] == "cancelled"
    assert [(e["routine_id"], e["type"], e["message"]) for e in m["errors"]] == [(None, "cancelled", "enough")]


async def test_unknown_jobs_and_flows_are_404(client: httpx.AsyncClient) -> None:
    for path in (
        "/api/jobs/nope/metrics",
        "/api/monitor/jobs/nope/metrics",
        "/api/jobs/nope/monitoring",
        "/api/jobs/nope/queues/status",
        "/api/jobs/nope/routines/status",
        "/api/jobs/nope/routines/r/queue-status",
        "/api/flows/nope/metrics",
        "/api/monitor/flows/nope/metrics",
        "/api/flows/nope/routines/r/info",
    ):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert error_of(response)["error"].endswith("_not_found"), path
    bad = await client.get("/api/jobs/x/metrics", params={"include_traceback": "yes"})
    assert bad.status_code == 422 and error_of(bad)["field"] == "query.include_traceback"


# -- a flow -------------------------------------------------------------------------------------------
async def test_a_flow_adds_up_its_jobs(client: httpx.AsyncClient, uid: str) -> None:
    flow_id = (await create_flow(client, dsl_dict=retry_flow(f"mon-flow-{uid}")))["flow_id"]
    jobs = [await run_to_end(client, flow_id, [n]) for n in range(3)]
    per_job = [await metrics_of(client, j) for j in jobs]
    cancelled = await start_job(client, flow_id=flow_id)
    await client.post(f"/api/jobs/{cancelled['job_id']}/cancel", json={})
    await metrics_of(client, cancelled["job_id"])

    fm = await settled_flow_metrics(client, flow_id, total_jobs=4)  # both endpoints agree
    assert fm["total_jobs"] == 4 and fm["jobs_by_status"] == {"cancelled": 1, "completed": 3}
    assert fm["success_rate"] == pytest.approx(0.75)
    assert [r["job_id"] for r in fm["recent_jobs"]] == [cancelled["job_id"], *reversed(jobs)]
    assert fm["job_duration"]["count"] == 4
    for rid, r in fm["routines"].items():
        assert r["execution_count"] == sum(j["routines"][rid]["execution_count"] for j in per_job), rid
        assert r["error_count"] == sum(j["routines"][rid]["error_count"] for j in per_job), rid
        assert r["duration"]["total"] == pytest.approx(sum(j["routines"][rid]["total_duration"] for j in per_job))


# -- the dashboard's views ----------------------------------------------------------------------------
async def test_queue_and_routine_views_of_a_paused_job(client: httpx.AsyncClient, uid: str) -> None:
    # The first activation holds one item for 3 s, so the pause below lands while it runs even on a
    # loaded machine (at 0.3 s it could end first); the job is cancelled at the end, not waited for.
    flow = {
        "flow_id": f"mon-q-{uid}",
        "routines": {"slow": {"class": "Slow", "config": {"delay": 3.0}}, "sink": {"class": "Collect"}},
        "connections": [{"from": "slow.output", "to": "sink.input"}],
    }
    flow_id = (await create_flow(client, dsl_dict=flow))["flow_id"]
    job_id = (await start_job(client, flow_id=flow_id))["job_id"]
    for n in range(5):
        await client.post(f"/api/jobs/{job_id}/post", json={"routine_id": "slow", "slot_name": "input", "data": n})
    for _ in range(200):
        status = (await client.get(f"/api/jobs/{job_id}/routines/status")).json()
        if status["routines"].get("slow", {}).get("active") == 1:
            break
        await asyncio.sleep(0.01)
    assert (await client.post(f"/api/jobs/{job_id}/pause", json={})).status_code == 200
    await asyncio.sleep(0.05)

    queues = (await client.get(f"/api/jobs/{job_id}/queues/status")).json()  # a bare map, by routine
    assert set(queues) == {"slow", "sink"}
    assert queues["slow"] == [{
        "slot_name": "input", "routine_id": "slow", "unconsumed_count": 4, "total_count": 4, "max_length": 1000,
        "watermark_threshold": 0.8, "usage_percentage": 0.004, "pressure_level": "low", "is_full": False,
        "is_near_full": False,
    }]
    one = (await client.get(f"/api/jobs/{job_id}/routines/slow/queue-status")).json()
    slow_input = one["queues"][0]
    assert slow_input == {
        "routine_id": "slow",
        "slot": "input",
        "unconsumed": 4,
        "capacity": 1000,
        "usage": 0.004,
        "pressure": "low",
        "received": 5,
    }
    assert one == {"job_id": job_id, "routine_id": "slow", "queues": [slow_input]}
    missing = await client.get(f"/api/jobs/{job_id}/routines/nope/queue-status")
    assert missing.status_code == 404 and error_of(missing)["error"] == "routine_not_found"

    routines = (await client.get(f"/api/jobs/{job_id}/routines/status")).json()["routines"]
    assert routines["slow"]["status"] == "paused" and routines["sink"]["status"] == "pending"
    view = (await client.get(f"/api/jobs/{job_id}/monitoring")).json()
    assert view["status"] == "paused" and set(view["routines"]) == {"slow", "sink"}
    assert view["routines"]["slow"]["queues"] == [slow_input]
    assert view["routines"]["slow"]["routine_info"]["class_name"] == "Slow"
    assert view["routines"]["slow"]["info"]["routine_type"] == "Slow"
    assert view["routines"]["sink"]["execution"]["status"] == "pending"
    await client.post(f"/api/jobs/{job_id}/cancel", json={})


async def test_routine_info_is_the_routine_as_configured(client: httpx.AsyncClient, uid: str) -> None:
    flow_id = (await create_flow(client, dsl_dict=retry_flow(f"mon-info-{uid}")))["flow_id"]
    info = (await client.get(f"/api/flows/{flow_id}/routines/flaky/info")).json()
    assert info == {
        "flow_id": flow_id,
        "routine_id": "flaky",
        "class_name": "Flaky",
        "description": None,
        "known_class": True,
        "slots": [{"name": "input", "capacity": 1000, "put_timeout": 60.0, "description": ""}],
        "events": ["output"],
        "config": {"failures": 1},
        "policy": None,
        "error_handler": info["error_handler"],
        "inbound": ["relay.output->flaky.input"],
        "outbound": ["flaky.output->sink.input"],
    }
    assert info["error_handler"]["strategy"] == "retry" and info["error_handler"]["max_retries"] == 2
    missing = await client.get(f"/api/flows/{flow_id}/routines/nope/info")
    assert missing.status_code == 404 and error_of(missing)["error"] == "routine_not_found"


async def test_health_reports_monitoring(client: httpx.AsyncClient) -> None:
    health = (await client.get("/api/health")).json()
    assert health["monitoring"]["enabled"] is True


# -- Prometheus -----------------------------------------------------------------------------------------
def scrape(url: str, **headers: str) -> dict[str, list[Any]]:
    response = httpx.get(url + "/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f.samples for f in text_string_to_metric_families(response.text)}
    return families


def value(samples: list[Any], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (name, labels, [s for s in samples if s.name == name][:5])
    return found[0]


# single_process: the HTTP request counters are each process's own (a cluster's workers are
# scraped one by one, like any multi-process server); the job figures are the cluster's.
@pytest.mark.single_process
async def test_prometheus_metrics_parse_and_carry_the_jobs_routines_and_requests(
    server: ServerProcess, client: httpx.AsyncClient, uid: str
) -> None:
    flow_id = (await create_flow(client, dsl_dict=retry_flow(f"mon-prom-{uid}")))["flow_id"]
    jobs = [await run_to_end(client, flow_id, [n]) for n in range(2)]
    for job_id in jobs:
        await metrics_of(client, job_id)
    flow = (await client.get(f"/api/flows/{flow_id}/metrics")).json()

    families = scrape(server.url)
    assert value(families["routilux_jobs"], "routilux_jobs", flow_id=flow_id, status="completed") == 2
    for rid, r in flow["routines"].items():
        assert (
            value(families["routilux_activations"], "routilux_activations_total", flow_id=flow_id, routine_id=rid)
            == r["execution_count"]
        )
        assert (
            value(
                families["routilux_activation_errors"],
                "routilux_activation_errors_total",
                flow_id=flow_id,
                routine_id=rid,
            )
            == r["error_count"]
        )
        histogram = families["routilux_activation_duration_seconds"]
        assert (
            value(histogram, "routilux_activation_duration_seconds_count", flow_id=flow_id, routine_id=rid)
            == r["execution_count"]
        )
        assert (
            value(histogram, "routilux_activation_duration_seconds_bucket", flow_id=flow_id, routine_id=rid, le="+Inf")
            == r["execution_count"]
        )
        assert value(
            histogram, "routilux_activation_duration_seconds_sum", flow_id=flow_id, routine_id=rid
        ) == pytest.approx(r["duration"]["total"])
    requests = families["routilux_http_requests"]
    assert (
        value(
            requests, "routilux_http_requests_total", method="GET", route="/api/flows/{flow_id}/metrics", status="200"
        )
        >= 1
    )
    assert not any(flow_id in s.labels.get("route", "") for s in requests)  # templates, never raw paths
    assert (
        value(
            families["routilux_http_request_duration_seconds"],
            "routilux_http_request_duration_seconds_count",
            method="POST",
            route="/api/jobs/{job_id}/wait",
        )
        >= 2
    )
    assert value(families["routilux_event_bus_published"], "routilux_event_bus_published_total") > 0
    for subscriber in ("recorder", "metrics", "websockets"):
        assert (
            value(families["routilux_event_bus_dropped"], "routilux_event_bus_dropped_total", subscriber=subscriber)
            == 0
        )
        assert (
            value(families["routilux_event_bus_lag_events"], "routilux_event_bus_lag_events", subscriber=subscriber)
            >= 0
        )
    assert value(families["routilux_websocket_clients"], "routilux_websocket_clients") >= 0
    assert value(families["routilux_rate_limited"], "routilux_rate_limited_total") == 0
    assert "routilux_slot_queue_depth" in families


# -- metrics frames on the job monitor socket ---------------------------------------------------------
@pytest.fixture(scope="module")
def quick_frames(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_deployment(tmp_path_factory.mktemp("mon-ws"), ROUTILUX_WS_METRICS_INTERVAL="0.1")
    yield server
    server.stop()


async def test_a_job_monitor_socket_gets_metrics_frames_only_when_they_changed(
    quick_frames: ServerProcess, uid: str
) -> None:
    async with httpx.AsyncClient(base_url=quick_frames.url, timeout=30) as client:
        flow_id = (await create_flow(client, dsl_dict=retry_flow(f"mon-ws-{uid}")))["flow_id"]
        job_id = (await start_job(client, flow_id=flow_id))["job_id"]
        url = quick_frames.url.replace("http://", "ws://") + f"/api/ws/jobs/{job_id}/monitor"
        async with connect(url, proxy=None, open_timeout=5) as ws:
            await client.post(f"/api/jobs/{job_id}/post", json={"routine_id": "relay", "slot_name": "input", "data": 1})
            metrics_frames: list[dict[str, Any]] = []

            async def read_for(seconds: float) -> None:
                try:
                    async with asyncio.timeout(seconds):
                        while True:
                            frame = json.loads(await ws.recv())
                            if frame["type"] == "metrics":
                                metrics_frames.append(frame)
                except TimeoutError:
                    pass

            await read_for(1.0)
            assert metrics_frames, "no metrics frame within 1 s at a 0.1 s interval"
            latest = metrics_frames[-1]
            assert latest["job_id"] == job_id and latest["metrics"]["totals"]["slot_calls"] == 3
            quiet = len(metrics_frames)
            await read_for(0.6)  # the idle job does not change: no new frame
            assert len(metrics_frames) == quiet

            await client.post(f"/api/jobs/{job_id}/complete", json={})
            await read_for(0.8)
            final = metrics_frames[-1]["metrics"]
            assert final["status"] == "completed" and final["end_time"] is not None
            assert len(metrics_frames) == quiet + 1  # one last frame after the end, then none
            assert final == (await client.get(f"/api/jobs/{job_id}/metrics")).json()


# -- after a restart --------------------------------------------------------------------------------------
# single_process: it restarts one server process on its own SQLite file.
@pytest.mark.single_process
async def test_finished_jobs_metrics_and_flow_figures_survive_a_restart(tmp_path: Path, uid: str) -> None:
    db = tmp_path / "restart.db"
    first = ServerProcess(db).start()
    try:
        async with httpx.AsyncClient(base_url=first.url, timeout=30) as client:
            flow_id = (await create_flow(client, dsl_dict=retry_flow(f"mon-rs-{uid}")))["flow_id"]
            job_id = await run_to_end(client, flow_id, [1, 2])
            before = await metrics_of(client, job_id)
            flow_before = (await client.get(f"/api/flows/{flow_id}/metrics")).json()
    finally:
        first.stop()
    second = ServerProcess(db).start()
    try:
        async with httpx.AsyncClient(base_url=second.url, timeout=30) as client:
            assert (await client.get(f"/api/jobs/{job_id}/metrics")).json() == before
            assert (await client.get(f"/api/flows/{flow_id}/metrics")).json() == flow_before
    finally:
        second.stop()


# -- runtimes ---------------------------------------------------------------------------------------------
async def test_a_runtime_shows_its_jobs_busy_threads_and_queued_activations(
    server: ServerProcess, client: httpx.AsyncClient, uid: str
) -> None:
    runtime_id = f"tiny-{uid}"
    created = await client.post("/api/runtimes", json={"runtime_id": runtime_id, "thread_pool_size": 1})
    assert created.status_code == 201, created.text
    flow = {"flow_id": f"mon-rt-{uid}", "routines": {"block": {"class": "SyncSlow", "config": {"delay": 2}}}}
    flow_id = (await create_flow(client, dsl_dict=flow))["flow_id"]
    jobs = [
        (
            await start_job(
                client,
                flow_id=flow_id,
                runtime_id=runtime_id,
                entry={"routine_id": "block", "slot_name": "input", "data": n},
            )
        )["job_id"]
        for n in range(3)
    ]
    try:
        for _ in range(300):
            body = (await client.get("/api/monitor/runtimes")).json()
            mine = next(r for r in body["runtimes"] if r["runtime_id"] == runtime_id)
            if mine["thread_activations"] == 3:
                break
            await asyncio.sleep(0.01)
        assert mine == {
            "runtime_id": runtime_id,
            "active_jobs": 3,
            "shared_pool": False,
            "threads_total": 1,
            "threads_busy": 1,
            "queued_activations": 2,
            "thread_activations": 3,
        }
        default = next(r for r in body["runtimes"] if r["runtime_id"] == "default")
        assert default["shared_pool"] is True and default["threads_total"] == 100
        # In a cluster the scrape may reach another worker, whose figures of the others' jobs
        # follow their owners' published counts within about 50 ms: wait for them to settle.
        for _ in range(100):
            families = scrape(server.url)
            queued = value(families["routilux_runtime_queued_activations"], "routilux_runtime_queued_activations",
                           runtime_id=runtime_id)
            if queued == 2:
                break
            await asyncio.sleep(0.03)
        assert (
            value(families["routilux_runtime_threads"], "routilux_runtime_threads", runtime_id=runtime_id, state="busy")
            == 1
        )
        assert (
            value(
                families["routilux_runtime_queued_activations"],
                "routilux_runtime_queued_activations",
                runtime_id=runtime_id,
            )
            == 2
        )
        assert (
            value(families["routilux_runtime_active_jobs"], "routilux_runtime_active_jobs", runtime_id=runtime_id) == 3
        )
    finally:
        for job_id in jobs:
            await client.post(f"/api/jobs/{job_id}/cancel", json={})

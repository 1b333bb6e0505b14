"""Jobs over HTTP: start, watch, control, feed, wait, history, cleanup — and every error path."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.support.rest import create_flow, error_of, etl_yaml, slow_flow, start_job, wait_job


async def etl(client: httpx.AsyncClient, uid: str) -> str:
    flow_id = f"etl-{uid}"
    await create_flow(client, dsl=etl_yaml(flow_id))
    return flow_id


async def slow(client: httpx.AsyncClient, uid: str, delay: float = 5.0) -> str:
    flow_id = f"slow-{uid}"
    await create_flow(client, dsl_dict=slow_flow(flow_id, delay))
    return flow_id


async def test_a_job_runs_with_entry_data_and_completes_when_idle(client: httpx.AsyncClient, uid: str) -> None:
    flow_id = await etl(client, uid)
    job = await start_job(client, flow_id=flow_id, entry={"routine_id": "source", "slot_name": "trigger", "data": {}},
                          complete_when_idle=True)
    assert job["flow_id"] == flow_id and job["runtime_id"] == "default" and job["timeout"] == 300
    assert job["status"] in {"running", "idle", "completed"}
    done = await wait_job(client, job["job_id"])
    assert done["status"] == "completed" and done["timed_out"] is False
    state = (await client.get(f"/api/jobs/{job['job_id']}/state")).json()
    assert [r["data"] for r in state["shared_data"]["results"]["sink"]] == ["A", "B", "C"]
    for key in ("routine_states", "execution_history", "shared_data", "pause_points", "deferred_events"):
        assert key in state
    assert state["routine_states"]["clean"]["execution_count"] >= 1
    status = (await client.get(f"/api/jobs/{job['job_id']}/status")).json()
    assert status["status"] == "completed" and status["last_seq"] > 0


async def test_unknown_flow_runtime_and_entry_ports(client: httpx.AsyncClient, uid: str) -> None:
    flow_id = await etl(client, uid)
    no_flow = await client.post("/api/jobs", json={"flow_id": f"nope-{uid}"})
    assert no_flow.status_code == 404 and error_of(no_flow)["error"] == "flow_not_found"
    no_runtime = await client.post("/api/jobs", json={"flow_id": flow_id, "runtime_id": "production"})
    assert no_runtime.status_code == 404
    assert "GET /api/runtimes" in error_of(no_runtime)["message"]
    bad_routine = await client.post(
        "/api/jobs", json={"flow_id": flow_id, "entry": {"routine_id": "x", "slot_name": "y"}}
    )
    assert bad_routine.status_code == 404 and error_of(bad_routine)["error"] == "unknown_routine"
    bad_slot = await client.post(
        "/api/jobs", json={"flow_id": flow_id, "entry": {"routine_id": "sink", "slot_name": "y"}}
    )
    assert bad_slot.status_code == 404 and error_of(bad_slot)["error"] == "unknown_slot"


@pytest.mark.parametrize("timeout", [0, -1, 86401, "soon"])
async def test_timeout_bounds(client: httpx.AsyncClient, uid: str, timeout: object) -> None:
    flow_id = await etl(client, f"{uid}-{timeout}")
    response = await client.post("/api/jobs", json={"flow_id": flow_id, "timeout": timeout})
    assert response.status_code == 422 and error_of(response)["field"] == "body.timeout"


async def test_timeout_is_enforced(client: httpx.AsyncClient, uid: str) -> None:
    flow_id = await slow(client, uid)
    job = await start_job(
        client, flow_id=flow_id, timeout=0.3, entry={"routine_id": "slow", "slot_name": "input", "data": 1}
    )
    done = await wait_job(client, job["job_id"])
    assert done["status"] == "failed" and done["error_detail"]["type"] == "timeout"
    assert done["error"] == f"timeout: {done['error_detail']['message']}"


async def test_pause_resume_cancel_and_illegal_transitions(client: httpx.AsyncClient, uid: str) -> None:
    flow_id = await slow(client, uid, delay=0.2)
    job = await start_job(client, flow_id=flow_id)
    job_id = job["job_id"]
    paused = await client.post(f"/api/jobs/{job_id}/pause")
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    posted = await client.post(f"/api/jobs/{job_id}/post", json={"routine_id": "slow", "slot_name": "input", "data": 7})
    assert posted.status_code == 202
    assert posted.json()["queue"]["unconsumed"] == 1 and posted.json()["status"] == "paused"
    state = (await client.get(f"/api/jobs/{job_id}/state")).json()
    assert state["deferred_events"] == [{"routine_id": "slow", "slot": "input", "count": 1}]
    resumed = await client.post(f"/api/jobs/{job_id}/resume")
    assert resumed.json()["status"] in {"running", "idle"}
    assert (await client.post(f"/api/jobs/{job_id}/resume")).status_code == 200  # idempotent
    await asyncio.sleep(0.4)
    state = (await client.get(f"/api/jobs/{job_id}/state")).json()
    assert state["shared_data"]["batches"]["sink"] == [[7]]
    cancelled = await client.post(f"/api/jobs/{job_id}/cancel")
    assert cancelled.json()["status"] == "cancelled"
    for action in ("pause", "resume", "cancel", "complete", "fail"):
        again = await client.post(f"/api/jobs/{job_id}/{action}")
        assert again.status_code == 409, action
        assert error_of(again)["status"] == "cancelled"
    post_after = await client.post(f"/api/jobs/{job_id}/post", json={"routine_id": "slow", "slot_name": "input"})
    assert post_after.status_code == 409 and error_of(post_after)["status"] == "cancelled"


async def test_complete_and_fail_from_outside(client: httpx.AsyncClient, uid: str) -> None:
    flow_id = await slow(client, uid)
    a = await start_job(client, flow_id=flow_id)
    assert (await client.post(f"/api/jobs/{a['job_id']}/complete")).json()["status"] == "completed"
    b = await start_job(client, flow_id=flow_id)
    failed = await client.post(f"/api/jobs/{b['job_id']}/fail", json={"reason": "bad input upstream"})
    assert failed.json()["status"] == "failed"
    assert failed.json()["error"] == "failed_by_request: bad input upstream"
    assert failed.json()["error_detail"] == {"type": "failed_by_request", "message": "bad input upstream"}


async def test_post_errors(client: httpx.AsyncClient, uid: str) -> None:
    flow_id = await slow(client, uid)
    job = await start_job(client, flow_id=flow_id)
    url = f"/api/jobs/{job['job_id']}/post"
    assert (await client.post(url, json={"routine_id": "nope", "slot_name": "input"})).status_code == 404
    assert (await client.post(url, json={"routine_id": "slow", "slot_name": "nope"})).status_code == 404
    assert (await client.post(url, json={"slot_name": "input"})).status_code == 422
    assert (
        await client.post(f"/api/jobs/nope-{uid}/post", json={"routine_id": "slow", "slot_name": "input"})
    ).status_code == 404
    await client.post(f"/api/jobs/{job['job_id']}/cancel")


async def test_unknown_jobs_are_404_everywhere(client: httpx.AsyncClient, uid: str) -> None:
    for path in ("", "/status", "/state", "/execution-history", "/trace", "/logs", "/events"):
        response = await client.get(f"/api/jobs/ghost-{uid}{path}")
        assert response.status_code == 404, path
        assert error_of(response)["error"] == "job_not_found"
    for action in ("pause", "resume", "cancel", "complete", "fail", "wait"):
        assert (await client.post(f"/api/jobs/ghost-{uid}/{action}")).status_code == 404


async def test_wait_times_out_and_is_bounded(client: httpx.AsyncClient, uid: str) -> None:
    flow_id = await slow(client, uid)
    job = await start_job(client, flow_id=flow_id)
    waited = await client.post(f"/api/jobs/{job['job_id']}/wait", json={"timeout": 0.1})
    assert waited.json()["timed_out"] is True and waited.json()["status"] == "idle"
    too_long = await client.post(f"/api/jobs/{job['job_id']}/wait", json={"timeout": 10_000})
    assert too_long.status_code == 422
    await client.post(f"/api/jobs/{job['job_id']}/cancel")


async def test_listing_filters_and_pages(client: httpx.AsyncClient, uid: str) -> None:
    flow_id = await slow(client, uid)
    ids = [(await start_job(client, flow_id=flow_id))["job_id"] for _ in range(3)]
    await client.post(f"/api/jobs/{ids[0]}/cancel")
    listing = (await client.get("/api/jobs", params={"flow_id": flow_id})).json()
    assert listing["total"] == 3
    assert [j["job_id"] for j in listing["jobs"]] == ids[::-1]  # newest first
    cancelled = (await client.get("/api/jobs", params={"flow_id": flow_id, "status": "cancelled"})).json()
    assert [j["job_id"] for j in cancelled["jobs"]] == [ids[0]]
    page = (await client.get("/api/jobs", params={"flow_id": flow_id, "limit": 1, "offset": 1})).json()
    assert [j["job_id"] for j in page["jobs"]] == [ids[1]] and page["total"] == 3
    by_runtime = (await client.get("/api/jobs", params={"flow_id": flow_id, "runtime_id": "default"})).json()
    assert by_runtime["total"] == 3
    assert (await client.get("/api/jobs", params={"status": "sleeping"})).status_code == 422
    for job_id in ids[1:]:
        await client.post(f"/api/jobs/{job_id}/cancel")


async def test_history_trace_logs_and_events_since(client: httpx.AsyncClient, uid: str) -> None:
    flow_id = await etl(client, uid)
    job = await start_job(
        client,
        flow_id=flow_id,
        complete_when_idle=True,
        entry={"routine_id": "source", "slot_name": "trigger", "data": {}},
    )
    job_id = job["job_id"]
    await wait_job(client, job_id)
    history = (await client.get(f"/api/jobs/{job_id}/execution-history")).json()
    assert [h["routine_id"] for h in history["history"]][:1] == ["source"]
    only_sink = (await client.get(f"/api/jobs/{job_id}/execution-history", params={"routine_id": "sink"})).json()
    assert {h["routine_id"] for h in only_sink["history"]} == {"sink"}
    events = (await client.get(f"/api/jobs/{job_id}/events")).json()
    seqs = [e["seq"] for e in events["events"]]
    assert seqs == list(range(1, len(seqs) + 1)) and events["events"][-1]["type"] == "job_end"
    later = (await client.get(f"/api/jobs/{job_id}/events", params={"since": 5, "limit": 3})).json()
    assert [e["seq"] for e in later["events"]] == [6, 7, 8]
    trace = (await client.get(f"/api/jobs/{job_id}/trace")).json()
    assert {e["type"] for e in trace["trace"]} <= {"routine_start", "routine_end", "slot_call", "event_emit"}
    logs = (await client.get(f"/api/jobs/{job_id}/logs")).json()
    assert logs["logs"] == []
    assert (await client.get(f"/api/jobs/{job_id}/events", params={"since": -1})).status_code == 422


async def test_cleanup_removes_finished_jobs(client: httpx.AsyncClient, uid: str) -> None:
    flow_id = await slow(client, uid)
    done = await start_job(client, flow_id=flow_id)
    await client.post(f"/api/jobs/{done['job_id']}/cancel")
    live = await start_job(client, flow_id=flow_id)
    result = (await client.post("/api/jobs/cleanup", json={"flow_id": flow_id, "older_than_seconds": 0})).json()
    assert result["job_ids"] == [done["job_id"]] and result["deleted"] == 1
    assert (await client.get(f"/api/jobs/{done['job_id']}")).status_code == 404
    assert (await client.get(f"/api/jobs/{live['job_id']}")).status_code == 200
    await client.post(f"/api/jobs/{live['job_id']}/cancel")
    bad = await client.post("/api/jobs/cleanup", json={"statuses": ["running"]})
    assert bad.status_code == 422


async def test_a_cleanup_without_a_criterion_deletes_nothing_and_says_why(client: httpx.AsyncClient, uid: str) -> None:
    flow_id = await slow(client, uid)
    done = await start_job(client, flow_id=flow_id)
    await client.post(f"/api/jobs/{done['job_id']}/cancel")
    for body in (None, {}, {"flow_id": flow_id}, {"flow_id": flow_id, "limit": 5}):
        refused = await client.post("/api/jobs/cleanup", json=body)
        assert refused.status_code == 422, body
        error = error_of(refused)
        assert error["error"] == "criterion_required" and "older_than_seconds or statuses" in error["message"]
    assert (await client.get(f"/api/jobs/{done['job_id']}")).status_code == 200


async def test_a_cleanup_takes_its_criteria_from_the_query_as_dashboards_send_them(
    client: httpx.AsyncClient, uid: str
) -> None:
    flow_id = await slow(client, uid)
    cancelled = (await start_job(client, flow_id=flow_id))["job_id"]
    failed = (await start_job(client, flow_id=flow_id))["job_id"]
    await client.post(f"/api/jobs/{cancelled}/cancel")
    await client.post(f"/api/jobs/{failed}/fail", json={"reason": "test"})
    only_this_flow = {"flow_id": flow_id}

    by_status = await client.post("/api/jobs/cleanup", params=[("status", "cancelled")], json=only_this_flow)
    assert by_status.json()["job_ids"] == [cancelled]
    too_young = await client.post("/api/jobs/cleanup", params={"max_age_hours": "1"}, json=only_this_flow)
    assert too_young.json()["job_ids"] == []
    several = await client.post("/api/jobs/cleanup", params=[("status", "failed"), ("status", "completed"),
                                                             ("max_age_hours", "0")], json=only_this_flow)
    assert several.json()["job_ids"] == [failed]

    twice = await client.post("/api/jobs/cleanup", params={"status": "failed"},
                              json={**only_this_flow, "statuses": ["failed"]})
    assert twice.status_code == 422 and error_of(twice)["field"] == "query.status"
    for params in ({"status": "running"}, {"max_age_hours": "-1"}, {"max_age_hours": "nan"}, {"max_age_hours": "x"}):
        bad = await client.post("/api/jobs/cleanup", params=params, json=only_this_flow)
        assert bad.status_code == 422 and error_of(bad)["field"] == f"query.{next(iter(params))}", params


async def test_a_failing_routine_fails_the_job_with_its_error(client: httpx.AsyncClient, uid: str) -> None:
    flow_id = f"boom-{uid}"
    await create_flow(
        client,
        dsl_dict={
            "flow_id": flow_id,
            "routines": {"gen": {"class": "ErrorGenerator", "config": {"should_fail": True}}},
        },
    )
    job = await start_job(client, flow_id=flow_id, entry={"routine_id": "gen", "slot_name": "input", "data": 1})
    done = await wait_job(client, job["job_id"])
    assert done["status"] == "failed" and done["error_detail"]["routine_id"] == "gen"
    assert "Traceback" in done["error_detail"]["traceback"]

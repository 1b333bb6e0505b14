"""Jobs outlive the server process: after a graceful stop or a crash, every live job is live again
in its status, with its data, queues and the posts acknowledged after its last checkpoint; its
events go on from where they stopped, with one ``job_resume`` (``reason: "restart"``) between."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.rest import slow_flow
from tests.support.servers import ServerProcess

pytestmark = pytest.mark.single_process

KEEP = {"flow_id": "keep", "routines": {"sink": {"class": "DataSink"}}}
NOT_DURABLE = {"flow_id": "fleeting", "execution": {"durable": False}, "routines": {"sink": {"class": "DataSink"}}}


def post(http: httpx.Client, job_id: str, value: Any) -> None:
    response = http.post(f"/api/jobs/{job_id}/post", json={"routine_id": "sink", "slot_name": "input",
                                                            "data": {"v": value}})
    assert response.status_code == 202, response.text


def kept(http: httpx.Client, job_id: str) -> list[Any]:
    state = http.get(f"/api/jobs/{job_id}/state").json()
    return [item["v"] for item in state["shared_data"].get("results", {}).get("sink", [])]


def wait_idle(http: httpx.Client, job_id: str) -> None:
    for _ in range(500):
        if http.get(f"/api/jobs/{job_id}").json()["status"] in ("idle", "paused"):
            return
        http.post(f"/api/jobs/{job_id}/wait", json={"timeout": 0.02})
    raise AssertionError(f"job {job_id} never settled")


def events(http: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = http.get(f"/api/jobs/{job_id}/events", params={"since": 0}).json()["events"]
    return found


def assert_seq_continues(found: list[dict[str, Any]]) -> None:
    """Seqs 1, 2, 3... with no gap, and exactly one restart boundary."""
    seqs = [e["seq"] for e in found]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    restarts = [e for e in found if e["type"] == "job_resume" and e["data"].get("reason") == "restart"]
    assert len(restarts) == 1, [e["type"] for e in found]


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["graceful stop", "crash"])
def test_live_jobs_come_back_after_a_restart(tmp_path: Path, stop: signal.Signals) -> None:
    db = tmp_path / "r.db"
    server = ServerProcess(db).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for flow in (KEEP, NOT_DURABLE, slow_flow("slow", 0.5)):
                assert http.post("/api/flows", json={"dsl_dict": flow}).status_code == 201
            idle = http.post("/api/jobs", json={"flow_id": "keep"}).json()["job_id"]
            paused = http.post("/api/jobs", json={"flow_id": "keep"}).json()["job_id"]
            running = http.post("/api/jobs", json={"flow_id": "slow"}).json()["job_id"]
            fleeting = http.post("/api/jobs", json={"flow_id": "fleeting"}).json()["job_id"]
            # the start's choice beats the flow's: a durable flow's job opts out, and the other way
            opted_out = http.post("/api/jobs", json={"flow_id": "keep", "durable": False}).json()["job_id"]
            opted_in = http.post("/api/jobs", json={"flow_id": "fleeting", "durable": True}).json()["job_id"]
            for job_id, durable in ((idle, True), (fleeting, False), (opted_out, False), (opted_in, True)):
                state = http.get(f"/api/jobs/{job_id}/state").json()
                assert (state["durable"], state["checkpoint_error"]) == (durable, None), job_id
            post(http, opted_in, "in")
            for v in range(3):
                post(http, idle, v)
            wait_idle(http, idle)
            assert http.post(f"/api/jobs/{paused}/pause").status_code == 200
            post(http, paused, "parked")  # held while paused
            fed = http.post(f"/api/jobs/{running}/post", json={"routine_id": "slow", "slot_name": "input", "data": 1})
            assert fed.status_code == 202, fed.text
            breakpoint = http.post(f"/api/breakpoints/{idle}", json={"routine_id": "sink", "condition": "v == 99"})
            assert breakpoint.status_code == 201, breakpoint.text
            post(http, idle, "last")  # acknowledged: committed even if no checkpoint follows it
    finally:
        server.stop(stop)

    server = ServerProcess(db).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.get(f"/api/jobs/{paused}").json()["status"] == "paused"
            assert http.get(f"/api/jobs/{idle}").json()["status"] in ("running", "idle")
            # a job that is not durable ends as it always did: cancelled by a clean stop, failed
            # (interrupted) by a crash
            for job_id in (fleeting, opted_out):
                now = http.get(f"/api/jobs/{job_id}").json()
                if stop == signal.SIGTERM:
                    assert now["status"] == "cancelled", now
                else:
                    assert now["status"] == "failed" and "interrupted" in now["error_detail"]["message"], now
                assert http.get(f"/api/jobs/{job_id}/state").json()["durable"] is False
            assert http.get(f"/api/jobs/{opted_in}").json()["status"] in ("running", "idle")
            assert kept(http, opted_in) == ["in"]
            assert http.get(f"/api/jobs/{opted_in}/state").json()["durable"] is True
            wait_idle(http, idle)
            # at-least-once: an item in flight at the last checkpoint may have been kept twice
            assert set(map(str, kept(http, idle))) == {"0", "1", "2", "last"}
            assert kept(http, paused) == []
            assert http.post(f"/api/jobs/{paused}/resume").status_code == 200
            wait_idle(http, paused)
            assert set(kept(http, paused)) == {"parked"}
            # the slow item was in flight or queued: it runs (again) and reaches the sink
            status = http.post(f"/api/jobs/{running}/wait", json={"timeout": 0.01}).json()["status"]
            assert status in ("running", "idle")
            for job_id in (idle, paused):
                assert_seq_continues(events(http, job_id))
    finally:
        server.stop()

"""What survives a restart: flows, runtimes and finished jobs; running jobs end as interrupted."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import httpx

from tests.support.rest import etl_yaml, slow_flow
from tests.support.servers import ServerProcess


def _start(db: Path, **env: str) -> ServerProcess:
    return ServerProcess(db, **env).start()


def not_durable(flow: dict[str, Any]) -> dict[str, Any]:
    """``flow`` opted out of checkpoints: its live jobs do not outlive the process (test_resume.py
    shows what durable jobs do)."""
    return {**flow, "execution": {"durable": False}}


def test_a_crash_leaves_flows_and_finished_jobs_and_fails_running_ones_that_are_not_durable(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    first = _start(db)
    try:
        with httpx.Client(base_url=first.url, timeout=30) as http:
            assert http.post("/api/flows", json={"dsl": etl_yaml("etl")}).status_code == 201
            assert http.post("/api/flows", json={"dsl_dict": not_durable(slow_flow("slow", 30))}).status_code == 201
            assert http.post("/api/runtimes", json={"runtime_id": "batch", "thread_pool_size": 3}).status_code == 201
            done = http.post("/api/jobs", json={"flow_id": "etl", "complete_when_idle": True, "entry": {
                "routine_id": "source", "slot_name": "trigger", "data": {}}}).json()
            assert http.post(f"/api/jobs/{done['job_id']}/wait", json={"timeout": 10}).json()["status"] == "completed"
            running = http.post("/api/jobs", json={"flow_id": "slow", "runtime_id": "batch", "entry": {
                "routine_id": "slow", "slot_name": "input", "data": 1}}).json()
            http.post("/api/discovery/jobs/sync")  # make sure the running record is on disk
    finally:
        first.stop(signal.SIGKILL)  # a crash: no clean shutdown

    second = _start(db)
    try:
        with httpx.Client(base_url=second.url, timeout=30) as http:
            flows = {f["flow_id"] for f in http.get("/api/flows").json()["flows"]}
            assert flows == {"etl", "slow"}
            assert http.get("/api/runtimes/batch").json()["total_threads"] == 3
            finished = http.get(f"/api/jobs/{done['job_id']}").json()
            assert finished["status"] == "completed"
            state = http.get(f"/api/jobs/{done['job_id']}/state").json()
            assert [r["data"] for r in state["shared_data"]["results"]["sink"]] == ["A", "B", "C"]
            interrupted = http.get(f"/api/jobs/{running['job_id']}").json()
            assert interrupted["status"] == "failed"
            assert interrupted["error_detail"] == {"type": "interrupted", "message": "interrupted: server restarted"}
            assert interrupted["error"] == "interrupted: interrupted: server restarted"
            events = http.get(f"/api/jobs/{done['job_id']}/events").json()["events"]
            assert events[-1]["type"] == "job_end"
            assert http.post(f"/api/jobs/{running['job_id']}/resume").status_code == 409
    finally:
        second.stop()


def test_a_clean_shutdown_cancels_and_records_running_jobs_that_are_not_durable(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    first = _start(db)
    try:
        with httpx.Client(base_url=first.url, timeout=30) as http:
            http.post("/api/flows", json={"dsl_dict": not_durable(slow_flow("slow", 30))})
            job = http.post("/api/jobs", json={"flow_id": "slow", "entry": {
                "routine_id": "slow", "slot_name": "input", "data": 1}}).json()
    finally:
        # uvicorn shuts down gracefully, then re-raises the signal so the exit status shows it
        assert first.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    second = _start(db)
    try:
        with httpx.Client(base_url=second.url, timeout=30) as http:
            record = http.get(f"/api/jobs/{job['job_id']}").json()
            assert record["status"] == "cancelled"
            assert record["error_detail"]["message"] == "runtime shut down"
    finally:
        second.stop()


def test_flows_dir_is_loaded_at_start_and_synced_on_request(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "etl.yaml").write_text(etl_yaml("etl"))
    (flows / "broken.yaml").write_text("flow_id: broken\nroutines: [")
    server = _start(tmp_path / "d.db", ROUTILUX_FLOWS_DIR=str(flows))
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.get("/api/flows/etl").json()["source"].endswith("etl.yaml")
            found = {f["file"].rsplit("/", 1)[-1]: f for f in http.get("/api/discovery/flows").json()["flows"]}
            assert found["etl.yaml"]["in_sync"] is True and found["broken.yaml"]["valid"] is False
            (flows / "etl.yaml").write_text(
                etl_yaml("etl").replace("description: extract, clean, keep", "description: v2")
            )
            (flows / "more.json").write_text('{"flow_id": "more", "routines": {"s": {"class": "DataSink"}}}')
            synced = http.post("/api/discovery/flows/sync").json()
            assert synced["updated"] == ["etl"] and synced["created"] == ["more"]
            assert [e["file"].rsplit("/", 1)[-1] for e in synced["errors"]] == ["broken.yaml"]
            assert http.get("/api/flows/etl").json()["description"] == "v2"
            assert http.get("/api/flows/etl").json()["revision"] == 2
    finally:
        server.stop()


def test_bad_settings_stop_the_server_with_a_message_naming_the_variable(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "routilux.api.main"],
        env={"PATH": "/usr/bin:/bin", "ROUTILUX_API_PORT": "http", "ROUTILUX_DB": str(tmp_path / "x.db")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "ROUTILUX_API_PORT='http': expected a whole number" in result.stderr
    assert "Traceback" not in result.stderr

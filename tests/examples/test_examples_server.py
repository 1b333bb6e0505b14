"""Examples that need a server: the custom routine via ROUTILUX_ROUTINE_MODULES, the WebSocket
client script, and the demo flows of ROUTILUX_DEBUGGER_MODE — all against a real server process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.servers import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

DEMO = ("linear_flow", "branching_flow", "complex_flow", "error_flow")


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    db = tmp_path_factory.mktemp("examples") / "routilux.db"
    proc = ServerProcess(db, ROUTILUX_DEBUGGER_MODE="true", ROUTILUX_ROUTINE_MODULES="word_routines",
                         PYTHONPATH=str(EXAMPLES / "custom_routine")).start()
    yield proc
    proc.stop()


def _start_and_wait(url: str, flow_id: str, entry: dict, posts: list[dict] = ()) -> dict:
    """Start a job that completes when idle (posting everything first), wait, return its state."""
    with httpx.Client(base_url=url, timeout=30) as http:
        job = http.post("/api/jobs", json={"flow_id": flow_id, "complete_when_idle": True, "entry": entry})
        assert job.status_code < 300, job.text
        job_id = job.json()["job_id"]
        for post in posts:
            http.post(f"/api/jobs/{job_id}/post", json=post)
        http.post(f"/api/jobs/{job_id}/wait", json={"timeout": 10})
        return http.get(f"/api/jobs/{job_id}/state").json()


def test_debugger_mode_registers_four_runnable_demo_flows(demo_server: ServerProcess) -> None:
    flows = {f["flow_id"] for f in httpx.get(demo_server.url + "/api/flows", timeout=10).json()["flows"]}
    assert set(DEMO) <= flows
    trigger = {"routine_id": "source", "slot_name": "trigger", "data": "hi"}
    linear = _start_and_wait(demo_server.url, "linear_flow", trigger)
    assert linear["status"] == "completed"
    assert [i["data"] for i in linear["shared_data"]["results"]["sink"]] == ["HI"]
    branching = _start_and_wait(demo_server.url, "branching_flow", trigger)
    assert sorted(i["data"] for i in branching["shared_data"]["results"]["sink"]) == ["HI", "hihi"]
    complex_ = _start_and_wait(
        demo_server.url,
        "complex_flow",
        {"routine_id": "source1", "slot_name": "trigger", "data": "a"},
        [{"routine_id": "source2", "slot_name": "trigger", "data": 2}],
    )
    assert complex_["status"] == "completed", complex_["error"]
    assert sorted(map(str, (i["data"] for i in complex_["shared_data"]["results"]["sink"]))) == ["['A', 6]", "a"]
    passing = _start_and_wait(demo_server.url, "error_flow", trigger)
    assert passing["status"] == "completed"
    failing = _start_and_wait(demo_server.url, "error_flow", {**trigger, "data": {"fail": True}})
    assert failing["status"] == "failed"
    assert failing["error"] == "GeneratedError: failed on demand"
    assert failing["error_detail"]["message"] == "failed on demand"
    assert failing["error_detail"]["routine_id"] == "processor"


def test_without_debugger_mode_there_are_no_demo_flows(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path / "plain.db").start()
    try:
        flows = {f["flow_id"] for f in httpx.get(proc.url + "/api/flows", timeout=10).json()["flows"]}
    finally:
        proc.stop()
    assert not flows & set(DEMO)


def test_custom_routine_is_registered_through_routine_modules(demo_server: ServerProcess) -> None:
    info = httpx.get(demo_server.url + "/api/factory/objects/WordCount", timeout=10)
    assert info.status_code == 200, info.text
    created = httpx.post(
        demo_server.url + "/api/flows",
        timeout=10,
        json={"dsl": (EXAMPLES / "custom_routine" / "wordcount.yaml").read_text()},
    )
    assert created.status_code < 300, created.text
    state = _start_and_wait(
        demo_server.url,
        "wordcount",
        {"routine_id": "count", "slot_name": "text", "data": "The cat saw the other cat. The end!"},
    )
    assert state["status"] == "completed", state["error"]
    assert state["shared_data"]["results"]["keep"] == [{"data": {"the": 3, "cat": 2, "saw": 1}}]


def test_client_script_starts_a_job_and_streams_its_events(demo_server: ServerProcess) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "client.py"),
            "--server",
            demo_server.url,
            "--flow-file",
            str(EXAMPLES / "flows" / "etl.yaml"),
            "--data",
            '"hello"',
            "--timeout",
            "20",
        ],
        capture_output=True,
        text=True,
        timeout=40,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("job ")
    events = [line.split()[1] for line in lines[1:-1]]
    assert events[0] == "job_start" and events[-1] == "job_end"
    assert {"routine_start", "routine_end", "slot_call", "event_emit"} <= set(events)
    seqs = [int(line.split()[0]) for line in lines[1:-1]]
    assert seqs == list(range(1, len(seqs) + 1))  # replayed from since=0: nothing missed
    assert lines[-1] == "job completed"

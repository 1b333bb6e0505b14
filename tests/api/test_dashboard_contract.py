"""The Routilux Overseer dashboard's contract: one test per view, each asserting exactly the fields
that view reads (and their types), so the dashboard works against this server unchanged.

The dashboard is a separate web app built for this API family; these are the paths and fields
its views read (issue 18). A field it reads that is missing or of another type crashes the view
— a list that renders ``error`` as text dies on an object — so every field below is checked for
presence and type on a real server's answers. Fields a view does not read are not asserted here
(the spec, which every answer is validated against, covers those).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.rest import create_flow, poll, start_job, wait_job
from tests.support.servers import ServerProcess, start_deployment
from tests.support.spec_check import httpx_sync_event_hook
from tests.support.ws import open_ws, recv

STR, INT, NUM, BOOL, LIST, DICT = str, int, (int, float), bool, list, dict
OPT_STR = (str, type(None))
OPT_NUM = (int, float, type(None))
OPT_DICT = (dict, type(None))


def reads(value: Any, fields: dict[str, Any], where: str = "") -> None:
    """``value`` has every field the view reads, each of its type (a nested dict: an object
    with those fields)."""
    assert isinstance(value, dict), f"{where or 'the answer'} is not an object: {value!r}"
    for name, kind in fields.items():
        at = f"{where}.{name}" if where else name
        assert name in value, f"the view reads {at}, which is missing: {sorted(value)}"
        if isinstance(kind, dict):
            reads(value[name], kind, at)
        else:
            assert isinstance(value[name], kind), f"{at} is {value[name]!r}, not {kind}"
            assert not (kind in (INT, NUM) and isinstance(value[name], bool)), f"{at} is a bool"


async def failing_job(client: httpx.AsyncClient, uid: str) -> dict[str, Any]:
    flow_id = f"dash-fail-{uid}"
    await create_flow(client, dsl_dict={"flow_id": flow_id, "routines": {
        "gen": {"class": "ErrorGenerator", "config": {"should_fail": True}}}})
    job = await start_job(client, flow_id=flow_id, entry={"routine_id": "gen", "slot_name": "input", "data": 1})
    return await wait_job(client, job["job_id"])


async def pipeline_job(client: httpx.AsyncClient, uid: str, **start: Any) -> tuple[str, str]:
    """source -> double -> sink, with one item through it; returns (flow id, job id)."""
    flow_id = f"dash-{uid}"
    await create_flow(client, dsl_dict={
        "flow_id": flow_id,
        "routines": {"source": {"class": "DataSource"}, "double": {"class": "DataMultiplier", "config": {"factor": 2}},
                     "sink": {"class": "DataSink"}},
        "connections": [{"from": "source.output", "to": "double.input"}, {"from": "double.output", "to": "sink.input"}],
    })
    job = await start_job(client, flow_id=flow_id, **start)
    return flow_id, job["job_id"]


# -- 6. `error` is text wherever a job is shown (the jobs list, the job page, routine states) ------
JOB_ROW = {"job_id": STR, "flow_id": STR, "status": STR, "created_at": STR, "error": OPT_STR}


async def test_jobs_list_and_job_page_show_error_as_text(client: httpx.AsyncClient, uid: str,
                                                         server: ServerProcess) -> None:
    done = await failing_job(client, uid)
    job_id, flow_id = done["job_id"], done["flow_id"]
    listed = (await client.get("/api/jobs", params={"flow_id": flow_id})).json()["jobs"]
    page = (await client.get(f"/api/jobs/{job_id}")).json()
    status = (await client.get(f"/api/jobs/{job_id}/status")).json()
    for view in (listed[0], page, done, status):
        reads(view, {"job_id": STR, "status": STR, "error": STR, "error_detail": DICT})
        assert view["error"] == "GeneratedError: generated error" and view["error_detail"]["routine_id"] == "gen"
    reads(listed[0], JOB_ROW)
    state = (await client.get(f"/api/jobs/{job_id}/state")).json()
    reads(state, {"error": STR, "routine_states": {"gen": {"status": STR, "error": STR, "error_detail": DICT}}})
    async with open_ws(server, f"/api/ws/jobs/{job_id}/monitor") as ws:
        snapshot = await recv(ws)
    reads(snapshot, {"status": STR, "error": STR, "error_detail": DICT,
                     "routine_states": {"gen": {"error": STR, "error_detail": DICT}}})


# -- 7. the job page's History tab ---------------------------------------------------------------
async def test_execution_history_timeline(client: httpx.AsyncClient, uid: str) -> None:
    _flow_id, job_id = await pipeline_job(client, uid, complete_when_idle=True,
                                          entry={"routine_id": "source", "slot_name": "trigger", "data": 4})
    await wait_job(client, job_id)
    record = {"routine_id": STR, "timestamp": STR, "event_name": STR,
              "data": {"items": INT, "duration": NUM, "attempt": INT, "error": OPT_STR}}
    history = (await client.get(f"/api/jobs/{job_id}/execution-history")).json()["history"]
    state = (await client.get(f"/api/jobs/{job_id}/state")).json()
    for records in (history, state["execution_history"]):
        assert [r["routine_id"] for r in records] == ["source", "double", "sink"]
        for r in records:
            reads(r, record)
            assert r["timestamp"] == r["started_at"] and r["data"]["items"] == r["items"] == 1


# -- 8. the job page's state: pause points and when it last changed --------------------------------
async def test_job_state_pause_points(client: httpx.AsyncClient, uid: str) -> None:
    _flow_id, job_id = await pipeline_job(client, uid)
    started = (await client.get(f"/api/jobs/{job_id}/state")).json()
    assert (await client.post(f"/api/jobs/{job_id}/pause", json={"reason": "look"})).status_code == 200
    state = (await client.get(f"/api/jobs/{job_id}/state")).json()
    reads(state, {"status": STR, "updated_at": STR, "pause_points": LIST, "routine_states": DICT,
                  "execution_history": LIST, "shared_data": DICT, "deferred_events": LIST})
    (point,) = state["pause_points"]
    reads(point, {"timestamp": STR, "reason": STR, "current_routine_id": OPT_STR})
    assert point["timestamp"] == point["paused_at"] and point["current_routine_id"] is None  # nothing was running
    assert state["updated_at"] == point["paused_at"] > started["updated_at"]
    # A breakpoint's pause names the routine it stopped before.
    bp = await client.post(f"/api/jobs/{job_id}/breakpoints", json={"routine_id": "double"})
    assert bp.status_code == 201
    assert (await client.post(f"/api/jobs/{job_id}/resume")).status_code == 200
    await client.post(f"/api/jobs/{job_id}/post", json={"routine_id": "source", "slot_name": "trigger", "data": 1})
    state = await poll(lambda: client.get(f"/api/jobs/{job_id}/state"),
                       lambda r: len(r.json()["pause_points"]) == 2, "the breakpoint's pause")
    assert state.json()["pause_points"][-1]["current_routine_id"] == "double"


# -- 1. the job page's Monitoring panel -------------------------------------------------------------
SLOT_QUEUE_STATUS = {"slot_name": STR, "routine_id": STR, "unconsumed_count": INT, "total_count": INT,
                     "max_length": INT, "watermark_threshold": NUM, "usage_percentage": NUM, "pressure_level": STR,
                     "is_full": BOOL, "is_near_full": BOOL}


async def test_job_monitoring_view(client: httpx.AsyncClient, uid: str) -> None:
    _flow_id, job_id = await pipeline_job(client, uid, entry={"routine_id": "source", "slot_name": "trigger",
                                                              "data": 1})
    await poll(lambda: client.get(f"/api/jobs/{job_id}"), lambda r: r.json()["status"] == "idle", "idle")
    view = (await client.get(f"/api/jobs/{job_id}/monitoring")).json()
    reads(view, {"job_id": STR, "flow_id": STR, "job_status": STR, "routines": DICT, "updated_at": STR})
    assert view["job_status"] == "idle" and set(view["routines"]) == {"source", "double", "sink"}
    for rid, routine in view["routines"].items():
        reads(routine, {
            "routine_id": STR,
            "execution_status": {"routine_id": STR, "is_active": BOOL, "status": STR,
                                 "last_execution_time": OPT_STR, "execution_count": INT, "error_count": INT,
                                 "active_thread_count": INT},
            "queue_status": LIST,
            "info": {"routine_id": STR, "routine_type": STR, "activation_policy": DICT, "config": DICT,
                     "slots": LIST, "events": LIST},
        }, rid)
        for queue in routine["queue_status"]:
            reads(queue, SLOT_QUEUE_STATUS, f"{rid}.queue_status")
    double = view["routines"]["double"]
    assert double["execution_status"]["execution_count"] == 1 and double["execution_status"]["is_active"] is False
    assert double["info"] == {"routine_id": "double", "routine_type": "DataMultiplier",
                              "activation_policy": {"type": "immediate"}, "config": {"factor": 2},
                              "slots": ["input"], "events": ["output"]}
    assert [q["slot_name"] for q in double["queue_status"]] == ["input"]


# -- 2. the job page's Metrics panel ------------------------------------------------------------------
async def test_job_metrics_view(client: httpx.AsyncClient, uid: str) -> None:
    _flow_id, job_id = await pipeline_job(client, uid, complete_when_idle=True,
                                          entry={"routine_id": "source", "slot_name": "trigger", "data": 1})
    await wait_job(client, job_id)
    metrics = (await client.get(f"/api/jobs/{job_id}/metrics")).json()
    reads(metrics, {"job_id": STR, "flow_id": STR, "start_time": STR, "end_time": OPT_STR, "duration": OPT_NUM,
                    "routine_metrics": DICT, "total_events": INT, "total_slot_calls": INT,
                    "total_event_emits": INT, "errors": LIST})
    assert set(metrics["routine_metrics"]) == {"source", "double", "sink"}
    for rid, routine in metrics["routine_metrics"].items():
        reads(routine, {"routine_id": STR, "execution_count": INT, "total_duration": NUM, "avg_duration": NUM,
                        "min_duration": NUM, "max_duration": NUM, "error_count": INT,
                        "last_execution": OPT_STR}, rid)
    assert metrics["total_slot_calls"] == 3 and metrics["total_event_emits"] == 2  # trigger, double, sink
    assert metrics["total_events"] == metrics["events_seen"] > 0


async def test_job_metrics_view_has_numbers_before_any_execution(client: httpx.AsyncClient, uid: str) -> None:
    _flow_id, job_id = await pipeline_job(client, uid)
    await poll(lambda: client.get(f"/api/jobs/{job_id}"), lambda r: r.json()["status"] == "idle", "idle")
    metrics = (await client.get(f"/api/jobs/{job_id}/metrics")).json()
    for rid, routine in metrics["routine_metrics"].items():
        reads(routine, {"avg_duration": NUM, "min_duration": NUM, "max_duration": NUM}, rid)
        assert routine["execution_count"] == 0 and routine["avg_duration"] == 0


# -- 3. the job page's Queues tab ---------------------------------------------------------------------
async def test_queue_status_panel(client: httpx.AsyncClient, uid: str) -> None:
    _flow_id, job_id = await pipeline_job(client, uid)
    await client.post(f"/api/jobs/{job_id}/pause")
    for n in range(3):
        await client.post(f"/api/jobs/{job_id}/post", json={"routine_id": "source", "slot_name": "trigger", "data": n})
    queues = (await client.get(f"/api/jobs/{job_id}/queues/status")).json()
    assert set(queues) == {"source", "double", "sink"}  # every key is a routine: nothing else
    for rid, slots in queues.items():
        assert isinstance(slots, list), rid
        for slot in slots:
            reads(slot, SLOT_QUEUE_STATUS, rid)
    (trigger,) = queues["source"]
    assert (trigger["slot_name"], trigger["unconsumed_count"], trigger["max_length"]) == ("trigger", 3, 1000)


# -- 4. the flow editor's routine picker -------------------------------------------------------------
ROUTINE = {"routine_id": STR, "class_name": STR, "slots": LIST, "events": LIST, "config": DICT}


async def test_flow_routines_picker(client: httpx.AsyncClient, uid: str) -> None:
    flow_id, _job_id = await pipeline_job(client, uid)
    routines = (await client.get(f"/api/flows/{flow_id}/routines")).json()
    assert set(routines) == {"source", "double", "sink"}  # every key is a routine: nothing else
    for rid, routine in routines.items():
        reads(routine, ROUTINE, rid)
        assert routine["routine_id"] == rid
    assert routines["double"]["slots"] == ["input"] and routines["double"]["config"] == {"factor": 2}


# -- 5. the flow editor's "Add routine" and "Add connection" dialogs ---------------------------------
async def test_add_routine_dialog(client: httpx.AsyncClient, uid: str) -> None:
    flow_id = f"dash-edit-{uid}"
    await create_flow(client, flow_id=flow_id)
    # What the dialog sends: `object_name` for the class, and `config: null` when left empty.
    added = await client.post(f"/api/flows/{flow_id}/routines",
                              json={"routine_id": "source", "object_name": "DataSource", "config": None})
    assert added.status_code == 201, added.text
    reads(added.json(), {"flow_id": STR, "routines": {"source": ROUTINE}, "connections": LIST})
    assert added.json()["routines"]["source"]["class_name"] == "DataSource"
    assert added.json()["routines"]["source"]["config"] == {}
    sink = await client.post(f"/api/flows/{flow_id}/routines",
                             json={"routine_id": "sink", "object_name": "DataSink", "config": {"max_items": 5}})
    assert sink.status_code == 201, sink.text
    connected = await client.post(f"/api/flows/{flow_id}/connections", json={
        "source_routine": "source", "source_event": "output", "target_routine": "sink", "target_slot": "input"})
    assert connected.status_code == 201, connected.text
    (connection,) = connected.json()["connections"]
    reads(connection, {"connection_id": STR, "source_routine": STR, "source_event": STR, "target_routine": STR,
                       "target_slot": STR})
    both = await client.post(f"/api/flows/{flow_id}/routines",
                             json={"routine_id": "x", "object_name": "DataSink", "class_name": "DataSink"})
    neither = await client.post(f"/api/flows/{flow_id}/routines", json={"routine_id": "x"})
    assert both.status_code == neither.status_code == 422


# -- 9. the flow editor's class inspector --------------------------------------------------------------
async def test_routine_interface_view(client: httpx.AsyncClient) -> None:
    interface = (await client.get("/api/factory/objects/DataAggregator/interface")).json()
    reads(interface, {"name": STR, "slots": LIST, "events": LIST, "config_schema": DICT})
    assert interface["slots"] == ["input1", "input2"]  # names: the dialog renders them as text
    assert [s["name"] for s in interface["slot_details"]] == interface["slots"]


# -- 10. the "Create flow" wizard ---------------------------------------------------------------------
async def test_create_flow_wizard(client: httpx.AsyncClient, uid: str) -> None:
    flow_id = f"dash-wizard-{uid}"
    dsl = {"flow_id": flow_id, "routines": {"source": {"class": "DataSource"}, "sink": {"class": "DataSink"}},
           "connections": [{"from": "source.output", "to": "sink.input"}]}
    created = await client.post("/api/flows", json={"flow_id": flow_id, "dsl": dsl})  # the mapping as `dsl`
    assert created.status_code == 201, created.text
    reads(created.json(), {"flow_id": STR, "routines": DICT, "connections": LIST, "created_at": STR,
                           "updated_at": STR})
    assert set(created.json()["routines"]) == {"source", "sink"}
    both = await client.post("/api/flows", json={"dsl": {**dsl, "flow_id": f"{flow_id}-2"}, "dsl_dict": dsl})
    assert both.status_code == 422


# -- 11. the Discovery page's "Sync" buttons --------------------------------------------------------
@pytest.fixture(scope="module")
def flows_dir_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("dash-flows")
    flows = directory / "flows"
    flows.mkdir()
    (flows / "first.yaml").write_text("flow_id: first\nroutines:\n  sink: {class: DataSink}\n")
    (flows / "second.json").write_text('{"flow_id": "second", "routines": {"sink": {"class": "DataSink"}}}')
    server = start_deployment(directory, ROUTILUX_FLOWS_DIR=str(flows))
    yield server
    server.stop()


def test_discovery_sync(flows_dir_server: ServerProcess) -> None:
    with httpx.Client(base_url=flows_dir_server.url, timeout=30,
                      event_hooks={"response": [httpx_sync_event_hook]}) as http:
        flows = http.post("/api/discovery/flows/sync").json()
        reads(flows, {"flows": LIST})
        assert sorted(f["flow_id"] for f in flows["flows"]) == ["first", "second"]
        job = http.post("/api/jobs", json={"flow_id": "first"}).json()
        jobs = http.post("/api/discovery/jobs/sync").json()
        reads(jobs, {"jobs": LIST})
        for listed in jobs["jobs"]:
            reads(listed, JOB_ROW)
        assert job["job_id"] in [j["job_id"] for j in jobs["jobs"]]


# -- 13. the debugger: evaluate in the paused frame, set a variable there ----------------------------
async def test_debugger_panel(client: httpx.AsyncClient, uid: str) -> None:
    _flow_id, job_id = await pipeline_job(client, uid)
    bp = await client.post(f"/api/jobs/{job_id}/breakpoints", json={"routine_id": "double", "condition": "data > 5"})
    assert bp.status_code == 201, bp.text
    await client.post(f"/api/jobs/{job_id}/post", json={"routine_id": "source", "slot_name": "trigger", "data": 10})
    session = await poll(lambda: client.get(f"/api/jobs/{job_id}/debug/session"),
                         lambda r: r.json()["paused_at"] is not None, "the breakpoint's stop")
    reads(session.json(), {"status": STR, "paused_at": {"routine_id": STR}, "variables": DICT, "call_stack": LIST,
                           "breakpoints": LIST})
    evaluate = f"/api/jobs/{job_id}/debug/evaluate"
    here = await client.post(evaluate, json={"expression": "data * 10", "routine_id": "double", "frame_index": 0})
    assert here.status_code == 200, here.text
    reads(here.json(), {"result": INT, "type": STR})
    assert here.json() == {"result": 100, "type": "int"}
    elsewhere = await client.post(evaluate, json={"expression": "1", "routine_id": "sink"})
    deeper = await client.post(evaluate, json={"expression": "1", "frame_index": 1})
    assert (elsewhere.status_code, elsewhere.json()["detail"]["error"]) == (409, "routine_not_paused")
    assert (deeper.status_code, deeper.json()["detail"]["error"]) == (409, "frame_not_available")

    variables = await client.put(f"/api/jobs/{job_id}/debug/variables/data", json={"value": 21})
    assert variables.status_code == 200, variables.text
    reads(variables.json(), {"job_id": STR, "variables": {"data": {"item": DICT}, "config": DICT, "state": DICT}})
    assert variables.json()["variables"]["data"]["item"]["data"] == 21
    assert (await client.post(evaluate, json={"expression": "data"})).json()["result"] == 21
    shown = f"/api/jobs/{job_id}/debug/variables"
    assert (await client.get(shown, params={"routine_id": "double"})).json()["variables"]["data"]["item"]["data"] == 21
    assert (await client.get(shown, params={"routine_id": "sink"})).json()["variables"] is None
    bad_name = await client.put(f"/api/jobs/{job_id}/debug/variables/_secret", json={"value": 1})
    assert bad_name.status_code == 422

    assert (await client.post(f"/api/jobs/{job_id}/debug/resume")).status_code == 200
    state = await poll(lambda: client.get(f"/api/jobs/{job_id}/state"),
                       lambda r: r.json()["shared_data"].get("results", {}).get("sink"), "the sink's item")
    assert [item["data"] for item in state.json()["shared_data"]["results"]["sink"]] == [42]  # 21, doubled
    not_paused = await client.put(f"/api/jobs/{job_id}/debug/variables/data", json={"value": 1})
    assert (not_paused.status_code, not_paused.json()["detail"]["error"]) == (409, "not_paused")

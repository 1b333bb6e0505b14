"""Debugging over HTTP: breakpoints of each type, conditions, step, continue, evaluate.

Every test runs against the shared server, through the ``client`` fixture, so every response is
also checked against ``openapi/openapi.yaml``. Both the spec's paths (``/api/breakpoints/...``,
``/api/debug/...``) and the job-scoped aliases (``/api/jobs/{id}/breakpoints``,
``/api/jobs/{id}/debug/...``) are used.

Nothing here relies on sleeping: every wait polls the API with a deadline. To make what a job
holds deterministic, data is posted one item at a time, and further items only while the job is
stopped (they are parked at the first routine until it goes on).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.rest import create_flow, error_of, poll, start_job

ONE = {"type": "batch_size", "n": 1}  # one item per activation: activations are countable
KINDS = {"syntax", "name", "type", "limit", "forbidden"}


# -- builders and waits ---------------------------------------------------------------------------
def debug_flow(flow_id: str, *, src: str = "Relay", src_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """``src -> sink``: ``src`` passes items on, ``sink`` (Collect) records each activation's."""
    return {
        "flow_id": flow_id,
        "routines": {
            "src": {"class": src, "config": src_config or {}, "policy": ONE},
            "sink": {"class": "Collect", "policy": ONE},
        },
        "connections": [{"from": "src.output", "to": "sink.input"}],
    }


async def new_flow(client: httpx.AsyncClient, uid: str, **options: Any) -> str:
    flow_id = f"dbg-{uid}"
    await create_flow(client, dsl_dict=debug_flow(flow_id, **options))
    return flow_id


async def new_job(client: httpx.AsyncClient, uid: str, **options: Any) -> str:
    flow_id = await new_flow(client, uid, **options)
    return str((await start_job(client, flow_id=flow_id))["job_id"])


async def post(client: httpx.AsyncClient, job_id: str, data: Any, routine_id: str = "src") -> None:
    response = await client.post(f"/api/jobs/{job_id}/post",
                                 json={"routine_id": routine_id, "slot_name": "input", "data": data})
    assert response.status_code == 202, response.text


async def add_breakpoint(client: httpx.AsyncClient, job_id: str, *, alias: bool = False, **body: Any) -> dict[str, Any]:
    url = f"/api/jobs/{job_id}/breakpoints" if alias else f"/api/breakpoints/{job_id}"
    response = await client.post(url, json=body)
    assert response.status_code == 201, response.text
    bp = response.json()
    assert bp["job_id"] == job_id and bp["hit_count"] == 0
    return bp


async def session(client: httpx.AsyncClient, job_id: str, *, alias: bool = False) -> dict[str, Any]:
    url = f"/api/jobs/{job_id}/debug/session" if alias else f"/api/debug/{job_id}"
    response = await client.get(url)
    assert response.status_code == 200, response.text
    return response.json()


async def wait_stopped(client: httpx.AsyncClient, job_id: str, *, alias: bool = False,
                       reason: str = "breakpoint") -> dict[str, Any]:
    """The session once the job is stopped at a breakpoint (or a step)."""
    return await poll(
        lambda: session(client, job_id, alias=alias),
        lambda s: s["status"] == "paused" and s["paused_at"] is not None and s["paused_at"]["reason"] == reason,
        f"job {job_id} to stop ({reason})",
    )


async def state(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/jobs/{job_id}/state")
    assert response.status_code == 200, response.text
    return response.json()


def sink_batches(job_state: dict[str, Any]) -> list[list[Any]]:
    return list(job_state["shared_data"].get("batches", {}).get("sink", []))


async def wait_batches(client: httpx.AsyncClient, job_id: str, expected: list[list[Any]]) -> dict[str, Any]:
    """The job's state once ``sink`` has recorded exactly ``expected`` and the job is idle."""
    return await poll(
        lambda: state(client, job_id),
        lambda s: sink_batches(s) == expected and s["status"] == "idle",
        f"sink of {job_id} to record {expected}",
    )


async def history_total(client: httpx.AsyncClient, job_id: str) -> int:
    response = await client.get(f"/api/jobs/{job_id}/execution-history")
    assert response.status_code == 200, response.text
    return int(response.json()["total"])


async def events_of(client: httpx.AsyncClient, job_id: str, kind: str) -> list[dict[str, Any]]:
    response = await client.get(f"/api/jobs/{job_id}/events")
    assert response.status_code == 200, response.text
    return [e for e in response.json()["events"] if e["type"] == kind]


async def job_status(client: httpx.AsyncClient, job_id: str) -> str:
    response = await client.get(f"/api/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return str(response.json()["status"])


async def evaluate(
    client: httpx.AsyncClient, job_id: str, body: dict[str, Any], *, alias: bool = False
) -> httpx.Response:
    url = f"/api/jobs/{job_id}/debug/evaluate" if alias else f"/api/debug/{job_id}/evaluate"
    return await client.post(url, json=body)


# -- each breakpoint type stops the job with the right held data ---------------------------------
BREAKPOINT_TYPES = [
    pytest.param(
        {"routine_id": "sink"},  # the spec's body: a routine breakpoint
        {"type": "routine", "routine_id": "sink", "slot": "input", "event": None},
        {"items": [{"data": 1}], "item": {"data": 1}},
        ("activation", "sink"),
        id="routine",
    ),
    pytest.param(
        {"type": "slot", "routine_id": "sink", "slot_name": "input"},
        {"type": "slot", "routine_id": "sink", "slot": "input", "event": None},
        {"item": {"data": 1}, "source": "src.output"},
        ("emission", "src"),
        id="slot",
    ),
    pytest.param(
        {"routine_id": "src", "event_name": "output"},  # type from the fields: event
        {"type": "event", "routine_id": "src", "slot": None, "event": "output"},
        {"item": {"data": 1}},
        ("emission", "src"),
        id="event",
    ),
    pytest.param(
        {"source": "src.output", "target": "sink.input"},  # type from the fields: connection
        {"type": "connection", "routine_id": "src", "slot": "input", "event": "output"},
        {"item": {"data": 1}, "source": "src.output", "target": "sink.input"},
        ("emission", "src"),
        id="connection",
    ),
]


@pytest.mark.parametrize(("body", "paused_at", "held", "top"), BREAKPOINT_TYPES)
@pytest.mark.parametrize("alias", [False, True], ids=["spec-paths", "aliases"])
async def test_each_breakpoint_type_stops_the_job_holding_the_data(
    client: httpx.AsyncClient,
    uid: str,
    body: dict[str, Any],
    paused_at: dict[str, Any],
    held: dict[str, Any],
    top: tuple[str, str],
    alias: bool,
) -> None:
    job_id = await new_job(client, uid)
    bp = await add_breakpoint(client, job_id, alias=alias, **body)
    assert bp["type"] == paused_at["type"] and bp["enabled"] is True and bp["condition"] is None
    listed = (await client.get(f"/api/jobs/{job_id}/breakpoints" if alias else f"/api/breakpoints/{job_id}")).json()
    assert listed == {"job_id": job_id, "breakpoints": [bp], "total": 1}

    await post(client, job_id, 1)
    stopped = await wait_stopped(client, job_id, alias=alias)
    assert stopped["job_id"] == job_id and stopped["stepping"] is False
    assert {k: v for k, v in stopped["paused_at"].items() if k != "at"} == {
        **paused_at,
        "breakpoint_id": bp["breakpoint_id"],
        "reason": "breakpoint",
    }
    assert stopped["variables"] == {"data": held, "config": {}, "state": {}}
    assert stopped["breakpoints"] == [{**bp, "hit_count": 1}]
    assert stopped["condition_errors"] == []
    newest = stopped["call_stack"][0]  # the activation about to run, or the emission in progress
    assert (newest["kind"], newest["routine_id"]) == top
    assert await job_status(client, job_id) == "paused"

    # Held, not consumed: the sink has not run; data stopped at the slot is still queued there.
    job_state = await state(client, job_id)
    assert sink_batches(job_state) == []
    expected_parked = [{"routine_id": "sink", "slot": "input", "count": 1}] if paused_at["type"] == "slot" else []
    assert job_state["deferred_events"] == expected_parked

    # The alias views show the same frame.
    variables = (await client.get(f"/api/jobs/{job_id}/debug/variables")).json()
    assert variables == {"job_id": job_id, "variables": stopped["variables"]}
    stack = (await client.get(f"/api/jobs/{job_id}/debug/call-stack")).json()
    assert stack == {"job_id": job_id, "call_stack": stopped["call_stack"]}

    # breakpoint_hit is published with the breakpoint, the routine and a preview of the data.
    hits = await events_of(client, job_id, "breakpoint_hit")
    assert len(hits) == 1
    assert hits[0]["routine_id"] == paused_at["routine_id"]
    assert hits[0]["data"]["breakpoint_id"] == bp["breakpoint_id"]
    assert hits[0]["data"]["type"] == paused_at["type"]
    assert hits[0]["data"]["data"] == held["item"]
    assert hits[0]["data"]["hit_count"] == 1

    # More data while stopped is parked, then nothing is lost once the job goes on.
    await post(client, job_id, 2)
    await post(client, job_id, 3)
    delete = (
        f"/api/jobs/{job_id}/breakpoints/{bp['breakpoint_id']}"
        if alias
        else f"/api/breakpoints/{job_id}/{bp['breakpoint_id']}"
    )
    assert (await client.delete(delete)).status_code == 204
    resumed = await client.post(f"/api/jobs/{job_id}/debug/resume" if alias else f"/api/debug/{job_id}/continue")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["paused_at"] is None and resumed.json()["variables"] is None
    done = await wait_batches(client, job_id, [[1], [2], [3]])
    assert done["deferred_events"] == []
    after = await session(client, job_id, alias=alias)
    assert after["status"] == "idle" and after["paused_at"] is None and after["breakpoints"] == []


# -- conditions ------------------------------------------------------------------------------------
async def test_condition_true_stops_false_passes_and_evaluate_sees_the_frame(
    client: httpx.AsyncClient, uid: str
) -> None:
    job_id = await new_job(client, uid)
    bp = await add_breakpoint(client, job_id, routine_id="sink", condition="data.value > 100")
    assert bp["type"] == "routine" and bp["condition"] == "data.value > 100"

    await post(client, job_id, {"data": {"value": 5}})  # false: passes
    await wait_batches(client, job_id, [[{"value": 5}]])
    assert (await session(client, job_id))["paused_at"] is None

    await post(client, job_id, {"data": {"value": 150}})  # true: stops
    stopped = await wait_stopped(client, job_id)
    assert stopped["paused_at"]["breakpoint_id"] == bp["breakpoint_id"]
    assert stopped["variables"]["data"]["item"] == {"data": {"value": 150}}
    assert stopped["variables"]["state"] == {"batches": {"sink": [[{"value": 5}]]}}
    assert stopped["breakpoints"][0]["hit_count"] == 1
    assert stopped["condition_errors"] == []

    # evaluate without variables: the names of the paused frame (dotted access reads dict keys).
    for alias in (False, True):
        response = await evaluate(client, job_id, {"expression": "data.value * 2"}, alias=alias)
        assert response.status_code == 200, response.text
        assert response.json() == {"result": 300, "type": "int"}
    frame = {
        "item.data.value + 1": (151, "int"),
        "routine_id": ("sink", "str"),
        "slot": ("input", "str"),
        "len(items)": (1, "int"),
        "state.batches.sink": ([[{"value": 5}]], "list"),
        "config": ({}, "dict"),
        "data.value > 100": (True, "bool"),
    }
    for expression, (result, type_name) in frame.items():
        response = await evaluate(client, job_id, {"expression": expression})
        assert response.status_code == 200, (expression, response.text)
        assert response.json() == {"result": result, "type": type_name}, expression
    # Given variables win over the frame.
    given = await evaluate(client, job_id, {"expression": "data.value * 2", "variables": {"data": {"value": 42}}})
    assert given.json() == {"result": 84, "type": "int"}

    await post(client, job_id, {"data": {"value": 7}})  # parked while stopped; false once it runs
    await client.post(f"/api/debug/{job_id}/continue")
    await wait_batches(client, job_id, [[{"value": 5}], [{"value": 150}], [{"value": 7}]])
    after = await session(client, job_id)
    assert after["breakpoints"][0]["hit_count"] == 1 and after["condition_errors"] == []


async def test_condition_that_raises_or_is_not_boolean_is_reported_and_not_hit(
    client: httpx.AsyncClient, uid: str
) -> None:
    job_id = await new_job(client, uid)
    missing = await add_breakpoint(client, job_id, routine_id="sink", condition="data.missing > 1")
    not_bool = await add_breakpoint(client, job_id, alias=True, routine_id="sink", condition="data.value")
    wrong_type = await add_breakpoint(
        client, job_id, type="slot", routine_id="sink", slot_name="input", condition="data.value + 'x' == 'y'"
    )

    await post(client, job_id, {"data": {"value": 5}})
    await wait_batches(client, job_id, [[{"value": 5}]])
    current = await session(client, job_id, alias=True)
    assert current["status"] == "idle" and current["paused_at"] is None
    assert [bp["hit_count"] for bp in current["breakpoints"]] == [0, 0, 0]
    errors = {e["breakpoint_id"]: e for e in current["condition_errors"]}
    assert set(errors) == {missing["breakpoint_id"], not_bool["breakpoint_id"], wrong_type["breakpoint_id"]}
    assert errors[missing["breakpoint_id"]]["kind"] == "name"
    assert "missing" in errors[missing["breakpoint_id"]]["message"]
    assert errors[not_bool["breakpoint_id"]]["kind"] == "type"
    assert "true or false" in errors[not_bool["breakpoint_id"]]["message"]
    assert errors[wrong_type["breakpoint_id"]]["kind"] == "type"
    assert await events_of(client, job_id, "breakpoint_hit") == []


# -- step and continue -----------------------------------------------------------------------------
async def test_step_runs_exactly_one_activation_then_stops_before_the_next(client: httpx.AsyncClient, uid: str) -> None:
    job_id = await new_job(client, uid)
    bp = await add_breakpoint(client, job_id, routine_id="sink")
    await post(client, job_id, 1)
    await wait_stopped(client, job_id)  # held: sink's activation with item 1
    await post(client, job_id, 2)  # parked at src while stopped
    await post(client, job_id, 3)
    assert (await client.delete(f"/api/breakpoints/{job_id}/{bp['breakpoint_id']}")).status_code == 204

    before = await history_total(client, job_id)
    assert before == 1  # src's activation with item 1
    steps = [f"/api/debug/{job_id}/step", f"/api/jobs/{job_id}/debug/step-over", f"/api/jobs/{job_id}/debug/step-into"]
    for n, url in enumerate(steps, start=1):
        response = await client.post(url)
        assert response.status_code == 200, response.text
        assert response.json()["stepping"] is True
        stopped = await wait_stopped(client, job_id, reason="step")
        at = stopped["paused_at"]
        assert at["type"] == "step" and at["breakpoint_id"] is None and at["reason"] == "step"
        assert stopped["stepping"] is False
        # Exactly one more activation ran: the held one. Nothing else starts while stopped.
        want = before + n
        total = await poll(
            lambda: history_total(client, job_id), lambda t, want=want: t >= want, f"activation {want} to be recorded"
        )
        assert total == before + n, f"step {n} ({url}) ran {total - before - n + 1} activations"
        assert await job_status(client, job_id) == "paused"
        if n == 1:
            assert sink_batches(await state(client, job_id)) == [[1]]  # the held activation ran
            assert at["routine_id"] == "src"  # stopped before src takes item 2
            assert stopped["variables"]["data"]["items"] == [{"data": 2}]

    steps_published = await events_of(client, job_id, "debug_step")
    assert len(steps_published) == len(steps)
    assert all(e["data"]["type"] == "step" and e["data"]["breakpoint_id"] is None for e in steps_published)

    await client.post(f"/api/debug/{job_id}/continue")
    await wait_batches(client, job_id, [[1], [2], [3]])
    assert (await session(client, job_id))["stepping"] is False


async def test_continue_runs_until_the_next_hit(client: httpx.AsyncClient, uid: str) -> None:
    job_id = await new_job(client, uid)
    bp = await add_breakpoint(client, job_id, routine_id="sink")
    await post(client, job_id, 1)
    first = await wait_stopped(client, job_id)
    assert first["variables"]["data"]["item"] == {"data": 1}
    await post(client, job_id, 2)
    await post(client, job_id, 3)

    for expected_item, hits, done in (({"data": 2}, 2, [[1]]), ({"data": 3}, 3, [[1], [2]])):
        response = await client.post(f"/api/debug/{job_id}/continue")
        assert response.status_code == 200 and response.json()["stepping"] is False
        nxt = await poll(
            lambda: session(client, job_id),
            lambda s, hits=hits: s["paused_at"] is not None and s["breakpoints"][0]["hit_count"] == hits,
            f"hit {hits}",
        )
        assert nxt["paused_at"]["breakpoint_id"] == bp["breakpoint_id"]
        assert nxt["variables"]["data"]["item"] == expected_item
        assert sink_batches(await state(client, job_id)) == done
    assert len(await events_of(client, job_id, "breakpoint_hit")) == 3

    # Continue on the alias path; the last hit's data is processed too.
    await client.post(f"/api/jobs/{job_id}/debug/resume")
    await wait_batches(client, job_id, [[1], [2], [3]])


# -- changing breakpoints while the job runs ------------------------------------------------------
async def test_breakpoint_added_while_the_job_runs(client: httpx.AsyncClient, uid: str) -> None:
    job_id = await new_job(client, uid, src="Slow", src_config={"delay": 1.5})
    await post(client, job_id, 1)
    # src is busy with item 1 (sleeping): the job is running when the breakpoint is set.
    await poll(
        lambda: state(client, job_id),
        lambda s: s["routine_states"]["src"]["active"] == 1,
        "src to start its activation",
    )
    assert await job_status(client, job_id) == "running"
    bp = await add_breakpoint(client, job_id, alias=True, routine_id="sink")
    assert sink_batches(await state(client, job_id)) == []  # set before the data got there

    stopped = await wait_stopped(client, job_id, alias=True)
    assert stopped["paused_at"]["breakpoint_id"] == bp["breakpoint_id"]
    assert stopped["variables"]["data"]["items"] == [{"data": 1}]
    assert stopped["variables"]["state"]["slow_done"] == [[1]]
    await client.post(f"/api/jobs/{job_id}/debug/resume")
    await wait_batches(client, job_id, [[1]])


async def test_disabled_breakpoint_is_ignored_and_can_be_switched(client: httpx.AsyncClient, uid: str) -> None:
    job_id = await new_job(client, uid)
    bp = await add_breakpoint(client, job_id, routine_id="sink", enabled=False)
    assert bp["enabled"] is False
    url = f"/api/jobs/{job_id}/breakpoints/{bp['breakpoint_id']}"

    await post(client, job_id, 1)
    await wait_batches(client, job_id, [[1]])
    assert (await session(client, job_id))["breakpoints"][0]["hit_count"] == 0

    enabled = await client.put(url, json={"enabled": True})
    assert enabled.status_code == 200 and enabled.json() == {**bp, "enabled": True}
    await post(client, job_id, 2)
    stopped = await wait_stopped(client, job_id)
    assert stopped["variables"]["data"]["item"] == {"data": 2}

    disabled = await client.put(url, json={"enabled": False})  # while stopped at it
    assert disabled.json()["enabled"] is False and disabled.json()["hit_count"] == 1
    await post(client, job_id, 3)
    await client.post(f"/api/debug/{job_id}/continue")
    await wait_batches(client, job_id, [[1], [2], [3]])
    assert (await session(client, job_id))["breakpoints"][0]["hit_count"] == 1

    assert (await client.delete(url)).status_code == 204
    assert (await client.get(f"/api/breakpoints/{job_id}")).json()["total"] == 0
    for response in (
        await client.delete(url),
        await client.put(url, json={"enabled": True}),
        await client.delete(f"/api/breakpoints/{job_id}/{bp['breakpoint_id']}"),
    ):
        assert response.status_code == 404
        detail = error_of(response)
        assert detail["error"] == "breakpoint_not_found" and detail["breakpoint_id"] == bp["breakpoint_id"]


# -- isolation and job control --------------------------------------------------------------------
async def test_another_job_of_the_same_flow_is_unaffected(client: httpx.AsyncClient, uid: str) -> None:
    flow_id = await new_flow(client, uid)
    debugged = (await start_job(client, flow_id=flow_id))["job_id"]
    other = (await start_job(client, flow_id=flow_id))["job_id"]
    await add_breakpoint(client, debugged, routine_id="sink")
    await post(client, debugged, 1)
    await wait_stopped(client, debugged)

    await post(client, other, 1)
    await post(client, other, 2)
    await wait_batches(client, other, [[1], [2]])
    untouched = await session(client, other)
    assert untouched["status"] == "idle" and untouched["breakpoints"] == [] and untouched["paused_at"] is None
    assert untouched["call_stack"] == [] and untouched["variables"] is None
    assert await events_of(client, other, "breakpoint_hit") == []
    assert (await client.get(f"/api/jobs/{other}/debug/variables")).json() == {"job_id": other, "variables": None}
    assert (await client.get(f"/api/jobs/{other}/debug/call-stack")).json() == {"job_id": other, "call_stack": []}

    still = await session(client, debugged)
    assert still["status"] == "paused" and sink_batches(await state(client, debugged)) == []
    await client.post(f"/api/debug/{debugged}/continue")
    await wait_batches(client, debugged, [[1]])


async def test_job_pause_resume_and_cancel_keep_working_while_debugging(client: httpx.AsyncClient, uid: str) -> None:
    job_id = await new_job(client, uid)
    await add_breakpoint(client, job_id, routine_id="sink", condition="data != 2")
    await post(client, job_id, 1)
    await wait_stopped(client, job_id)

    # Resuming the job is the same as continuing.
    resumed = await client.post(f"/api/jobs/{job_id}/resume")
    assert resumed.status_code == 200 and resumed.json()["status"] in {"running", "idle"}
    await wait_batches(client, job_id, [[1]])

    # A user's pause is not a breakpoint stop: no frame, so evaluate needs variables.
    paused = await client.post(f"/api/jobs/{job_id}/pause", json={"reason": "look around"})
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    current = await session(client, job_id)
    assert current["status"] == "paused" and current["paused_at"] is None and current["variables"] is None
    not_paused = await evaluate(client, job_id, {"expression": "1 + 1"})
    assert not_paused.status_code == 409 and error_of(not_paused)["error"] == "not_paused"
    await post(client, job_id, 2)  # parked; the condition is false for it
    assert (await client.post(f"/api/debug/{job_id}/continue")).status_code == 200
    await wait_batches(client, job_id, [[1], [2]])

    # Cancel while stopped at a breakpoint.
    await post(client, job_id, 3)
    await wait_stopped(client, job_id)
    cancelled = await client.post(f"/api/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    ended = await session(client, job_id)
    assert ended["status"] == "cancelled" and ended["paused_at"] is None and ended["variables"] is None
    for url in (
        f"/api/debug/{job_id}/step",
        f"/api/debug/{job_id}/continue",
        f"/api/jobs/{job_id}/debug/step-over",
        f"/api/jobs/{job_id}/debug/resume",
    ):
        response = await client.post(url)
        assert response.status_code == 409, url
        assert error_of(response)["error"] == "illegal_transition"
    late = await client.post(f"/api/breakpoints/{job_id}", json={"routine_id": "sink"})
    assert late.status_code == 409 and error_of(late)["error"] == "illegal_transition"
    # Evaluating with variables needs no live frame.
    assert (await evaluate(client, job_id, {"expression": "1 + 1", "variables": {}})).json() == {
        "result": 2,
        "type": "int",
    }


async def test_call_stack_is_newest_first_and_bounded(client: httpx.AsyncClient, uid: str) -> None:
    job_id = await new_job(client, uid)
    bare = await session(client, job_id)  # no debugger yet: an empty session
    assert bare["call_stack"] == [] and bare["breakpoints"] == [] and bare["paused_at"] is None
    await add_breakpoint(client, job_id, routine_id="sink", condition="data < 0")  # attaches, never hit
    items = list(range(1, 31))  # 30 items: 90 activations and emissions
    for item in items:
        await post(client, job_id, item)
    await wait_batches(client, job_id, [[i] for i in items])
    stack = (await client.get(f"/api/jobs/{job_id}/debug/call-stack")).json()["call_stack"]
    assert len(stack) == 50
    assert stack[0] == {**stack[0], "kind": "activation", "routine_id": "sink", "items": 1}
    assert {frame["kind"] for frame in stack} == {"activation", "emission"}
    assert all("event" in f for f in stack if f["kind"] == "emission")
    stamps = [frame["at"] for frame in stack]
    assert stamps == sorted(stamps, reverse=True)


# -- evaluate --------------------------------------------------------------------------------------
EVALUATIONS = [
    ("data.value * 2", {"data": {"value": 42}}, 84, "int"),  # the spec's example
    ("data.value / 8", {"data": {"value": 42}}, 5.25, "float"),
    ("data.name + '!'", {"data": {"name": "x"}}, "x!", "str"),
    ("data.value > 40 and 'a' in data.tags", {"data": {"value": 42, "tags": ["a"]}}, True, "bool"),
    ("data.nested.deeper.leaf", {"data": {"nested": {"deeper": {"leaf": [1, 2]}}}}, [1, 2], "list"),
    ("data['value'] if data.value else 0", {"data": {"value": 3}}, 3, "int"),
    ("sorted(xs)[0] + max(xs) + len(xs)", {"xs": [3, 1, 2]}, 7, "int"),
    ("{'k': n}", {"n": 1}, {"k": 1}, "dict"),
    ("None", {}, None, "NoneType"),
]


@pytest.mark.parametrize(("expression", "variables", "result", "type_name"), EVALUATIONS)
async def test_evaluate_with_variables(
    client: httpx.AsyncClient, uid: str, expression: str, variables: dict[str, Any], result: Any, type_name: str
) -> None:
    job_id = await new_job(client, uid)  # running, not paused: variables make that fine
    for alias in (False, True):
        response = await evaluate(client, job_id, {"expression": expression, "variables": variables}, alias=alias)
        assert response.status_code == 200, response.text
        assert response.json() == {"result": result, "type": type_name}


async def test_evaluate_errors(client: httpx.AsyncClient, uid: str) -> None:
    job_id = await new_job(client, uid)
    variables = {"data": {"value": 42}}
    cases = {
        "data.value *": "syntax",
        "nope + 1": "name",
        "data.nope": "name",
        "data.value + 'x'": "type",
        "data.value.real": "forbidden",  # attribute access is for mappings only
        "data.__class__": "forbidden",
        "10 ** 10 ** 10": "limit",
    }
    for expression, kind in cases.items():
        for alias in (False, True):
            response = await evaluate(client, job_id, {"expression": expression, "variables": variables}, alias=alias)
            assert response.status_code == 400, (expression, response.text)
            detail = error_of(response)
            assert detail["error"] == "invalid_expression" and detail["kind"] == kind, (expression, detail)
    for alias in (False, True):
        no_frame = await evaluate(client, job_id, {"expression": "data.value * 2"}, alias=alias)
        assert no_frame.status_code == 409
        assert error_of(no_frame) == {**error_of(no_frame), "error": "not_paused", "job_id": job_id}
    assert (await evaluate(client, f"ghost-{uid}", {"expression": "1", "variables": {}})).status_code == 404
    assert (await evaluate(client, job_id, {"variables": {}})).status_code == 422
    assert (await evaluate(client, job_id, {"expression": "1", "extra": 1})).status_code == 422
    assert (await client.post(f"/api/debug/{job_id}/evaluate", content=b"{not json")).status_code == 400


# -- bad breakpoints -------------------------------------------------------------------------------
INVALID_BREAKPOINTS = [
    ({}, "body.routine_id", "needs 'routine_id'"),
    ({"condition": "data > 1"}, "body.routine_id", "needs 'routine_id'"),
    ({"type": "slot", "routine_id": "sink"}, "body.slot_name", "needs 'slot_name'"),
    ({"type": "event", "routine_id": "src"}, "body.event_name", "needs 'event_name'"),
    ({"type": "connection", "source": "src.output"}, "body.target", "needs 'target'"),
    ({"routine_id": "nope"}, "body.routine_id", "Routines: src, sink"),
    ({"routine_id": "sink", "slot_name": "nope"}, "body.slot_name", "Slots: input"),
    ({"routine_id": "src", "event_name": "nope"}, "body.event_name", "Events: output"),
    ({"source": "src.output", "target": "sink.nope"}, "body.source", "src.output -> sink.input"),
    ({"type": "routine", "routine_id": "sink", "event_name": "output"}, "body.event_name", "does not belong"),
    (
        {"type": "slot", "routine_id": "sink", "slot_name": "input", "event_name": "output"},
        "body.event_name",
        "does not belong",
    ),
    ({"source": "src.output", "target": "sink.input", "routine_id": "src"}, "body.routine_id", "does not belong"),
]


@pytest.mark.parametrize(("body", "field", "message"), INVALID_BREAKPOINTS)
async def test_bad_breakpoint_combinations_are_422_with_a_clear_message(
    client: httpx.AsyncClient, uid: str, body: dict[str, Any], field: str, message: str
) -> None:
    job_id = await new_job(client, uid)
    for url in (f"/api/breakpoints/{job_id}", f"/api/jobs/{job_id}/breakpoints"):
        response = await client.post(url, json=body)
        assert response.status_code == 422, response.text
        detail = error_of(response)
        assert detail["error"] == "invalid_breakpoint" and detail["field"] == field
        assert message in detail["message"], detail
    assert (await client.get(f"/api/breakpoints/{job_id}")).json()["total"] == 0


async def test_breakpoint_requests_the_server_refuses(client: httpx.AsyncClient, uid: str) -> None:
    job_id = await new_job(client, uid)
    url = f"/api/breakpoints/{job_id}"
    schema_errors = [
        ({"type": "bogus", "routine_id": "sink"}, "body.type"),
        ({"routine_id": "sink", "colour": "red"}, None),
        ({"routine_id": "sink", "enabled": "yes"}, "body.enabled"),
        ({"routine_id": "bad.id"}, "body.routine_id"),
        ({"routine_id": "sink", "condition": "1 + " * 300 + "1"}, "body.condition"),  # over 1000 characters
    ]
    for body, field in schema_errors:
        response = await client.post(url, json=body)
        assert response.status_code == 422, (body, response.text)
        detail = error_of(response)
        assert detail["error"] == "validation_error"
        if field is not None:
            assert detail["field"] == field
    bad_condition = await client.post(url, json={"routine_id": "sink", "condition": "data >"})
    assert bad_condition.status_code == 400
    assert error_of(bad_condition) == {**error_of(bad_condition), "error": "invalid_expression", "kind": "syntax"}
    assert (await client.post(url, content=b"")).status_code == 400
    assert (await client.post(url, content=b"{nope")).status_code == 400

    ghost = await client.post(f"/api/breakpoints/ghost-{uid}", json={"routine_id": "sink"})
    assert ghost.status_code == 404 and error_of(ghost)["error"] == "job_not_found"
    for path in (
        f"/api/breakpoints/ghost-{uid}",
        f"/api/debug/ghost-{uid}",
        f"/api/jobs/ghost-{uid}/breakpoints",
        f"/api/jobs/ghost-{uid}/debug/session",
        f"/api/jobs/ghost-{uid}/debug/variables",
        f"/api/jobs/ghost-{uid}/debug/call-stack",
    ):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert error_of(response)["error"] == "job_not_found"
    for path in (f"/api/debug/ghost-{uid}/step", f"/api/debug/ghost-{uid}/continue"):
        assert (await client.post(path)).status_code == 404
    invalid_id = await client.get("/api/breakpoints/bad%20id")
    assert invalid_id.status_code == 422 and error_of(invalid_id)["field"] == "path.job_id"
    invalid_bp = await client.delete(f"/api/breakpoints/{job_id}/bad%20id")
    assert invalid_bp.status_code == 422 and error_of(invalid_bp)["field"] == "path.breakpoint_id"


async def test_update_body_is_checked(client: httpx.AsyncClient, uid: str) -> None:
    job_id = await new_job(client, uid)
    bp = await add_breakpoint(client, job_id, routine_id="sink")
    url = f"/api/jobs/{job_id}/breakpoints/{bp['breakpoint_id']}"
    for body in ({}, {"enabled": "yes"}, {"enabled": True, "condition": "1"}):
        response = await client.put(url, json=body)
        assert response.status_code == 422, body
        assert error_of(response)["error"] == "validation_error"
    assert (await client.put(url, content=b"")).status_code == 400


async def test_a_job_takes_at_most_100_breakpoints(client: httpx.AsyncClient, uid: str) -> None:
    job_id = await new_job(client, uid)
    for _ in range(100):
        await add_breakpoint(client, job_id, routine_id="sink", enabled=False)
    over = await client.post(f"/api/breakpoints/{job_id}", json={"routine_id": "sink"})
    assert over.status_code == 409 and error_of(over)["error"] == "too_many_breakpoints"
    assert (await client.get(f"/api/jobs/{job_id}/breakpoints")).json()["total"] == 100


async def test_ended_jobs(client: httpx.AsyncClient, uid: str) -> None:
    job_id = await new_job(client, uid)
    bp = await add_breakpoint(client, job_id, routine_id="sink")
    assert (await client.post(f"/api/jobs/{job_id}/complete")).status_code == 200
    ended = await session(client, job_id)
    assert ended["status"] == "completed" and ended["breakpoints"][0]["breakpoint_id"] == bp["breakpoint_id"]
    listed = await client.get(f"/api/breakpoints/{job_id}")
    assert listed.status_code == 200 and listed.json()["total"] == 1
    for url in (f"/api/breakpoints/{job_id}", f"/api/jobs/{job_id}/breakpoints"):
        response = await client.post(url, json={"routine_id": "sink"})
        assert response.status_code == 409 and error_of(response)["job_status"] == "completed"
    step = await client.post(f"/api/jobs/{job_id}/debug/step-into")
    assert step.status_code == 409 and error_of(step)["job_status"] == "completed"

"""The debugger on real jobs: breakpoints stop one job with the data in hand, step and continue
move it on, and nothing is lost, duplicated or run twice on the way."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

from routilux.bus import Subscription, event_to_builtins
from routilux.debug import session as session_module
from routilux.debug.breakpoints import Breakpoint, make_breakpoint
from routilux.debug.expressions import evaluate
from routilux.debug.session import JobDebugger, attach
from routilux.engine import Engine, Job, JobStatus
from tests.support.routines import chain, make_registry

S = JobStatus


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------
@asynccontextmanager
async def debugged(*classes: str, configs: dict[str, dict] | None = None, **job_options: Any) -> AsyncIterator[
    tuple[Engine, Job, JobDebugger]
]:
    """A chain ``r0 -> r1 -> ...`` of ``classes`` in a started job (nothing posted) with a debugger."""
    async with Engine(registry=make_registry()) as engine:
        job = await engine.start_job(chain("f", *classes, configs=configs), **job_options)
        yield engine, job, attach(job)


def add(dbg: JobDebugger, **fields: Any) -> Breakpoint:
    bp = make_breakpoint(dbg.job.plan, dbg.job.job_id, type=fields.pop("type", None), **fields)
    dbg.add(bp)
    return bp


async def until(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.002)


async def stopped(dbg: JobDebugger) -> dict[str, Any]:
    await until(lambda: dbg.is_paused)
    at = dbg.paused_at()
    assert at is not None
    return at


async def settled(job: Job) -> None:
    """Wait until the job has nothing queued or running (a stop at a breakpoint is not settled)."""
    await until(lambda: job.status is S.IDLE)


async def run_to_idle(dbg: JobDebugger, timeout: float = 5.0) -> int:
    """Continue every stop until the job is idle; returns how many stops there were."""
    stops = 0
    with anyio.fail_after(timeout):
        while dbg.job.status is not S.IDLE:
            if dbg.is_paused:
                stops += 1
                dbg.continue_()
            await anyio.sleep(0.002)
    return stops


def sink(job: Job, rid: str) -> list[Any]:
    return [item for batch in job.shared_data.get("batches", {}).get(rid, []) for item in batch]


def drain(sub: Subscription) -> list[dict[str, Any]]:
    out = []
    while (item := sub.receive_nowait()) is not None:
        out.append(event_to_builtins(item))
    return out


def executions(job: Job) -> dict[str, int]:
    return {rid: state.execution_count for rid, state in job.routine_states.items()}


# ------------------------------------------------------------------------------------------------
# Each breakpoint type stops the job with the right data
# ------------------------------------------------------------------------------------------------
# r0 (Relay) -> r1 (Relay) -> r2 (Collect); one item {"data": 1} posted to r0.
CASES = {
    "routine": (
        {"routine_id": "r1"},
        {"type": "routine", "routine_id": "r1", "slot": "input", "event": None},
        {"items": [{"data": 1}], "item": {"data": 1}},
    ),
    "slot": (
        {"routine_id": "r1", "slot_name": "input"},
        {"type": "slot", "routine_id": "r1", "slot": "input", "event": None},
        {"item": {"data": 1}, "source": "r0.output"},
    ),
    "event": (
        {"routine_id": "r0", "event_name": "output"},
        {"type": "event", "routine_id": "r0", "slot": None, "event": "output"},
        {"item": {"data": 1}},
    ),
    "connection": (
        {"source": "r0.output", "target": "r1.input"},
        {"type": "connection", "routine_id": "r0", "slot": "input", "event": "output"},
        {"item": {"data": 1}, "source": "r0.output", "target": "r1.input"},
    ),
}


@pytest.mark.parametrize("kind", list(CASES))
async def test_each_breakpoint_type_stops_the_job_with_the_held_data(kind: str) -> None:
    fields, where, data = CASES[kind]
    async with debugged("Relay", "Relay", "Collect") as (_, job, dbg):
        bp = add(dbg, **fields)
        assert bp.type == kind
        await job.post("r0", "input", 1)
        at = await stopped(dbg)
        assert job.status is S.PAUSED
        assert {k: at[k] for k in where} == where
        assert at["breakpoint_id"] == bp.breakpoint_id and at["reason"] == "breakpoint" and at["at"] is not None
        variables = dbg.variables()
        assert variables == {"data": data, "config": {}, "state": job.shared_data}
        assert bp.hit_count == 1 and dbg.stops == 1
        assert job.pause_points[-1].reason == f"breakpoint {bp.breakpoint_id}"
        view = dbg.view()
        assert view["status"] == "paused" and view["paused_at"] == at and view["variables"] == variables
        assert view["breakpoints"] == [bp.view()]

        # Where the data is held: r1 has not run in any case; what sits in queues depends on the type.
        await anyio.sleep(0.05)
        assert job.status is S.PAUSED and executions(job) == {"r0": 0 if kind in ("event", "connection") else 1,
                                                            "r1": 0, "r2": 0}
        if kind == "slot":
            assert job.parked_items() == [{"routine_id": "r1", "slot": "input", "count": 1}]
        else:
            assert job.parked_items() == []  # held in hand: the activation, or the emission
        if kind in ("event", "connection"):
            assert job.routine_states["r0"].status == "running"

        dbg.continue_()
        await settled(job)
        assert sink(job, "r2") == [1]
        assert executions(job) == {"r0": 1, "r1": 1, "r2": 1}
        assert dbg.paused_at() is None and dbg.variables() is None and dbg.frame_names() is None
        assert dbg.view()["status"] == "idle"


async def test_routine_config_is_in_the_variables_and_the_condition() -> None:
    async with debugged("Slow", "Collect", configs={"r0": {"delay": 0.01}}) as (_, job, dbg):
        bp = add(dbg, routine_id="r0", condition="config.delay < 1 and routine_id == 'r0' and slot == 'input'")
        await job.post("r0", "input", 5)
        await stopped(dbg)
        assert dbg.variables()["config"] == {"delay": 0.01}  # type: ignore[index]
        assert bp.hit_count == 1 and list(dbg.condition_errors) == []
        assert "slow_started" not in job.shared_data  # stopped before the logic ran
        dbg.continue_()
        await settled(job)
        assert sink(job, "r1") == [5]


async def test_a_routine_breakpoint_holds_the_whole_batch_and_names_the_first_matching_item() -> None:
    async with debugged("Relay", "Collect") as (_, job, dbg):
        job.pause()
        for n in range(5):
            await job.post("r0", "input", n)  # parked: r0 will take all five in one activation
        add(dbg, routine_id="r0", condition="data >= 2")
        dbg.continue_()
        await stopped(dbg)
        data = dbg.variables()["data"]  # type: ignore[index]
        assert data["items"] == [{"data": n} for n in range(5)]
        assert data["item"] == {"data": 2}
        assert dbg.frame_names()["data"] == 2  # type: ignore[index]
        dbg.continue_()
        await settled(job)
        assert sink(job, "r1") == [0, 1, 2, 3, 4]


# ------------------------------------------------------------------------------------------------
# breakpoint_hit and debug_step events
# ------------------------------------------------------------------------------------------------
async def test_breakpoint_hit_is_published_with_a_preview_in_the_jobs_seq_order() -> None:
    async with debugged("Relay", "Collect") as (engine, job, dbg):
        sub = engine.bus.subscribe(job_ids=[job.job_id])
        bp = add(dbg, routine_id="r0", event_name="output")
        await job.post("r0", "input", {"data": 1, "note": "x"})
        at = await stopped(dbg)
        dbg.continue_()
        await settled(job)
        events = drain(sub)
    kinds = [(e["type"], e["routine_id"]) for e in events]
    assert kinds == [
        ("slot_call", "r0"),
        ("routine_start", "r0"),
        ("event_emit", "r0"),
        ("job_pause", None),
        ("breakpoint_hit", "r0"),
        ("job_resume", None),
        ("slot_call", "r1"),
        ("routine_end", "r0"),
        ("routine_start", "r1"),
        ("routine_end", "r1"),
        ("job_idle", None),
    ]
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    hit = events[4]["data"]
    assert hit["breakpoint_id"] == bp.breakpoint_id
    assert {k: hit[k] for k in ("type", "routine_id", "slot", "event", "reason", "hit_count")} == {
        "type": "event", "routine_id": "r0", "slot": None, "event": "output", "reason": "breakpoint", "hit_count": 1,
    }
    assert hit["data"] == {"data": 1, "note": "x"}
    assert hit["at"].endswith("Z") and at["breakpoint_id"] == bp.breakpoint_id
    assert events[3]["data"]["reason"] == f"breakpoint {bp.breakpoint_id}"


async def test_the_preview_of_a_large_held_item_is_truncated() -> None:
    async with debugged("Relay", "Collect") as (engine, job, dbg):
        sub = engine.bus.subscribe(job_ids=[job.job_id], types=["breakpoint_hit"])
        add(dbg, routine_id="r1")
        big = "x" * (job.options.preview_bytes * 3)
        await job.post("r0", "input", big)
        await stopped(dbg)
        (hit,) = drain(sub)
        assert hit["data"]["data"]["truncated"] is True
        assert hit["data"]["data"]["size"] > job.options.preview_bytes
        assert dbg.variables()["data"]["item"] == {"data": big}  # type: ignore[index]  # the real thing is held
        dbg.continue_()
        await settled(job)
        assert sink(job, "r1") == [big]


async def test_debug_step_is_published_for_a_step_stop() -> None:
    async with debugged("Relay", "Relay", "Collect") as (engine, job, dbg):
        sub = engine.bus.subscribe(job_ids=[job.job_id], types=["breakpoint_hit", "debug_step"])
        add(dbg, routine_id="r0")
        await job.post("r0", "input", 7)
        await stopped(dbg)
        dbg.step()
        await until(lambda: dbg.is_paused and dbg.paused_at()["type"] == "step")  # type: ignore[index]
        events = drain(sub)
        assert [(e["type"], e["routine_id"]) for e in events] == [("breakpoint_hit", "r0"), ("debug_step", "r1")]
        step = events[1]["data"]
        assert {k: step[k] for k in ("breakpoint_id", "type", "routine_id", "reason")} == {
            "breakpoint_id": None, "type": "step", "routine_id": "r1", "reason": "step",
        }
        assert step["data"] == [{"data": 7}]
        assert "hit_count" not in step
        assert events[1]["seq"] > events[0]["seq"]
        job.cancel()


# ------------------------------------------------------------------------------------------------
# Conditions
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("condition", "hits", "error_kind"),
    [
        ("data == 2", [2], None),
        ("data % 2 == 1", [1, 3], None),
        ("item.data >= 3 and event == 'output' and routine_id == 'r0'", [3, 4], None),
        ("data > 100", [], None),
        ("undefined_name > 1", [], "name"),
        ("data / 0 > 1", [], "type"),
        ("data", [], "type"),  # not a boolean
        ("'yes' if data else None", [], "type"),
    ],
)
async def test_conditions_true_false_erroring_and_non_boolean(
    condition: str, hits: list[int], error_kind: str | None
) -> None:
    async with debugged("Relay", "Relay", "Collect") as (engine, job, dbg):
        sub = engine.bus.subscribe(job_ids=[job.job_id], types=["breakpoint_hit"])
        bp = add(dbg, routine_id="r0", event_name="output", condition=condition)
        held: list[Any] = []
        for n in range(5):
            await job.post("r0", "input", n)
        with anyio.fail_after(5):
            while job.status is not S.IDLE:
                if dbg.is_paused:
                    held.append(dbg.variables()["data"]["item"]["data"])  # type: ignore[index]
                    dbg.continue_()
                await anyio.sleep(0.002)
        assert held == hits
        assert bp.hit_count == len(hits)
        assert [e["data"]["data"]["data"] for e in drain(sub)] == hits
        errors = list(dbg.condition_errors)
        if error_kind is None:
            assert errors == []
        else:
            assert len(errors) == 5  # one per evaluation, none of them a hit
            assert {e["kind"] for e in errors} == {error_kind}
            assert all(e["breakpoint_id"] == bp.breakpoint_id and e["message"] and e["at"] for e in errors)
        assert dbg.view()["condition_errors"] == errors
        assert sink(job, "r2") == [0, 1, 2, 3, 4]


async def test_a_non_boolean_condition_is_reported_as_such() -> None:
    async with debugged("Relay", "Collect") as (_, job, dbg):
        add(dbg, routine_id="r1", condition="data + 1")
        await job.post("r0", "input", 1)
        await settled(job)
        (error,) = dbg.condition_errors
        assert error["kind"] == "type" and "true or false" in error["message"] and "int" in error["message"]


@pytest.mark.parametrize(
    ("fields", "condition"),
    [
        (
            {"routine_id": "r1", "slot_name": "input"},
            "source == 'r0.output' and slot == 'input' and routine_id == 'r1'",
        ),
        (
            {"source": "r0.output", "target": "r1.input"},
            "source == 'r0.output' and target == 'r1.input' and routine_id == 'r0' and config == {}",
        ),
        ({"routine_id": "r1"}, "item == {'data': 3} and slot == 'input'"),
    ],
)
async def test_conditions_see_the_context_of_their_stop_point(fields: dict[str, Any], condition: str) -> None:
    async with debugged("Relay", "Relay", "Collect") as (_, job, dbg):
        bp = add(dbg, **fields, condition=f"data == 3 and {condition}")
        for n in range(5):
            await job.post("r0", "input", n)
        assert await run_to_idle(dbg) >= 1
        assert bp.hit_count >= 1
        assert list(dbg.condition_errors) == []
        assert sink(job, "r2") == [0, 1, 2, 3, 4]


async def test_condition_errors_are_bounded_newest_first() -> None:
    async with debugged("Relay", "Collect") as (_, job, dbg):
        add(dbg, routine_id="r1", slot_name="input", condition="nope")
        for n in range(session_module.MAX_CONDITION_ERRORS + 10):
            await job.post("r0", "input", n)
        await settled(job)
        errors = list(dbg.condition_errors)
        assert len(errors) == session_module.MAX_CONDITION_ERRORS
        stamps = [e["at"] for e in errors]
        assert stamps == sorted(stamps, reverse=True)
        assert len(sink(job, "r1")) == session_module.MAX_CONDITION_ERRORS + 10


async def test_a_slow_condition_is_a_limit_error_not_a_stall() -> None:
    class SlowLen:
        def __len__(self) -> int:
            end = time.perf_counter() + 2.0  # far past the time limit (bounded, should it not work)
            while time.perf_counter() < end:
                pass
            return 1

    async with debugged("Relay", "Collect") as (_, job, dbg):
        add(dbg, routine_id="r1", condition="len(item) > 0 and len(data) > 0")
        await job.post("r0", "input", SlowLen())
        await settled(job)
        (error,) = dbg.condition_errors
        assert error["kind"] == "limit"
        assert len(sink(job, "r1")) == 1


# ------------------------------------------------------------------------------------------------
# hit_count
# ------------------------------------------------------------------------------------------------
async def test_hit_count_counts_every_hit() -> None:
    async with debugged("Relay", "Collect") as (engine, job, dbg):
        sub = engine.bus.subscribe(job_ids=[job.job_id], types=["breakpoint_hit"])
        bp = add(dbg, routine_id="r0", event_name="output")
        other = add(dbg, routine_id="r1", condition="data > 100")
        for n in range(3):
            await job.post("r0", "input", n)
        assert await run_to_idle(dbg) == 3
        assert bp.hit_count == 3 and other.hit_count == 0 and dbg.stops == 3
        assert [e["data"]["hit_count"] for e in drain(sub)] == [1, 2, 3]
        assert bp.view()["hit_count"] == 3


# ------------------------------------------------------------------------------------------------
# Step and continue
# ------------------------------------------------------------------------------------------------
async def test_step_runs_exactly_one_activation_and_stops_before_the_next() -> None:
    async with debugged("Relay", "Relay", "Relay", "Collect") as (_, job, dbg):
        add(dbg, routine_id="r1")
        await job.post("r0", "input", 1)
        await stopped(dbg)
        assert executions(job) == {"r0": 1, "r1": 0, "r2": 0, "r3": 0}
        for n, rid in enumerate(["r2", "r3"], start=1):
            dbg.step()
            at = await stopped(dbg)
            assert at["type"] == "step" and at["reason"] == "step" and at["breakpoint_id"] is None
            assert at["routine_id"] == rid
            await anyio.sleep(0.05)  # nothing else runs meanwhile
            assert dbg.paused_at() == at
            assert executions(job) == {"r0": 1, "r1": 1, "r2": n - 1, "r3": 0}
            assert dbg.variables()["data"] == {"items": [{"data": 1}]}  # type: ignore[index]
            assert dbg.frame_names()["data"] == 1  # type: ignore[index]
        dbg.step()  # the last activation: runs, and there is no next one to stop at
        await settled(job)
        assert executions(job) == {"r0": 1, "r1": 1, "r2": 1, "r3": 1}
        assert sink(job, "r3") == [1]
        assert dbg.stops == 3


async def test_step_from_a_held_emission_stops_before_the_receivers_activation() -> None:
    async with debugged("Relay", "Relay", "Collect") as (_, job, dbg):
        add(dbg, routine_id="r0", event_name="output")
        await job.post("r0", "input", 1)
        await stopped(dbg)
        dbg.step()
        at = await stopped(dbg)
        assert (at["type"], at["routine_id"]) == ("step", "r1")
        assert executions(job) == {"r0": 1, "r1": 0, "r2": 0}  # r0 finished its emission, r1 waits
        dbg.continue_()
        await settled(job)
        assert sink(job, "r2") == [1]


async def test_step_when_not_stopped_stops_before_the_next_activation() -> None:
    async with debugged("Relay", "Collect") as (_, job, dbg):
        dbg.step()
        assert job.status is S.IDLE and dbg.stepping
        await job.post("r0", "input", 1)
        at = await stopped(dbg)
        assert (at["type"], at["routine_id"]) == ("step", "r0")
        assert executions(job) == {"r0": 0, "r1": 0}
        dbg.continue_()
        await settled(job)
        assert sink(job, "r1") == [1]


async def test_continue_runs_until_the_next_hit_and_records_the_resume() -> None:
    async with debugged("Relay", "Relay", "Collect") as (_, job, dbg):
        add(dbg, routine_id="r1")
        await job.post("r0", "input", 1)
        await stopped(dbg)
        dbg.step()
        await stopped(dbg)
        dbg.continue_()
        assert not dbg.stepping and job.status is not S.PAUSED
        assert job.pause_points[-1].resumed_at is not None
        await settled(job)
        await job.post("r0", "input", 2)
        at = await stopped(dbg)
        assert at["type"] == "routine" and at["routine_id"] == "r1"
        dbg.continue_()
        await settled(job)
        assert sink(job, "r2") == [1, 2]


async def test_continue_resumes_a_job_paused_by_its_user() -> None:
    async with debugged("Relay", "Collect") as (_, job, dbg):
        job.pause("user")
        await job.post("r0", "input", 1)
        assert not dbg.is_paused and dbg.paused_at() is None and dbg.variables() is None
        assert dbg.frame_names() is None
        dbg.continue_()
        await settled(job)
        assert sink(job, "r1") == [1]


async def test_resuming_the_job_is_the_same_as_continuing() -> None:
    async with debugged("Relay", "Collect") as (_, job, dbg):
        add(dbg, routine_id="r1")
        await job.post("r0", "input", 1)
        await stopped(dbg)
        job.resume()
        await settled(job)
        assert sink(job, "r1") == [1]
        assert not dbg.is_paused and dbg.paused_at() is None and dbg.variables() is None


async def test_a_user_pause_after_resuming_the_job_directly_shows_no_stale_stop() -> None:
    """is_paused means "stopped at a breakpoint or step, not merely paused by a user": a stop that
    was left with ``job.resume()`` (the job API) must not reappear when the user pauses later."""
    async with debugged("Relay", "Collect") as (_, job, dbg):
        bp = add(dbg, routine_id="r1")
        await job.post("r0", "input", 1)
        await stopped(dbg)
        job.resume()
        await settled(job)
        dbg.remove(bp.breakpoint_id)
        job.pause("user")
        assert dbg.paused_at() is None
        assert dbg.variables() is None
        assert dbg.frame_names() is None
        assert not dbg.is_paused


# ------------------------------------------------------------------------------------------------
# Breakpoints come and go during a run
# ------------------------------------------------------------------------------------------------
async def test_a_breakpoint_added_during_a_run_applies_at_once() -> None:
    async with debugged("Slow", "Relay", "Collect", configs={"r0": {"delay": 0.2}}) as (_, job, dbg):
        await job.post("r0", "input", 1)
        await anyio.sleep(0.05)
        assert job.routine_states["r0"].status == "running"
        add(dbg, routine_id="r1")
        at = await stopped(dbg)
        assert at["routine_id"] == "r1" and job.shared_data["slow_done"] == [[1]]
        dbg.continue_()
        await settled(job)
        assert sink(job, "r2") == [1]


async def test_a_breakpoint_removed_during_a_run_no_longer_stops() -> None:
    async with debugged("Slow", "Relay", "Collect", configs={"r0": {"delay": 0.1}}) as (_, job, dbg):
        bp = add(dbg, routine_id="r1")
        await job.post("r0", "input", 1)
        await anyio.sleep(0.02)
        assert dbg.remove(bp.breakpoint_id) is bp
        assert dbg.remove(bp.breakpoint_id) is None
        await settled(job)
        assert dbg.stops == 0 and sink(job, "r2") == [1]


async def test_a_disabled_breakpoint_is_ignored_until_enabled() -> None:
    async with debugged("Relay", "Collect") as (_, job, dbg):
        bp = add(dbg, routine_id="r0", event_name="output", enabled=False)
        await job.post("r0", "input", 1)
        await settled(job)
        assert dbg.stops == 0 and bp.hit_count == 0
        bp.enabled = True
        await job.post("r0", "input", 2)
        await stopped(dbg)
        assert bp.hit_count == 1
        bp.enabled = False
        dbg.continue_()
        await job.post("r0", "input", 3)
        await settled(job)
        assert sink(job, "r1") == [1, 2, 3] and dbg.stops == 1


async def test_another_job_of_the_same_flow_is_not_affected() -> None:
    async with Engine(registry=make_registry()) as engine:
        plan = engine.compile(chain("f", "Relay", "Relay", "Collect"))
        debugged_job = await engine.start_job(plan)
        other = await engine.start_job(plan)
        dbg = attach(debugged_job)
        add(dbg, routine_id="r1")
        add(dbg, routine_id="r0", event_name="output", condition="data > 0")
        await debugged_job.post("r0", "input", 1)
        await other.post("r0", "input", 1)
        await stopped(dbg)
        await settled(other)
        assert other.probe is None and sink(other, "r2") == [1]
        assert other.pause_points == []
        assert debugged_job.status is S.PAUSED
        await run_to_idle(dbg)
        assert sink(debugged_job, "r2") == [1]


async def test_at_most_max_breakpoints_per_job() -> None:
    async with debugged("Relay", "Collect") as (_, _job, dbg):
        for _ in range(session_module.MAX_BREAKPOINTS):
            add(dbg, routine_id="r0")
        with pytest.raises(ValueError, match=str(session_module.MAX_BREAKPOINTS)):
            add(dbg, routine_id="r0")
        assert len(dbg.breakpoints) == session_module.MAX_BREAKPOINTS


async def test_attach_is_idempotent() -> None:
    async with debugged("Relay", "Collect") as (_, job, dbg):
        assert job.probe is dbg and attach(job) is dbg


# ------------------------------------------------------------------------------------------------
# Nothing is lost
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(CASES))
async def test_held_data_is_processed_after_continue_nothing_lost_or_reordered(kind: str) -> None:
    fields = CASES[kind][0]
    n = 40
    async with debugged("Relay", "Relay", "Collect") as (_, job, dbg):
        bp = add(dbg, **fields, condition="data % 7 == 3")
        for i in range(n):
            await job.post("r0", "input", i)
            if i % 10 == 0:
                await anyio.lowlevel.checkpoint()
        stops = await run_to_idle(dbg)
        assert stops >= 1 and bp.hit_count >= stops
        assert sink(job, "r2") == list(range(n))
        assert executions(job)["r2"] >= 1
        assert not job.errors


async def test_data_posted_while_stopped_is_kept_and_processed() -> None:
    async with debugged("Relay", "Collect") as (_, job, dbg):
        add(dbg, routine_id="r1")
        await job.post("r0", "input", 0)
        await stopped(dbg)
        for i in range(1, 6):
            await job.post("r0", "input", i)
        assert job.parked_items() == [{"routine_id": "r0", "slot": "input", "count": 5}]
        await run_to_idle(dbg)
        assert sink(job, "r1") == [0, 1, 2, 3, 4, 5]


# ------------------------------------------------------------------------------------------------
# Ending a job while it is held
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["routine", "event", "connection", "slot"])
async def test_cancel_while_held_ends_the_job_and_the_held_work_never_runs(kind: str) -> None:
    fields = {
        "routine": {"routine_id": "r1"},
        "event": {"routine_id": "r0", "event_name": "output"},
        "connection": {"source": "r0.output", "target": "r1.input"},
        "slot": {"routine_id": "r1", "slot_name": "input"},
    }[kind]
    async with debugged("Relay", "Collect") as (engine, job, dbg):
        sub = engine.bus.subscribe(job_ids=[job.job_id])
        add(dbg, **fields)
        await job.post("r0", "input", 1)
        await stopped(dbg)
        job.cancel("stop debugging")
        assert await job.wait(1) is S.CANCELLED
        await anyio.sleep(0.05)
        assert "batches" not in job.shared_data
        assert job.routine_states["r1"].execution_count == 0
        assert job.error == {"type": "cancelled", "message": "stop debugging"}
        assert [e for e in job.errors] == []
        assert not dbg.is_paused and dbg.paused_at() is None and dbg.variables() is None
        assert dbg.view()["status"] == "cancelled"
        events = drain(sub)
        assert events[-1]["type"] == "job_end"
        assert "routine_start" not in [e["type"] for e in events if e["routine_id"] == "r1"]


async def test_a_timeout_while_held_fails_the_job() -> None:
    async with debugged("Relay", "Collect", timeout=0.5) as (_, job, dbg):
        add(dbg, routine_id="r1")
        await job.post("r0", "input", 1)
        await stopped(dbg)
        assert await job.wait(3) is S.FAILED
        assert job.error is not None and job.error["type"] == "timeout"
        assert "batches" not in job.shared_data


# ------------------------------------------------------------------------------------------------
# Sync (worker thread) routines
# ------------------------------------------------------------------------------------------------
async def test_event_breakpoints_on_sync_routines_hold_and_lose_nothing() -> None:
    async with debugged("SyncRelay", "SyncRelay", "Collect") as (_, job, dbg):
        bp = add(dbg, routine_id="r1", event_name="output", condition="data >= 1")
        held: list[int] = []
        for n in range(4):
            await job.post("r0", "input", n)
        with anyio.fail_after(5):
            while job.status is not S.IDLE:
                if dbg.is_paused:
                    assert dbg.paused_at()["routine_id"] == "r1"  # type: ignore[index]
                    held.append(dbg.variables()["data"]["item"]["data"])  # type: ignore[index]
                    await anyio.sleep(0.02)  # the thread may have finished; its emissions wait
                    assert job.status is S.PAUSED
                    dbg.continue_()
                await anyio.sleep(0.002)
        assert held == [1, 2, 3] and bp.hit_count == 3
        assert sink(job, "r2") == [0, 1, 2, 3]


async def test_a_routine_breakpoint_on_a_sync_routine_stops_before_its_thread_starts() -> None:
    async with debugged("SyncSlow", "Collect", configs={"r0": {"delay": 0.01}}) as (_, job, dbg):
        add(dbg, routine_id="r0")
        await job.post("r0", "input", 1)
        await stopped(dbg)
        await anyio.sleep(0.05)
        assert "sync_started" not in job.shared_data
        dbg.continue_()
        await settled(job)
        assert job.shared_data["sync_emitted"] is True and sink(job, "r1") == [1]


async def test_cancel_while_a_sync_routines_emission_is_held() -> None:
    async with debugged("SyncRelay", "Collect") as (_, job, dbg):
        add(dbg, routine_id="r0", event_name="output")
        await job.post("r0", "input", 1)
        await stopped(dbg)
        job.cancel()
        assert await job.wait(1) is S.CANCELLED
        await anyio.sleep(0.05)
        assert "batches" not in job.shared_data


async def test_step_over_a_sync_routine() -> None:
    async with debugged("Relay", "SyncRelay", "Collect") as (_, job, dbg):
        add(dbg, routine_id="r1")
        await job.post("r0", "input", 1)
        await stopped(dbg)
        dbg.step()
        at = await stopped(dbg)
        assert (at["type"], at["routine_id"]) == ("step", "r2")
        # r2's activation can start (and stop) while r1's thread is still finishing: an
        # activation in flight always completes, a paused job only starts no new ones.
        await until(lambda: executions(job)["r1"] == 1)
        await anyio.sleep(0.02)
        assert executions(job) == {"r0": 1, "r1": 1, "r2": 0} and dbg.paused_at() == at
        dbg.continue_()
        await settled(job)
        assert sink(job, "r2") == [1]


# ------------------------------------------------------------------------------------------------
# frame_names (what evaluate sees) and call_stack
# ------------------------------------------------------------------------------------------------
async def test_frame_names_at_a_routine_stop_feed_evaluate() -> None:
    async with debugged("Relay", "Collect") as (_, job, dbg):
        job.shared_data["limit"] = 10
        add(dbg, routine_id="r0")
        job.pause()
        await job.post("r0", "input", {"data": 4, "label": "a"})
        await job.post("r0", "input", {"data": 5, "label": "b"})
        dbg.continue_()
        await stopped(dbg)
        names = dbg.frame_names()
        assert names is not None
        assert names["item"] == {"data": 4, "label": "a"} and names["data"] == 4 and names["label"] == "a"
        assert names["items"] == [{"data": 4, "label": "a"}, {"data": 5, "label": "b"}]
        assert (names["routine_id"], names["slot"], names["event"]) == ("r0", "input", None)
        assert names["config"] == {} and names["state"] is job.shared_data
        assert evaluate("data + len(items) < state.limit and label == 'a'", names) is True
        assert evaluate("items[1].data", names) == 5
        # as the API does it: in a worker thread
        assert await anyio.to_thread.run_sync(evaluate, "item.label + str(data)", names) == "a4"
        dbg.continue_()
        await settled(job)


async def test_frame_names_at_an_event_stop() -> None:
    async with debugged("Relay", "Collect") as (_, job, dbg):
        add(dbg, routine_id="r0", event_name="output")
        await job.post("r0", "input", {"data": 9})
        await stopped(dbg)
        names = dbg.frame_names()
        assert names is not None
        assert names["event"] == "output" and names["slot"] is None and names["items"] == [{"data": 9}]
        assert evaluate("data * 2", names) == 18
        dbg.continue_()
        await settled(job)


async def test_an_item_key_named_like_a_context_name_is_shadowed_but_reachable_through_item() -> None:
    async with debugged("Relay", "Collect") as (_, job, dbg):
        add(dbg, routine_id="r1", condition="item.slot == 'mine' and slot == 'input'")
        await job.post("r0", "input", {"slot": "mine"})
        await stopped(dbg)
        assert evaluate("item.slot", dbg.frame_names()) == "mine"  # type: ignore[arg-type]
        dbg.continue_()
        await settled(job)


def arm(job: Any, dbg: Any) -> None:
    """A breakpoint that never hits: the debugger records its call stack only while armed."""
    dbg.add(make_breakpoint(job.plan, job.job_id, type="routine", routine_id="r0", condition="False"))


async def test_call_stack_is_newest_first() -> None:
    async with debugged("Relay", "Collect") as (_, job, dbg):
        arm(job, dbg)
        await job.post("r0", "input", 1)
        await settled(job)
        stack = list(dbg.call_stack)
        assert [(e["kind"], e["routine_id"], e.get("event")) for e in stack] == [
            ("activation", "r1", None),
            ("emission", "r0", "output"),
            ("activation", "r0", None),
        ]
        assert stack[0]["items"] == 1 and stack[2]["items"] == 1
        assert dbg.view()["call_stack"] == stack


async def test_call_stack_is_bounded() -> None:
    async with debugged("Relay", "Relay", "Collect") as (_, job, dbg):
        arm(job, dbg)
        for n in range(40):
            await job.post("r0", "input", n)
            await settled(job)  # one activation per item per routine: 5 entries per item
        stack = list(dbg.call_stack)
        assert len(stack) == session_module.CALL_STACK_DEPTH == 50
        stamps = [e["at"] for e in stack]
        assert stamps == sorted(stamps, reverse=True)
        assert (stack[0]["kind"], stack[0]["routine_id"]) == ("activation", "r2")
        assert sink(job, "r2") == list(range(40))


async def test_call_stack_while_stopped_ends_with_the_held_activation() -> None:
    async with debugged("Relay", "Relay", "Collect") as (_, job, dbg):
        add(dbg, routine_id="r1")
        await job.post("r0", "input", 1)
        await stopped(dbg)
        assert (dbg.call_stack[0]["kind"], dbg.call_stack[0]["routine_id"]) == ("activation", "r1")
        dbg.continue_()
        await settled(job)

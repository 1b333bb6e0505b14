"""Error strategies: stop, continue, retry, skip — resolved routine → flow → stop."""

from __future__ import annotations

import time

import anyio
import pytest

from routilux.engine import Connection, Engine, Entry, ErrorHandler, Flow, JobStatus, RoutineSpec
from routilux.engine.plan import compile_flow
from tests.support.routines import chain, make_registry


def flaky_flow(handler: ErrorHandler | None, failures: int = 1, flow_handler: ErrorHandler | None = None) -> Flow:
    return Flow(
        flow_id="e",
        error_handler=flow_handler,
        routines={
            "flaky": RoutineSpec("Flaky", config={"failures": failures}, error_handler=handler),
            "sink": RoutineSpec("Collect"),
        },
        connections=[Connection("flaky.output", "sink.input")],
    )


async def run(flow: Flow, *items: int):
    async with Engine(registry=make_registry()) as engine:
        job = await engine.start_job(flow, entries=[Entry("flaky", "input", n) for n in items], complete_when_idle=True)
        await job.wait(5)
        return job


async def test_stop_is_the_default_and_fails_the_job_with_type_message_and_traceback() -> None:
    job = await run(flaky_flow(None), 1)
    assert job.status is JobStatus.FAILED
    assert job.error is not None
    assert job.error["type"] == "ValueError"
    assert job.error["message"] == "flaky failure 1"
    assert job.error["routine_id"] == "flaky"
    assert 'raise ValueError(f"flaky failure {ctx.attempt}")' in job.error["traceback"]
    assert job.routine_states["flaky"].status == "failed"
    assert job.routine_states["flaky"].error_count == 1
    assert [e.type for e in job.errors] == ["ValueError"]


async def test_continue_records_the_error_and_the_job_goes_on() -> None:
    flow = Flow(
        flow_id="c",
        routines={
            "boom": RoutineSpec("Boom", error_handler=ErrorHandler(strategy="continue")),
            "ok": RoutineSpec("Collect"),
        },
    )
    async with Engine(registry=make_registry()) as engine:
        job = await engine.start_job(
            flow, entries=[Entry("boom", "input", 1), Entry("ok", "input", 2)], complete_when_idle=True
        )
        assert await job.wait(5) is JobStatus.COMPLETED
        assert job.shared_data["batches"]["ok"] == [[2]]
        assert job.routine_states["boom"].status == "failed"
        assert job.routine_states["boom"].error["message"] == "boom"
        assert [(e.routine_id, e.strategy) for e in job.errors] == [("boom", "continue")]
        assert job.execution_history[0].status == "failed"


async def test_retry_runs_the_same_items_again_with_backoff_and_succeeds() -> None:
    handler = ErrorHandler(strategy="retry", max_retries=3, retry_delay=0.05, retry_backoff=2.0)
    job = await run(flaky_flow(handler, failures=2), 7)
    assert job.status is JobStatus.COMPLETED
    assert job.shared_data["batches"]["sink"] == [[7]]
    times = [t for _, t in job.shared_data["attempts"]]
    assert [a for a, _ in job.shared_data["attempts"]] == [1, 2, 3]
    assert times[1] - times[0] >= 0.045 and times[2] - times[1] >= 0.095  # 0.05, then 0.05 * 2
    assert [h.status for h in job.execution_history][:3] == ["retrying", "retrying", "completed"]
    assert job.routine_states["flaky"].error_count == 2


async def test_retry_waits_do_not_block_other_routines_or_threads() -> None:
    handler = ErrorHandler(strategy="retry", max_retries=1, retry_delay=0.3)
    flow = Flow(
        flow_id="r",
        routines={
            "flaky": RoutineSpec("Flaky", config={"failures": 1}, error_handler=handler),
            "other": RoutineSpec("SyncRelay"),
            "sink": RoutineSpec("Collect"),
        },
        connections=[Connection("other.output", "sink.input")],
    )
    async with Engine(registry=make_registry()) as engine:
        job = await engine.start_job(flow, entries=[Entry("flaky", "input", 1)])
        await anyio.sleep(0.05)
        started = time.perf_counter()
        await job.post("other", "input", 2)
        with anyio.fail_after(0.25):  # well within the retry delay
            while "batches" not in job.shared_data:
                await anyio.sleep(0.005)
        assert time.perf_counter() - started < 0.25
        assert engine.get_runtime().info().busy_threads == 0  # the retry holds no thread
        job.cancel()


async def test_retry_exhausted_fails_the_job() -> None:
    handler = ErrorHandler(strategy="retry", max_retries=2, retry_delay=0.0)
    job = await run(flaky_flow(handler, failures=5), 1)
    assert job.status is JobStatus.FAILED
    assert [a for a, _ in job.shared_data["attempts"]] == [1, 2, 3]
    assert job.error["message"] == "flaky failure 3"


async def test_skip_sets_the_items_aside_marks_the_routine_skipped_and_goes_on() -> None:
    job = await run(flaky_flow(ErrorHandler(strategy="skip"), failures=1), 1)
    assert job.status is JobStatus.COMPLETED
    assert "batches" not in job.shared_data
    assert job.routine_states["flaky"].status == "skipped"
    assert list(job.errors) == []
    assert job.execution_history[0].status == "skipped"
    assert job.execution_history[0].error == "ValueError: flaky failure 1"


def test_handlers_resolve_routine_then_flow_then_stop() -> None:
    registry = make_registry()
    flow_level = ErrorHandler(strategy="continue")
    flow = Flow(
        flow_id="h",
        error_handler=flow_level,
        routines={
            "own": RoutineSpec("Boom", error_handler=ErrorHandler(strategy="skip")),
            "inherits": RoutineSpec("Boom"),
        },
    )
    plan = compile_flow(flow, registry)
    assert plan.error_handlers["own"].strategy == "skip"
    assert plan.error_handlers["inherits"] is flow_level
    bare = compile_flow(Flow(flow_id="x", routines={"b": RoutineSpec("Boom")}), registry)
    assert bare.error_handlers["b"].strategy == "stop"


async def test_flow_level_handler_applies_at_run_time() -> None:
    job = await run(flaky_flow(None, flow_handler=ErrorHandler(strategy="continue")), 1)
    assert job.status is JobStatus.COMPLETED
    assert job.routine_states["flaky"].status == "failed"


@pytest.mark.parametrize("kwargs", [{"max_retries": -1}, {"retry_delay": -1.0}, {"retry_backoff": 0.5}])
def test_error_handler_rejects_nonsense(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        ErrorHandler(strategy="retry", **kwargs)


async def test_errors_in_sync_logic_are_handled_the_same_way() -> None:
    from routilux.engine import Routine

    class SyncBoom(Routine):
        slots = ["input"]

        def logic(self, ctx, input):
            raise KeyError("missing")

    registry = make_registry()
    registry.register(SyncBoom)
    async with Engine(registry=registry) as engine:
        job = await engine.start_job(
            Flow(flow_id="s", routines={"b": RoutineSpec("SyncBoom")}),
            entries=[Entry("b", "input", 1)],
            complete_when_idle=True,
        )
        assert await job.wait(5) is JobStatus.FAILED
        assert job.error["type"] == "KeyError"
        assert "SyncBoom" not in job.error["message"] and "missing" in job.error["message"]


async def test_emitting_an_undeclared_event_is_an_error_the_strategy_handles() -> None:
    from routilux.engine import Routine

    class Typo(Routine):
        slots = ["input"]
        events = ["output"]

        async def logic(self, ctx, input):
            await ctx.emit("ouptut", data=1)

    registry = make_registry()
    registry.register(Typo)
    async with Engine(registry=registry) as engine:
        job = await engine.start_job(
            Flow(flow_id="t", routines={"t": RoutineSpec("Typo")}),
            entries=[Entry("t", "input", 1)],
            complete_when_idle=True,
        )
        assert await job.wait(5) is JobStatus.FAILED
        assert job.error["type"] == "UnknownEvent"
        assert "Events: output" in job.error["message"]


async def test_chain_helper_flow_runs(tmp_path) -> None:
    async with Engine(registry=make_registry()) as engine:
        job = await engine.start_job(
            chain("z", "Relay", "Collect"), entries=[Entry("r0", "input", 1)], complete_when_idle=True
        )
        assert await job.wait(5) is JobStatus.COMPLETED

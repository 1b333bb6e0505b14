"""Job statuses and transitions, exactly as DESIGN.md §3 lists them."""

from __future__ import annotations

import time

import anyio
import pytest

from routilux.bus import event_to_builtins
from routilux.engine import Engine, Entry, IllegalTransition, JobStatus, UnknownRoutine, UnknownSlot
from tests.support.routines import chain, make_registry

S = JobStatus


def flow_slow(delay: float = 0.2):
    return chain("slow", "Slow", "Collect", configs={"r0": {"delay": delay}})


async def test_a_job_starts_running_and_goes_idle_when_work_drains() -> None:
    async with Engine(registry=make_registry()) as engine:
        job = await engine.start_job(chain("f", "Relay", "Collect"))
        assert job.status is S.IDLE  # nothing posted: idle at once
        await job.post("r0", "input", 1)
        assert job.status is S.RUNNING
        await anyio.wait_all_tasks_blocked()
        assert job.status is S.IDLE
        assert job.shared_data["batches"]["r1"] == [[1]]
        assert job.started_at is not None and job.completed_at is None


async def test_complete_when_idle_completes_after_the_work_drains() -> None:
    async with Engine(registry=make_registry()) as engine:
        job = await engine.start_job(
            chain("f", "Relay", "Relay", "Collect"),
            entries=[Entry("r0", "input", {"data": n}) for n in range(3)],
            complete_when_idle=True,
        )
        assert await job.wait(5) is S.COMPLETED
        assert sum(job.shared_data["batches"]["r2"], []) == [0, 1, 2]
        assert job.completed_at is not None
        assert job.routine_states["r2"].status == "completed"


async def test_pause_lets_in_flight_finish_parks_posts_and_resume_runs_them() -> None:
    async with Engine(registry=make_registry()) as engine:
        job = await engine.start_job(flow_slow(0.2), entries=[Entry("r0", "input", 1)])
        await anyio.sleep(0.05)
        assert job.routine_states["r0"].status == "running"
        job.pause("inspect")
        assert job.status is S.PAUSED
        await job.post("r0", "input", 2)
        await job.post("r0", "input", 3)
        await anyio.sleep(0.3)  # the in-flight activation finishes, nothing new starts
        assert job.shared_data["slow_done"] == [[1]]
        assert "batches" not in job.shared_data  # r1 got the item but may not start
        assert job.parked_items() == [
            {"routine_id": "r0", "slot": "input", "count": 2},
            {"routine_id": "r1", "slot": "input", "count": 1},
        ]
        assert job.state()["deferred_events"] == job.parked_items()
        assert job.pause_points[0].reason == "inspect"
        assert job.pause_points[0].active_routines == ["r0"]
        job.resume()
        job.resume()  # idempotent
        assert job.pause_points[0].resumed_at is not None
        with anyio.fail_after(2):
            while job.status is not S.IDLE:
                await anyio.sleep(0.01)
        assert sum(job.shared_data["batches"]["r1"], []) == [1, 2, 3]


async def test_pause_is_idempotent_and_resume_of_a_running_job_is_a_no_op() -> None:
    async with Engine(registry=make_registry()) as engine:
        job = await engine.start_job(flow_slow(0.1), entries=[Entry("r0", "input", 1)])
        job.resume()
        assert job.status is S.RUNNING
        job.pause()
        job.pause()
        assert job.status is S.PAUSED and len(job.pause_points) == 1
        job.cancel()


@pytest.mark.parametrize("logic_class", ["Slow", "SyncSlow"])
async def test_cancel_ends_the_job_at_once_for_async_and_sync_logic(logic_class: str) -> None:
    async with Engine(registry=make_registry()) as engine:
        flow = chain("f", logic_class, "Collect", configs={"r0": {"delay": 0.5}})
        job = await engine.start_job(flow, entries=[Entry("r0", "input", 1)])
        await anyio.sleep(0.1)
        started = time.perf_counter()
        job.cancel("user asked")
        assert job.status is S.CANCELLED
        assert await job.wait(0.1) is S.CANCELLED
        assert time.perf_counter() - started < 0.1
        assert job.routine_states["r0"].status == "cancelled"
        await anyio.sleep(0.6)  # the abandoned thread finishes its sleep; its emit is refused
        assert "batches" not in job.shared_data
        if logic_class == "Slow":
            assert job.shared_data["slow_cancelled"] is True
        else:
            assert job.shared_data["sync_finished_sleep"] is True
            assert "sync_emitted" not in job.shared_data
        assert job.error == {"type": "cancelled", "message": "user asked"}


async def test_timeout_fails_the_job_with_a_timeout_error() -> None:
    async with Engine(registry=make_registry()) as engine:
        job = await engine.start_job(flow_slow(5), entries=[Entry("r0", "input", 1)], timeout=0.2)
        started = time.perf_counter()
        assert await job.wait(2) is S.FAILED
        assert 0.15 < time.perf_counter() - started < 1.0
        assert job.error is not None and job.error["type"] == "timeout"
        assert "0.2 seconds" in job.error["message"]
        assert job.shared_data.get("slow_cancelled") is True


async def test_the_flow_timeout_applies_when_the_job_gives_none() -> None:
    async with Engine(registry=make_registry()) as engine:
        flow = flow_slow(5)
        flow = type(flow)(flow_id="f", execution={"timeout": 0.1} and type(flow.execution)(timeout=0.1),
                          routines=flow.routines, connections=flow.connections)
        job = await engine.start_job(flow, entries=[Entry("r0", "input", 1)])
        assert job.timeout == 0.1
        assert await job.wait(2) is S.FAILED


async def test_a_completed_timeout_never_fires_later() -> None:
    async with Engine(registry=make_registry()) as engine:
        job = await engine.start_job(chain("f", "Relay", "Collect"), timeout=0.1, complete_when_idle=True)
        assert job.status is S.COMPLETED
        await anyio.sleep(0.2)
        assert job.status is S.COMPLETED and job.error is None


async def test_complete_and_fail_from_outside() -> None:
    async with Engine(registry=make_registry()) as engine:
        a = await engine.start_job(flow_slow())
        a.complete()
        assert a.status is S.COMPLETED
        b = await engine.start_job(flow_slow())
        b.fail("operator said so")
        assert b.status is S.FAILED
        assert b.error == {"type": "failed_by_request", "message": "operator said so"}


ACTIONS = {
    "pause": lambda job: job.pause(),
    "resume": lambda job: job.resume(),
    "cancel": lambda job: job.cancel(),
    "complete": lambda job: job.complete(),
    "fail": lambda job: job.fail(),
}

# (status the job is in, action) -> the status it ends in, or None for IllegalTransition.
TRANSITIONS = {
    (S.RUNNING, "pause"): S.PAUSED,
    (S.RUNNING, "resume"): S.RUNNING,
    (S.RUNNING, "cancel"): S.CANCELLED,
    (S.RUNNING, "complete"): S.COMPLETED,
    (S.RUNNING, "fail"): S.FAILED,
    (S.IDLE, "pause"): S.PAUSED,
    (S.IDLE, "resume"): S.IDLE,
    (S.IDLE, "cancel"): S.CANCELLED,
    (S.IDLE, "complete"): S.COMPLETED,
    (S.IDLE, "fail"): S.FAILED,
    (S.PAUSED, "pause"): S.PAUSED,
    (S.PAUSED, "cancel"): S.CANCELLED,
    (S.PAUSED, "complete"): S.COMPLETED,
    (S.PAUSED, "fail"): S.FAILED,
    **{(terminal, action): None for terminal in (S.COMPLETED, S.FAILED, S.CANCELLED) for action in ACTIONS},
}


async def _job_in(engine: Engine, status: JobStatus):
    job = await engine.start_job(flow_slow(10))
    if status is S.RUNNING:
        await job.post("r0", "input", 1)
    elif status is S.PAUSED:
        job.pause()
    elif status is S.COMPLETED:
        job.complete()
    elif status is S.FAILED:
        job.fail()
    elif status is S.CANCELLED:
        job.cancel()
    assert job.status is status
    return job


@pytest.mark.parametrize(("start", "action"), sorted(TRANSITIONS, key=str))
async def test_transition_table(start: JobStatus, action: str) -> None:
    async with Engine(registry=make_registry()) as engine:
        job = await _job_in(engine, start)
        expected = TRANSITIONS[(start, action)]
        if expected is None:
            with pytest.raises(IllegalTransition) as caught:
                ACTIONS[action](job)
            assert caught.value.status == start.value
            assert caught.value.to_dict()["status"] == start.value
            assert job.status is start
        else:
            ACTIONS[action](job)
            assert job.status is expected
        if not job.is_terminal:
            job.cancel()


async def test_resume_of_a_paused_job_returns_to_running_or_idle() -> None:
    async with Engine(registry=make_registry()) as engine:
        job = await _job_in(engine, S.PAUSED)
        job.resume()
        assert job.status is S.IDLE


@pytest.mark.parametrize("terminal", [S.COMPLETED, S.FAILED, S.CANCELLED])
async def test_post_to_a_terminal_job_is_illegal_and_start_is_not_repeatable(terminal: JobStatus) -> None:
    async with Engine(registry=make_registry()) as engine:
        job = await _job_in(engine, terminal)
        with pytest.raises(IllegalTransition, match=f"it is {terminal.value}"):
            await job.post("r0", "input", 1)
        with pytest.raises(IllegalTransition):
            await job.start()


async def test_terminal_event_is_the_last_event_of_the_job() -> None:
    async with Engine(registry=make_registry()) as engine:
        sub = engine.bus.subscribe()
        job = await engine.start_job(flow_slow(0.3), entries=[Entry("r0", "input", n) for n in range(3)])
        await anyio.sleep(0.05)
        job.cancel()
        await anyio.sleep(0.4)
        events = []
        while (item := sub.receive_nowait()) is not None:
            events.append(event_to_builtins(item))
        assert events[-1]["type"] == "job_end"
        assert events[-1]["data"]["status"] == "cancelled"
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


async def test_post_checks_the_routine_and_slot() -> None:
    async with Engine(registry=make_registry()) as engine:
        job = await engine.start_job(chain("f", "Relay", "Collect"))
        with pytest.raises(UnknownRoutine, match="Routines: r0, r1"):
            await job.post("nope", "input", 1)
        with pytest.raises(UnknownSlot, match="Slots: input"):
            await job.post("r0", "nope", 1)
        with pytest.raises(UnknownRoutine):
            await engine.start_job(chain("g", "Relay"), entries=[Entry("zz", "input", 1)])


async def test_posted_non_dicts_are_wrapped_and_dicts_kept() -> None:
    async with Engine(registry=make_registry()) as engine:
        job = await engine.start_job(chain("f", "Relay", "Collect"))
        await job.post("r0", "input", [1, 2])
        await job.post("r0", "input", {"data": "x", "extra": 1})
        await anyio.wait_all_tasks_blocked()
        assert sum(job.shared_data["batches"]["r1"], []) == [[1, 2], "x"]


async def test_state_has_every_documented_section() -> None:
    async with Engine(registry=make_registry()) as engine:
        job = await engine.start_job(
            chain("f", "Relay", "Collect"), entries=[Entry("r0", "input", 1)], complete_when_idle=True
        )
        await job.wait(5)
        state = job.state()
        for key in (
            "routine_states",
            "execution_history",
            "shared_data",
            "pause_points",
            "deferred_events",
            "job_id",
            "flow_id",
            "runtime_id",
            "status",
            "created_at",
            "started_at",
            "completed_at",
            "error",
        ):
            assert key in state
        assert state["status"] == "completed"
        assert state["routine_states"]["r0"]["execution_count"] == 1
        assert [h["routine_id"] for h in state["execution_history"]] == ["r0", "r1"]
        assert state["created_at"].endswith("Z")


async def test_two_jobs_of_one_flow_never_share_data() -> None:
    async with Engine(registry=make_registry()) as engine:
        flow = engine.compile(chain("f", "Relay", "Slow", "Collect", configs={"r1": {"delay": 0.01}}))
        a = await engine.start_job(flow)
        b = await engine.start_job(flow)

        async def feed(job, base: int) -> None:
            for n in range(50):
                await job.post("r0", "input", base + n)

        async with anyio.create_task_group() as tg:
            tg.start_soon(feed, a, 0)
            tg.start_soon(feed, b, 1000)
        with anyio.fail_after(5):
            while a.status is not S.IDLE or b.status is not S.IDLE:
                await anyio.sleep(0.01)
        assert sum(a.shared_data["batches"]["r2"], []) == list(range(50))
        assert sum(b.shared_data["batches"]["r2"], []) == list(range(1000, 1050))
        assert a.shared_data is not b.shared_data

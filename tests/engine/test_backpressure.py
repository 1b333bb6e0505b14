"""Full slots make emitters wait; nothing is ever dropped; a stuck cycle ends in an error."""

from __future__ import annotations

import anyio
import pytest

from routilux.engine import (
    AllSlotsReady,
    Connection,
    Engine,
    EngineSettings,
    Entry,
    ErrorHandler,
    Flow,
    JobOptions,
    JobStatus,
    Routine,
    RoutineSpec,
    SlotFull,
    SlotSpec,
)
from routilux.engine.slots import SlotQueue, pressure_of
from tests.support.routines import make_registry


class Burst(Routine):
    """Emits ``count`` items as fast as it can (sync or async variants below)."""

    slots = ["input"]
    events = ["output"]

    async def logic(self, ctx, input):
        for item in input:
            for n in range(item["data"]):
                await ctx.emit("output", data=n)
        ctx.state["burst_done"] = anyio.current_time()


class SyncBurst(Routine):
    slots = ["input"]
    events = ["output"]

    def logic(self, ctx, input):
        for item in input:
            for n in range(item["data"]):
                ctx.emit("output", data=n)


class TinySlowSink(Routine):
    """A 5-item slot drained slowly."""

    slots = {"input": SlotSpec(capacity=5)}

    async def logic(self, ctx, input):
        ctx.state.setdefault("seen", []).extend(i["data"] for i in input)
        ctx.state.setdefault("max_batch", 0)
        ctx.state["max_batch"] = max(ctx.state["max_batch"], len(input))
        await anyio.sleep(0.01)


def registry():
    reg = make_registry()
    for cls in (Burst, SyncBurst, TinySlowSink):
        reg.register(cls)
    return reg


@pytest.mark.parametrize("emitter", ["Burst", "SyncBurst"])
async def test_a_full_slot_makes_the_emitter_wait_and_loses_nothing(emitter: str) -> None:
    flow = Flow(
        flow_id="bp",
        routines={"burst": RoutineSpec(emitter), "sink": RoutineSpec("TinySlowSink")},
        connections=[Connection("burst.output", "sink.input")],
    )
    async with Engine(registry=registry()) as engine:
        job = await engine.start_job(flow, entries=[Entry("burst", "input", 200)], complete_when_idle=True)
        peak = 0
        with anyio.fail_after(10):
            while not job.is_terminal:
                (status,) = job.queue_status("sink")
                peak = max(peak, status.unconsumed)
                assert status.unconsumed <= 5
                await anyio.sleep(0.001)
        assert job.status is JobStatus.COMPLETED
        assert job.shared_data["seen"] == list(range(200))
        assert job.shared_data["max_batch"] <= 5
        assert peak == 5  # it really filled up and the emitter really waited


async def test_post_waits_for_room_too() -> None:
    flow = Flow(flow_id="p", routines={"sink": RoutineSpec("TinySlowSink")})
    async with Engine(registry=registry()) as engine:
        job = await engine.start_job(flow)
        for n in range(40):
            await job.post("sink", "input", n)
            assert job.queue_status("sink")[0].unconsumed <= 5
        with anyio.fail_after(5):
            while job.status is not JobStatus.IDLE:
                await anyio.sleep(0.005)
        assert job.shared_data["seen"] == list(range(40))


async def test_a_cycle_that_fills_its_own_slot_fails_with_slot_full_instead_of_hanging() -> None:
    class SelfFeeder(Routine):
        slots = {"input": SlotSpec(capacity=3, put_timeout=0.1)}
        events = ["output"]

        async def logic(self, ctx, input):
            for _ in range(10):
                await ctx.emit("output", data=1)

    reg = registry()
    reg.register(SelfFeeder)
    flow = Flow(flow_id="c", routines={"s": RoutineSpec("SelfFeeder")}, connections=[Connection("s.output", "s.input")])
    async with Engine(registry=reg) as engine:
        job = await engine.start_job(flow, entries=[Entry("s", "input", 1)])
        assert await job.wait(2) is JobStatus.FAILED
        assert job.error["type"] == "SlotFull"
        assert "s.input stayed full (3 items) for 0.1s" in job.error["message"]


async def test_slot_full_goes_through_the_error_strategy() -> None:
    class Feeder(Routine):
        slots = ["input"]
        events = ["output"]

        async def logic(self, ctx, input):
            for n in range(10):
                await ctx.emit("output", data=n)

    class Stuck(Routine):
        """Never runs: it waits for a second input that never comes, so its slot stays full."""

        slots = {"input": SlotSpec(capacity=2, put_timeout=0.05), "other": SlotSpec()}
        policy = AllSlotsReady()

    reg = registry()
    reg.register(Feeder)
    reg.register(Stuck)
    flow = Flow(
        flow_id="s",
        routines={
            "f": RoutineSpec("Feeder", error_handler=ErrorHandler(strategy="continue")),
            "stuck": RoutineSpec("Stuck"),
        },
        connections=[Connection("f.output", "stuck.input")],
    )
    async with Engine(registry=reg) as engine:
        job = await engine.start_job(flow, entries=[Entry("f", "input", 1)])
        with anyio.fail_after(2):
            while not job.errors:
                await anyio.sleep(0.01)
        assert job.errors[0].type == "SlotFull"
        with anyio.fail_after(2):
            while job.status is not JobStatus.IDLE:
                await anyio.sleep(0.01)
        assert job.queue_status("stuck", "input")[0].unconsumed == 2  # continue: kept, never dropped


def test_engine_settings_set_default_capacity() -> None:
    settings = EngineSettings(job_options=JobOptions(slot_capacity=7))
    assert settings.job_options.slot_capacity == 7


def test_queue_status_and_pressure_bands() -> None:
    queue = SlotQueue("r", "input", capacity=10, put_timeout=1)
    assert queue.status().pressure == "low"
    for n in range(10):
        assert queue.put_nowait(n)
    assert not queue.put_nowait(99)
    status = queue.status()
    assert (status.unconsumed, status.capacity, status.usage, status.pressure) == (10, 10, 1.0, "critical")
    assert queue.take(3) == [0, 1, 2]
    assert [pressure_of(u) for u in (0.49, 0.5, 0.79, 0.8, 0.94, 0.95)] == [
        "low",
        "medium",
        "medium",
        "high",
        "high",
        "critical",
    ]


async def test_slot_full_error_names_the_slot() -> None:
    queue = SlotQueue("r", "input", capacity=1, put_timeout=0.01)
    queue.put_nowait(1)
    with pytest.raises(SlotFull) as caught:
        await queue.wait_for_room()
    assert caught.value.context == {"routine_id": "r", "slot": "input", "capacity": 1}


async def test_a_sync_routine_that_fills_its_own_slot_fails_with_slot_full_too() -> None:
    class SyncSelfFeeder(Routine):
        slots = {"input": SlotSpec(capacity=3, put_timeout=0.1)}
        events = ["output"]

        def logic(self, ctx, input):
            for _ in range(1000):
                ctx.emit("output", data=1)

    reg = registry()
    reg.register(SyncSelfFeeder)
    flow = Flow(
        flow_id="c", routines={"s": RoutineSpec("SyncSelfFeeder")}, connections=[Connection("s.output", "s.input")]
    )
    async with Engine(registry=reg) as engine:
        job = await engine.start_job(flow, entries=[Entry("s", "input", 1)])
        assert await job.wait(3) is JobStatus.FAILED
        assert job.error["type"] == "SlotFull"


async def test_emissions_before_a_sync_error_arrive_before_the_retry_runs() -> None:
    class EmitThenFail(Routine):
        slots = ["input"]
        events = ["output"]
        error_handler = ErrorHandler(strategy="retry", max_retries=1, retry_delay=0)

        def logic(self, ctx, input):
            ctx.emit("output", data=f"attempt {ctx.attempt}")
            if ctx.attempt == 1:
                raise ValueError("first attempt fails after emitting")

    reg = registry()
    reg.register(EmitThenFail)
    flow = Flow(
        flow_id="r",
        routines={"e": RoutineSpec("EmitThenFail"), "keep": RoutineSpec("Collect")},
        connections=[Connection("e.output", "keep.input")],
    )
    async with Engine(registry=reg) as engine:
        job = await engine.start_job(flow, entries=[Entry("e", "input", 1)], complete_when_idle=True)
        assert await job.wait(3) is JobStatus.COMPLETED
        assert sum(job.shared_data["batches"]["keep"], []) == ["attempt 1", "attempt 2"]


async def test_a_context_used_after_its_logic_returned_refuses_to_emit() -> None:
    kept = {}

    class Leaky(Routine):
        slots = ["input"]
        events = ["output"]

        def logic(self, ctx, input):
            kept["ctx"] = ctx

    reg = registry()
    reg.register(Leaky)
    async with Engine(registry=reg) as engine:
        job = await engine.start_job(
            Flow(flow_id="l", routines={"l": RoutineSpec("Leaky")}),
            entries=[Entry("l", "input", 1)],
            complete_when_idle=True,
        )
        await job.wait(3)
    with pytest.raises(RuntimeError, match="after the activation ended"):
        kept["ctx"].emit("output", data=1)

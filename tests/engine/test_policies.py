"""Activation policies: when a routine runs and what it takes."""

from __future__ import annotations

import anyio
import pytest

from routilux.engine import (
    BatchSize,
    Connection,
    Engine,
    Entry,
    Flow,
    JobStatus,
    PolicySpec,
    RoutineSpec,
    compile_flow,
)
from routilux.engine.policies import PolicyView
from tests.support.routines import make_registry


def collect_flow(policy: PolicySpec | None = None, target: str = "Collect") -> Flow:
    return Flow(
        flow_id="p",
        routines={"src": RoutineSpec("Relay"), "dst": RoutineSpec(target, policy=policy)},
        connections=[Connection("src.output", "dst.input")],
    )


async def settle(job) -> None:
    with anyio.fail_after(5):
        while job.status is JobStatus.RUNNING:
            await anyio.sleep(0.005)


async def test_immediate_takes_everything_queued_in_one_activation() -> None:
    async with Engine(registry=make_registry()) as engine:
        job = await engine.start_job(collect_flow())
        job.pause()
        for n in range(5):
            await job.post("dst", "input", n)
        job.resume()
        await settle(job)
        assert job.shared_data["batches"]["dst"] == [[0, 1, 2, 3, 4]]


async def test_immediate_runs_one_activation_at_a_time_and_keeps_order() -> None:
    async with Engine(registry=make_registry()) as engine:
        flow = Flow(
            flow_id="o",
            routines={"slow": RoutineSpec("Slow", config={"delay": 0.02}), "dst": RoutineSpec("Collect")},
            connections=[Connection("slow.output", "dst.input")],
        )
        job = await engine.start_job(flow)
        for n in range(20):
            await job.post("slow", "input", n)
            await anyio.sleep(0.004)
        await settle(job)
        batches = job.shared_data["slow_started"]
        assert len(batches) < 20  # items that arrived while it ran were taken together
        assert sum(batches, []) == list(range(20))
        assert sum(job.shared_data["batches"]["dst"], []) == list(range(20))


async def test_all_slots_ready_takes_one_item_from_each_slot_in_order() -> None:
    async with Engine(registry=make_registry()) as engine:
        flow = Flow(flow_id="a", routines={"pair": RoutineSpec("Pair", policy=PolicySpec(type="all_slots_ready"))})
        job = await engine.start_job(flow)
        for n in range(3):
            await job.post("pair", "left", n)
        await settle(job)
        assert "pairs" not in job.shared_data
        assert job.status is JobStatus.IDLE  # waiting on input from outside is idle
        for n in range(2):
            await job.post("pair", "right", 10 + n)
        await settle(job)
        assert job.shared_data["pairs"] == [([0], [10]), ([1], [11])]
        assert [q.unconsumed for q in job.queue_status("pair")] == [1, 0]


async def test_batch_size_waits_for_n_and_flushes_leftovers_when_the_job_drains() -> None:
    async with Engine(registry=make_registry()) as engine:
        job = await engine.start_job(
            collect_flow(PolicySpec(type="batch_size", n=3)),
            entries=[Entry("src", "input", n) for n in range(7)],
            complete_when_idle=True,
        )
        assert await job.wait(5) is JobStatus.COMPLETED
        assert job.shared_data["batches"]["dst"] == [[0, 1, 2], [3, 4, 5], [6]]


async def test_batch_size_keeps_batching_items_posted_one_by_one() -> None:
    async with Engine(registry=make_registry()) as engine:
        job = await engine.start_job(collect_flow(PolicySpec(type="batch_size", n=3)))
        for n in range(7):
            await job.post("src", "input", n)
            await settle(job)
        assert job.shared_data["batches"]["dst"] == [[0, 1, 2], [3, 4, 5]]
        assert job.status is JobStatus.IDLE and job.queue_status("dst")[0].unconsumed == 1


async def test_entries_are_all_delivered_before_the_job_can_complete() -> None:
    async with Engine(registry=make_registry()) as engine:
        flow = Flow(flow_id="a", routines={"pair": RoutineSpec("Pair", policy=PolicySpec(type="all_slots_ready"))})
        job = await engine.start_job(
            flow, entries=[Entry("pair", "left", 1), Entry("pair", "right", 2)], complete_when_idle=True
        )
        assert await job.wait(5) is JobStatus.COMPLETED
        assert job.shared_data["pairs"] == [([1], [2])]


async def test_batch_size_without_flush_keeps_leftovers_queued_and_visible() -> None:
    async with Engine(registry=make_registry()) as engine:
        spec = PolicySpec(type="batch_size", n=3, flush_when_idle=False)
        job = await engine.start_job(
            collect_flow(spec), entries=[Entry("src", "input", n) for n in range(4)], complete_when_idle=True
        )
        assert await job.wait(5) is JobStatus.COMPLETED
        assert job.shared_data["batches"]["dst"] == [[0, 1, 2]]
        (status,) = job.queue_status("dst")
        assert status.unconsumed == 1 and status.pressure == "low"


async def test_time_interval_runs_on_the_leading_edge_then_flushes_with_a_real_timer() -> None:
    async with Engine(registry=make_registry()) as engine:
        t0 = anyio.current_time()
        job = await engine.start_job(
            collect_flow(PolicySpec(type="time_interval", seconds=0.2)), entries=[Entry("src", "input", 0)]
        )
        await anyio.sleep(0.02)
        for n in (1, 2, 3):
            await job.post("src", "input", n)
        await anyio.sleep(0.05)
        assert job.shared_data["batches"]["dst"] == [[0]]
        assert job.status is JobStatus.RUNNING  # the pending flush is work: not idle
        await settle(job)
        assert job.shared_data["batches"]["dst"] == [[0], [1, 2, 3]]
        assert anyio.current_time() - t0 >= 0.19


async def test_custom_policy_from_python_and_from_the_dsl_by_registered_name() -> None:
    calls: list[bool] = []

    def pairs_only(view: PolicyView):
        calls.append(view.draining)
        queue = view.queues["input"]
        return {"input": queue.take(2)} if len(queue) >= 2 else None

    registry = make_registry()
    registry.register_policy("pairs", pairs_only)
    async with Engine(registry=registry) as engine:
        job = await engine.start_job(
            collect_flow(PolicySpec(type="custom", name="pairs")),
            entries=[Entry("dst", "input", n) for n in range(5)],
            complete_when_idle=True,
        )
        assert await job.wait(5) is JobStatus.COMPLETED
        assert job.shared_data["batches"]["dst"] == [[0, 1], [2, 3]]
        assert True in calls  # it was also consulted in the draining pass
        assert job.queue_status("dst")[0].unconsumed == 1  # it chose not to flush the odd one


def test_unknown_custom_policy_and_missing_parameters_are_reported_with_their_location() -> None:
    registry = make_registry()
    flow = Flow(
        flow_id="bad",
        routines={
            "a": RoutineSpec("Collect", policy=PolicySpec(type="custom", name="nope")),
            "b": RoutineSpec("Collect", policy=PolicySpec(type="batch_size")),
            "c": RoutineSpec("Collect", policy=PolicySpec(type="time_interval")),
        },
    )
    with pytest.raises(Exception) as caught:
        compile_flow(flow, registry)
    problems = {p.location: p.message for p in caught.value.problems}
    assert "unknown custom policy 'nope'" in problems["routines.a.policy"]
    assert "needs 'n'" in problems["routines.b.policy"]
    assert "needs 'seconds'" in problems["routines.c.policy"]


def test_a_routine_may_choose_its_policy_from_its_config() -> None:
    from tests.support.batch_routines import make_batching_registry

    plan = compile_flow(
        Flow(flow_id="b", routines={"b": RoutineSpec("ConfigBatch", config={"size": 4})}),
        make_batching_registry(),
    )
    assert plan.policies["b"] == BatchSize(4)


def test_policies_describe_themselves_in_dsl_form() -> None:
    assert BatchSize(3).describe() == {"type": "batch_size", "n": 3}
    assert repr(BatchSize(3)) == "BatchSize(n=3)"
    with pytest.raises(ValueError):
        BatchSize(0)


async def test_a_custom_policy_that_raises_fails_its_job_only() -> None:
    def broken(view: PolicyView):
        if len(view.queues["input"]):
            raise ZeroDivisionError("bad policy")
        return None

    registry = make_registry()
    registry.register_policy("broken", broken)
    async with Engine(registry=registry) as engine:
        job = await engine.start_job(collect_flow(PolicySpec(type="custom", name="broken")))
        healthy = await engine.start_job(collect_flow(), entries=[Entry("src", "input", 1)], complete_when_idle=True)
        await job.post("src", "input", 1)
        assert await job.wait(2) is JobStatus.FAILED
        assert job.error["type"] == "policy_error" and "ZeroDivisionError: bad policy" in job.error["message"]
        assert await healthy.wait(2) is JobStatus.COMPLETED
        later = await engine.start_job(collect_flow(), entries=[Entry("src", "input", 2)], complete_when_idle=True)
        assert await later.wait(2) is JobStatus.COMPLETED  # the runtime is still alive

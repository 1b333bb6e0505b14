"""The metrics aggregator, fed by a real engine's bus, against what the jobs actually did.

Counts and statuses must be exact (compared with the engine's own records of the same job),
durations within tolerance; queue depths equal the engine's queues; a flow's figures are the sum
of its jobs'; what a finished job leaves in the store restores its flow's figures after a restart.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import anyio
import msgspec
import pytest

from routilux.bus import Event
from routilux.bus.events import utc_now
from routilux.engine import Connection, Engine, Entry, ErrorHandler, Flow, Job, JobStatus, RoutineSpec
from routilux.monitor import MetricsAggregator
from routilux.monitor.aggregator import FinishedJob
from tests.support.routines import chain, make_registry


class Watched:
    """An engine whose bus has a metrics aggregator and a recorder of every event."""

    def __init__(self, engine: Engine, aggregator: MetricsAggregator) -> None:
        self.engine = engine
        self.aggregator = aggregator
        self.stored: list[tuple[str, str, bytes]] = []
        self.events = engine.bus.subscribe(buffer=1_000_000)

    async def settle(self) -> None:
        """Until the aggregator has taken every event published so far."""
        with anyio.fail_after(5):
            while self.aggregator.processed + self.aggregator.lost < self.engine.bus.published:
                await anyio.sleep(0.001)

    def events_of(self, job: Job, type_: str) -> list[Any]:
        seen = []
        while (item := self.events.receive_nowait()) is not None:
            seen.append(item)
        self._seen = getattr(self, "_seen", []) + seen
        return [e for e in self._seen if e.job_id == job.job_id and e.type == type_]


@contextlib.asynccontextmanager
async def watching() -> AsyncIterator[Watched]:
    """An engine, its aggregator running in a task group of the test's own task."""
    async with Engine(registry=make_registry()) as engine:
        holder: list[Watched] = []
        aggregator = MetricsAggregator(
            engine.bus,
            capacities=lambda flow_id: {("r0", "input"): 1000, ("r1", "input"): 1000, ("r2", "input"): 1000}
            if flow_id.startswith("chain") else {},
            on_finished=lambda job_id, flow_id, blob: holder[0].stored.append((job_id, flow_id, blob)),
        )
        w = Watched(engine, aggregator)
        holder.append(w)
        async with anyio.create_task_group() as tg:
            tg.start_soon(aggregator.run)
            yield w
            tg.cancel_scope.cancel()


async def test_a_completed_job_counts_exactly_what_the_engine_recorded() -> None:
    async with watching() as watched:
        flow = chain("chain-ok", "Relay", "SyncRelay", "Collect")
        job = await watched.engine.start_job(flow, entries=[Entry("r0", "input", n) for n in range(20)],
                                             complete_when_idle=True)
        assert await job.wait(5) is JobStatus.COMPLETED
        await watched.settle()
        m = watched.aggregator.job(job.job_id)
        assert m is not None
        assert (m.status, m.flow_id, m.runtime_id) == ("completed", "chain-ok", job.runtime_id)
        assert abs((m.start_time - job.started_at).total_seconds()) < 0.01  # the job_start event's time
        assert abs((m.end_time - job.completed_at).total_seconds()) < 0.01
        assert m.duration == pytest.approx((job.completed_at - job.started_at).total_seconds(), abs=0.01)
        history = job.execution_history
        assert m.totals.activations == len(history) and m.totals.retries == 0 and m.totals.errors == 0
        assert m.totals.slot_calls == len(watched.events_of(job, "slot_call")) == 60  # 20 items x 3 routines
        assert m.totals.events_emitted == len(watched.events_of(job, "event_emit")) == 40
        assert m.events_seen == job.last_seq and m.events_lost == 0
        for rid, r in m.routines.items():
            mine = [h.duration for h in history if h.routine_id == rid]
            assert r.execution_count == job.routine_states[rid].execution_count == len(mine)
            assert r.error_count == 0 and r.active == 0 and r.status == "idle"
            assert r.total_duration == pytest.approx(sum(mine))
            assert (r.min_duration, r.max_duration) == (min(mine), max(mine))
            nearest_rank = sorted(mine)[math.ceil(0.95 * len(mine)) - 1]
            assert r.p95_duration == pytest.approx(nearest_rank, rel=0.05), (rid, sorted(mine))
            assert r.last_execution is not None
        assert [(s.routine_id, s.slot, s.unconsumed, s.received) for s in m.slots] == [
            ("r0", "input", 0, 20), ("r1", "input", 0, 20), ("r2", "input", 0, 20)]
        assert m.errors == []


async def test_retries_and_failures_are_counted_as_the_error_strategy_decided() -> None:
    async with watching() as watched:
        retry = ErrorHandler(strategy="retry", max_retries=3, retry_delay=0.001)
        flow = Flow(
            flow_id="retry",
            routines={
                "flaky": RoutineSpec("Flaky", config={"failures": 2}, error_handler=retry),
                "sink": RoutineSpec("Collect"),
            },
            connections=[Connection("flaky.output", "sink.input")],
        )
        job = await watched.engine.start_job(flow, entries=[Entry("flaky", "input", 1)], complete_when_idle=True)
        assert await job.wait(5) is JobStatus.COMPLETED
        failing = Flow(flow_id="stop", routines={"boom": RoutineSpec("Boom")})
        failed = await watched.engine.start_job(failing, entries=[Entry("boom", "input", 1)], complete_when_idle=True)
        assert await failed.wait(5) is JobStatus.FAILED
        await watched.settle()

        m = watched.aggregator.job(job.job_id)
        assert m is not None and m.status == "completed"
        flaky = m.routines["flaky"]
        assert (flaky.execution_count, flaky.error_count, flaky.retry_count) == (3, 2, 2)
        assert flaky.execution_count == job.routine_states["flaky"].execution_count
        assert flaky.error_count == job.routine_states["flaky"].error_count
        assert flaky.status == "idle"  # it recovered
        assert (m.totals.activations, m.totals.retries, m.totals.errors) == (2, 2, 2)  # flaky once, sink once
        assert [(e.routine_id, e.type, e.message, e.attempt, e.status) for e in m.errors] == [
            ("flaky", "ValueError", "flaky failure 1", 1, "retrying"),
            ("flaky", "ValueError", "flaky failure 2", 2, "retrying"),
        ]

        f = watched.aggregator.job(failed.job_id)
        assert f is not None and f.status == "failed"
        assert f.routines["boom"].status == "failed" and f.routines["boom"].error_count == 1
        assert [(e.routine_id, e.type, e.status) for e in f.errors] == [("boom", "RuntimeError", "failed")]
        assert f.errors[0].message == failed.errors[0].message


async def test_a_cancelled_job_ends_cancelled_with_its_reason_and_nothing_active() -> None:
    async with watching() as watched:
        flow = chain("chain-cancel", "Slow", "Collect", configs={"r0": {"delay": 10}})
        job = await watched.engine.start_job(flow, entries=[Entry("r0", "input", 1)])
        with anyio.fail_after(5):
            while job.routine_states["r0"].status != "running":
                await anyio.sleep(0.005)
        await watched.settle()
        live = watched.aggregator.job(job.job_id)
        assert live is not None and live.status == "running" and live.routines["r0"].status == "running"
        assert live.routines["r0"].active == 1 and live.end_time is None and live.duration is not None
        job.cancel("operator said stop")
        await watched.settle()
        m = watched.aggregator.job(job.job_id)
        assert m is not None and m.status == "cancelled"
        assert m.end_time is not None and abs((m.end_time - job.completed_at).total_seconds()) < 0.01
        assert [(e.routine_id, e.type, e.message) for e in m.errors] == [(None, "cancelled", "operator said stop")]
        assert watched.aggregator.live_jobs() == []


async def test_queue_depth_is_what_waits_in_the_engine_queues() -> None:
    async with watching() as watched:
        flow = chain("chain-depth", "Slow", "Collect", configs={"r0": {"delay": 0.2}})
        job = await watched.engine.start_job(flow)
        for n in range(7):
            await job.post("r0", "input", n)
        with anyio.fail_after(5):
            while job.routine_states["r0"].status != "running":
                await anyio.sleep(0.005)
        job.pause("look")
        await watched.settle()
        m = watched.aggregator.job(job.job_id)
        assert m is not None and m.status == "paused"
        (engine_queue,) = job.queue_status("r0", "input")
        (slot,) = [s for s in m.slots if s.routine_id == "r0"]
        assert (slot.unconsumed, slot.capacity) == (engine_queue.unconsumed, engine_queue.capacity)
        assert slot.unconsumed == 6 and slot.received == 7 and slot.pressure == "low"
        assert slot.usage == pytest.approx(6 / 1000)
        assert m.routines["r0"].status == "paused" and m.routines["r1"].status == "pending"
        job.cancel()


async def test_a_flow_adds_up_its_jobs_and_a_restart_restores_it_from_what_was_stored() -> None:
    async with watching() as watched:
        ok = chain("chain-flow", "Relay", "Collect")
        jobs = []
        for n in range(3):
            job = await watched.engine.start_job(ok, entries=[Entry("r0", "input", n)], complete_when_idle=True)
            await job.wait(5)
            jobs.append(job)
        bad = chain("chain-flow", "Boom")
        failed = await watched.engine.start_job(bad, entries=[Entry("r0", "input", 0)], complete_when_idle=True)
        await failed.wait(5)
        await watched.settle()

        fm = watched.aggregator.flow("chain-flow")
        assert fm.total_jobs == 4 and fm.jobs_by_status == {"completed": 3, "failed": 1}
        assert fm.success_rate == pytest.approx(0.75)
        assert [r.job_id for r in fm.recent_jobs] == [failed.job_id, *(j.job_id for j in reversed(jobs))]
        assert fm.job_duration.count == 4
        assert fm.job_duration.max == pytest.approx(max(r.duration for r in fm.recent_jobs))
        r0 = fm.routines["r0"]
        assert r0.execution_count == 4 and r0.error_count == 1
        assert r0.duration.count == 4
        assert r0.duration.total == pytest.approx(
            sum(h.duration for j in [*jobs, failed] for h in j.execution_history if h.routine_id == "r0")
        )

        assert [job_id for job_id, _, _ in watched.stored] == [*(j.job_id for j in jobs), failed.job_id]
        fresh = MetricsAggregator(anyio_bus := watched.engine.bus)
        assert fresh.restore([blob for _, _, blob in watched.stored] + [b"not json"]) == 4
        restored = fresh.flow("chain-flow")
        fresh.close()
        assert msgspec.to_builtins(restored) == msgspec.to_builtins(fm)
        assert anyio_bus is watched.engine.bus


async def test_a_job_the_aggregator_joined_late_is_still_tracked_from_what_it_saw() -> None:
    async with watching() as watched:
        flow = chain("chain-late", "Relay", "Collect")
        job = await watched.engine.start_job(flow)
        late = MetricsAggregator(watched.engine.bus)
        async with anyio.create_task_group() as tg:
            tg.start_soon(late.run)
            await job.post("r0", "input", 1)
            with anyio.fail_after(5):
                while job.routine_states["r1"].execution_count < 1:
                    await anyio.sleep(0.005)
            job.complete()
            with anyio.fail_after(5):
                while late.job(job.job_id) is None or late.job(job.job_id).status != "completed":  # type: ignore[union-attr]
                    await anyio.sleep(0.005)
            m = late.job(job.job_id)
            assert m is not None and m.totals.slot_calls == 2 and m.routines["r0"].execution_count == 1
            assert m.start_time is not None and m.start_time > job.started_at  # from the first event it saw
            tg.cancel_scope.cancel()
        late.close()


async def test_a_batch_it_cannot_aggregate_is_logged_and_the_aggregator_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with watching() as watched:
        aggregator = watched.aggregator
        real_apply = aggregator.apply
        calls = 0

        def flaky_apply(batch: list[Any]) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("a bug")
            real_apply(batch)

        aggregator.apply = flaky_apply  # type: ignore[method-assign]
        flow = chain("chain-bug", "Relay", "Collect")
        job = await watched.engine.start_job(flow, entries=[Entry("r0", "input", 1)], complete_when_idle=True)
        await job.wait(5)
        second = await watched.engine.start_job(flow, entries=[Entry("r0", "input", 2)], complete_when_idle=True)
        await second.wait(5)
        with anyio.fail_after(5):
            while aggregator.job(second.job_id) is None or aggregator.job(second.job_id).end_time is None:  # type: ignore[union-attr]
                await anyio.sleep(0.005)
        assert aggregator.failed_batches == 1
        assert "could not be aggregated" in caplog.text


async def test_a_cluster_node_counts_its_own_jobs_and_folds_in_the_others_stored_ones() -> None:
    """Issue 17: a node's aggregator ignores relayed events of remote jobs (their owners count
    them), skips its own stored jobs when it folds the cluster's in (it counted them from its bus),
    and orders a flow's recent jobs by their end, whenever another node's job is folded in."""
    async with watching() as watched:
        ok = chain("chain-cluster", "Relay", "Collect")
        jobs = []
        for n in range(3):
            job = await watched.engine.start_job(ok, entries=[Entry("r0", "input", n)], complete_when_idle=True)
            await job.wait(5)
            jobs.append(job)
        await watched.settle()
        blobs = [blob for _, _, blob in watched.stored]
        figures = watched.aggregator.flow("chain-cluster")

    def as_node(blob: bytes, node: str) -> bytes:
        finished = msgspec.json.decode(blob, type=FinishedJob)
        return msgspec.json.encode(msgspec.structs.replace(finished, node=node))

    async with Engine(registry=make_registry()) as engine:
        node = MetricsAggregator(engine.bus, node_id="me", is_remote=lambda job_id: job_id.startswith("remote-"))
        assert node.restore([as_node(b, "me") for b in blobs]) == 0  # its own: counted already
        assert node.restore([as_node(b, "them") for b in reversed(blobs)]) == 3  # folded late, newest first
        folded = node.flow("chain-cluster")
        assert folded.total_jobs == 3 and folded.jobs_by_status == {"completed": 3}
        assert [r.job_id for r in folded.recent_jobs] == [r.job_id for r in figures.recent_jobs]
        assert msgspec.to_builtins(folded.routines) == msgspec.to_builtins(figures.routines)
        # a remote job's relayed events are not counted; live figures the others publish are added
        node.apply([Event(1, "job_start", "remote-1", "chain-cluster", None, utc_now(), {"runtime_id": "default"})])
        assert node.live_jobs() == [] and node.live_changes == 0
        node.set_others(Counter({("chain-cluster", "running"): 2}), {"default": (2, 1)})
        assert node.flow("chain-cluster").jobs_by_status == {"completed": 3, "running": 2}
        assert node.jobs_by_flow_and_status()[("chain-cluster", "running")] == 2
        (runtime,) = node.runtimes({"default": (4, True)})
        assert runtime.active_jobs == 2 and runtime.thread_activations == 1 and runtime.threads_busy == 1
        node.close()

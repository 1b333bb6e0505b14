"""Runtimes: the shared thread pool, private pools, info, and shutdown."""

from __future__ import annotations

import gc
import threading
import time
import weakref

import anyio
import pytest

from routilux.engine import Engine, EngineSettings, Entry, Flow, JobStatus, Routine, RoutineSpec
from routilux.engine.errors import DuplicateRuntime, RuntimeNotFound, RuntimeShutdown
from tests.support.routines import chain, make_registry


class Hold(Routine):
    """Sync: holds a worker thread for ``state['hold']`` seconds; runs up to 50 at once."""

    slots = ["input"]
    max_concurrency = 50

    def logic(self, ctx, input):
        with ctx.job.shared_data.setdefault("lock", threading.Lock()):
            ctx.state["running"] = ctx.state.get("running", 0) + 1
            ctx.state["peak"] = max(ctx.state.get("peak", 0), ctx.state["running"])
        time.sleep(0.1)
        with ctx.state["lock"]:
            ctx.state["running"] -= 1


def registry():
    reg = make_registry()
    reg.register(Hold)
    return reg


HOLD = Flow(flow_id="hold", routines={"h": RoutineSpec("Hold")})


async def peak_threads(engine: Engine, runtime_id: str | None, jobs: int) -> int:
    started = [
        await engine.start_job(HOLD, runtime_id=runtime_id, entries=[Entry("h", "input", 1)], complete_when_idle=True)
        for _ in range(jobs)
    ]
    await anyio.sleep(0.03)
    busy = engine.get_runtime(runtime_id).info().busy_threads
    for job in started:
        assert await job.wait(5) is JobStatus.COMPLETED
    return busy


async def test_default_runtime_exists_and_shares_the_engine_pool() -> None:
    async with Engine(registry=registry(), settings=EngineSettings(shared_pool_size=3)) as engine:
        info = engine.get_runtime().info()
        assert (info.runtime_id, info.is_default, info.thread_pool_size, info.shares_pool) == ("default", True, 0, True)
        assert info.total_threads == 3
        other = await engine.create_runtime("shared-too", 0)
        assert other.limiter is engine.get_runtime().limiter
        assert await peak_threads(engine, None, 6) == 3  # six jobs, three threads at a time


async def test_a_runtime_with_its_own_pool_is_limited_to_it_and_isolated() -> None:
    async with Engine(registry=registry(), settings=EngineSettings(shared_pool_size=3)) as engine:
        await engine.create_runtime("isolated", thread_pool_size=2)
        assert engine.get_runtime("isolated").info().total_threads == 2
        assert await peak_threads(engine, "isolated", 5) == 2
        assert engine.get_runtime().info().busy_threads == 0


async def test_info_counts_active_jobs() -> None:
    async with Engine(registry=make_registry()) as engine:
        job = await engine.start_job(chain("f", "Relay"))
        assert engine.get_runtime().info().active_job_count == 1
        job.cancel()
        assert engine.get_runtime().info().active_job_count == 0


async def test_shutdown_cancels_the_runtimes_jobs_cleanly_and_refuses_new_ones() -> None:
    async with Engine(registry=make_registry()) as engine:
        runtime = await engine.create_runtime("batch", 4)
        slow = chain("s", "Slow", "Collect", configs={"r0": {"delay": 10}})
        job = await engine.start_job(slow, runtime_id="batch", entries=[Entry("r0", "input", 1)])
        other = await engine.start_job(slow, entries=[Entry("r0", "input", 1)])
        await anyio.sleep(0.02)
        await engine.shutdown_runtime("batch")
        assert job.status is JobStatus.CANCELLED
        assert job.error["message"] == "runtime shut down"
        assert runtime.info().is_shutdown
        assert other.status is JobStatus.RUNNING  # another runtime's job is untouched
        with pytest.raises(RuntimeShutdown):
            await runtime.start_job(engine.compile(slow))
        with pytest.raises(RuntimeNotFound):
            engine.get_runtime("batch")


async def test_leaving_the_engine_cancels_everything_still_running() -> None:
    async with Engine(registry=make_registry()) as engine:
        job = await engine.start_job(chain("s", "Slow"), entries=[Entry("r0", "input", 1)])
    assert job.status is JobStatus.CANCELLED


async def test_runtime_ids_sizes_and_duplicates_are_checked() -> None:
    async with Engine(registry=make_registry()) as engine:
        with pytest.raises(DuplicateRuntime):
            await engine.create_runtime("default")
        with pytest.raises(ValueError, match="between 0 and 1000"):
            await engine.create_runtime("big", 1001)
        with pytest.raises(ValueError, match="runtime_id"):
            await engine.create_runtime("../etc")
        with pytest.raises(RuntimeNotFound, match="Known runtimes: default"):
            await engine.start_job(chain("f", "Relay"), runtime_id="production")
        with pytest.raises(ValueError, match="default runtime"):
            await engine.shutdown_runtime("default")


async def test_a_new_default_runtime_takes_over() -> None:
    async with Engine(registry=make_registry()) as engine:
        await engine.create_runtime("production", 8, is_default=True)
        assert engine.default_runtime_id == "production"
        assert [r.is_default for r in engine.runtimes.values()] == [False, True]
        job = await engine.start_job(chain("f", "Relay"))
        assert job.runtime_id == "production"


async def test_job_timeout_bounds_are_enforced() -> None:
    async with Engine(registry=make_registry()) as engine:
        for bad in (0, -1, 86401):
            with pytest.raises(ValueError, match="timeout"):
                await engine.start_job(chain("f", "Relay"), timeout=bad)


async def test_finished_jobs_can_be_forgotten() -> None:
    async with Engine(registry=make_registry()) as engine:
        job = await engine.start_job(chain("f", "Relay"), complete_when_idle=True)
        assert engine.get_job(job.job_id) is job
        engine.forget_job(job.job_id)
        assert engine.get_job(job.job_id) is None


async def test_a_forgotten_job_is_freed_without_the_garbage_collector() -> None:
    """Its routine runs point back at it; the engine lets go of them as it forgets the job, so
    dropping the last reference frees the job at once (at hundreds of jobs a second, waiting for
    the collector's full passes meant memory climbing for minutes, then pauses of seconds)."""
    async with Engine(registry=make_registry()) as engine:
        flow = chain("f", "Relay", "SyncRelay", "Collect")
        await (await engine.start_job(flow, complete_when_idle=True)).wait(5)  # plan and pools warmed up
        job = await engine.start_job(flow, entries=[Entry("r0", "input", {"n": 1})], complete_when_idle=True)
        assert await job.wait(5) is JobStatus.COMPLETED
        await anyio.sleep(0.05)  # the activations' tasks have returned
        gone = weakref.ref(job)
        gc.disable()
        try:
            engine.forget_job(job.job_id)
            assert [(q.routine_id, q.unconsumed) for q in job.queue_status()] == [("r0", 0), ("r1", 0), ("r2", 0)]
            del job
            assert gone() is None
        finally:
            gc.enable()


async def test_a_live_job_is_not_forgotten_nor_released() -> None:
    async with Engine(registry=make_registry()) as engine:
        job = await engine.start_job(chain("f", "Relay", "Collect"))
        engine.forget_job(job.job_id)
        job.release()
        assert engine.get_job(job.job_id) is job
        await job.post("r0", "input", {"n": 1})  # it still runs
        with anyio.fail_after(5):
            while job.state()["routine_states"]["r1"]["execution_count"] < 1:
                await anyio.sleep(0.01)

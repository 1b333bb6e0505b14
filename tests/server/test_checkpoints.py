"""The checkpointer: which jobs it keeps, and how a job that cannot be checkpointed is told.

A job is durable as its flow says unless its start chose otherwise. A job holding a value no
checkpoint can keep (not JSON) is reported on the job itself — a ``log`` event at level
``error`` naming the value, and :meth:`Checkpointer.checkpoint_error` — once per reason, while
it keeps running; the next good checkpoint clears it and says so."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import msgspec
import pytest

from routilux.engine import Engine, Job
from routilux.engine.errors import IllegalTransition
from routilux.server.checkpoints import Checkpointer
from routilux.store import MemoryStore
from tests.support.routines import chain, make_registry

DEADLINE = 10.0


@asynccontextmanager
async def checkpointing() -> AsyncIterator[tuple[Engine, Checkpointer, MemoryStore]]:
    store = MemoryStore()
    with anyio.fail_after(DEADLINE):
        async with store, anyio.create_task_group() as tg:
            async with Engine(registry=make_registry()) as engine:
                checkpointer = Checkpointer(engine, store, interval=3600)
                tg.start_soon(checkpointer.run)
                yield engine, checkpointer, store


def logs_of(engine: Engine, job: Job, sub: object) -> list[dict]:
    found = []
    while (item := sub.receive_nowait()) is not None:  # type: ignore[attr-defined]
        if item.type == "log" and item.job_id == job.job_id:
            found.append(item.data)
    return found


async def test_an_unencodable_job_is_told_once_keeps_running_and_is_told_when_it_recovers() -> None:
    async with checkpointing() as (engine, checkpointer, store):
        sub = engine.bus.subscribe()
        job = await engine.start_job(chain("f", "Relay", "Collect"))
        assert await checkpointer.save([job], force=True) == 1
        job.shared_data["lock"] = threading.Lock()

        assert await checkpointer.save([job], force=True) == 0
        assert await checkpointer.save([job], force=True) == 0  # the same reason is not told twice
        error = checkpointer.checkpoint_error(job.job_id)
        assert error is not None and "shared_data['lock']" in error
        told = logs_of(engine, job, sub)
        assert len(told) == 1 and told[0]["level"] == "error"
        assert told[0]["fields"]["checkpoint_error"] == error and error in told[0]["message"]
        assert not job.is_terminal  # it keeps running
        stale = await store.get_checkpoint(job.job_id)
        assert stale is not None  # the last good checkpoint stays

        del job.shared_data["lock"]
        assert await checkpointer.save([job], force=True) == 1
        assert checkpointer.checkpoint_error(job.job_id) is None
        told = logs_of(engine, job, sub)
        assert [(t["level"], t["fields"]["checkpoint_error"]) for t in told] == [("info", None)]
        job.cancel()


async def test_a_starts_choice_of_durability_beats_the_flows_and_is_kept_in_the_checkpoint() -> None:
    async with checkpointing() as (engine, checkpointer, store):
        flow = chain("f", "Relay", "Collect")
        fleeting = msgspec.structs.replace(flow, execution=msgspec.structs.replace(flow.execution, durable=False))
        opted_in = await engine.start_job(fleeting)
        opted_out = await engine.start_job(flow)
        default = await engine.start_job(fleeting)
        checkpointer.choose(opted_in, True)
        checkpointer.choose(opted_out, False)
        assert [checkpointer.is_durable(j) for j in (opted_in, opted_out, default)] == [True, False, False]
        assert await checkpointer.save([opted_in, opted_out, default]) == 1
        saved = await store.get_checkpoint(opted_in.job_id)
        assert saved is not None and msgspec.json.decode(saved.data)["durable"] is True
        assert await store.get_checkpoint(opted_out.job_id) is None


async def test_a_post_that_loses_the_race_with_its_jobs_end_leaves_nothing_behind() -> None:
    """A durable job's posts are numbered per job; once the job ended and was forgotten, a late
    post is refused and keeps nothing of the job (one per ended job would add up)."""
    async with checkpointing() as (engine, checkpointer, _store):
        posts = checkpointer.posts
        job = await engine.start_job(chain("f", "Relay", "Collect"))
        await posts.deliver(job, "r0", "input", {"n": 1}, timeout=5)
        assert posts.delivered(job.job_id) == 1 and posts.tracked_jobs == 1
        job.cancel()
        while posts.tracked_jobs:  # the checkpointer forgets the job at its job_end
            await anyio.sleep(0.01)
        with pytest.raises(IllegalTransition):
            await posts.deliver(job, "r0", "input", {"n": 2}, timeout=5)
        assert posts.tracked_jobs == 0

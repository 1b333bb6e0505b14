"""The job pruner in process (a real engine, recorder and memory store; no server): what it
drops, when it wakes up, that a store failure does not stop it, and that it ends with the
recorder so the application's task group never waits on it. The same rules over HTTP, with the
settings, are in test_limits.py; the store's half (``prune_jobs``) in tests/store."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio
import pytest

from routilux.engine import Engine, Entry, Job, JobStatus
from routilux.server.eventlog import EventHistory, Recorder
from routilux.server.retention import JobPruner
from routilux.store import JobQuery, MemoryStore, StoreError
from tests.support.routines import chain, make_registry

DEADLINE = 10.0  # every wait below is bounded by this


@dataclass
class Rig:
    engine: Engine
    store: MemoryStore
    history: EventHistory
    recorder: Recorder
    pruner: JobPruner

    async def finished_job(self) -> Job:
        job = await self.engine.start_job(
            chain("f", "Relay", "Collect"), entries=[Entry("r0", "input", {"data": 1})], complete_when_idle=True
        )
        assert await job.wait(5) is JobStatus.COMPLETED
        return job

    async def stored_ids(self) -> set[str]:
        await self.store.flush()
        records, _ = await self.store.list_jobs(JobQuery(limit=1000))
        return {r.job_id for r in records}

    async def until(self, condition: Callable[[], Any], what: str) -> None:
        with anyio.fail_after(DEADLINE):
            while not await condition():
                await anyio.sleep(0.01)


@asynccontextmanager
async def rig(store: MemoryStore | None = None, **pruner_options: Any) -> AsyncIterator[Rig]:
    """Wired as the app's lifespan wires it: recorder and pruner in one task group, the engine
    inside it; leaving the engine must let the whole group finish."""
    store = store if store is not None else MemoryStore()
    with anyio.fail_after(DEADLINE):
        async with store, anyio.create_task_group() as tg:
            async with Engine(registry=make_registry()) as engine:
                history = EventHistory()
                options = {"keep": 2, "min_gap": 0.01, "interval": 3600, **pruner_options}
                pruner = JobPruner(store, engine, history, **options)
                recorder = Recorder(engine, store, history, on_job_end=pruner.job_ended)
                tg.start_soon(recorder.run)
                tg.start_soon(pruner.run, recorder.finished)
                yield Rig(engine, store, history, recorder, pruner)
            # the engine stopped: the recorder finishes, the pruner with it, the group exits


async def test_ended_jobs_wake_the_pruner_which_drops_the_oldest_everywhere() -> None:
    async with rig(keep=2) as r:
        assert r.pruner.wake_after == 1  # a tenth of keep, at least one
        idle = await r.engine.start_job(chain("g", "Relay", "Collect"))  # unfinished: never pruned
        jobs = [await r.finished_job() for _ in range(5)]
        newest = {j.job_id for j in jobs[-2:]}

        async def pruned() -> bool:
            return await r.stored_ids() == newest | {idle.job_id}

        await r.until(pruned, "the three oldest finished jobs leave the store")  # not the hour-long interval
        for job in jobs[:3]:
            assert r.engine.get_job(job.job_id) is None, "still in the engine's memory"
            assert r.history.last_seq(job.job_id) is None, "still in the replay history"
            assert await r.store.events_since(job.job_id) == []
        for job in jobs[3:]:
            assert r.engine.get_job(job.job_id) is job and r.history.last_seq(job.job_id) is not None
        assert r.engine.get_job(idle.job_id) is idle
        assert r.pruner.pruned == 3


async def test_a_pass_deletes_in_batches_until_nothing_is_left_over() -> None:
    async with rig(keep=1, batch=2) as r:
        r.pruner.wake_after = 10**9  # only the explicit pass below
        jobs = [await r.finished_job() for _ in range(6)]
        await r.store.flush()
        await r.pruner.prune()  # whatever an earlier pass left: 3 batches of 2 at most
        assert await r.stored_ids() == {jobs[-1].job_id}


async def test_the_age_rule_uses_the_clock_it_is_given() -> None:
    now = [datetime.now().astimezone()]
    async with rig(keep=None, max_age_seconds=60, interval=None, now=lambda: now[0]) as r:
        assert r.pruner.interval == 15  # a quarter of the age: the rule is kept within 15 s
        r.pruner.wake_after = 10**9
        jobs = [await r.finished_job() for _ in range(2)]
        await r.pruner.prune()
        assert await r.stored_ids() == {j.job_id for j in jobs}  # a minute has not passed
        now[0] = now[0].replace(year=now[0].year + 1)
        assert await r.pruner.prune() == 2
        assert await r.stored_ids() == set()


class FailingOnce(MemoryStore):
    """A store whose first prune fails, as a disk error would."""

    def __init__(self) -> None:
        super().__init__()
        self.prunes = 0

    async def prune_jobs(self, **kwargs: Any) -> list[str]:
        self.prunes += 1
        if self.prunes == 1:
            raise StoreError("disk I/O error", location="test")
        return await super().prune_jobs(**kwargs)


async def test_a_failing_store_is_logged_and_the_next_pass_prunes(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, "routilux.server")
    store = FailingOnce()
    async with rig(store, keep=1) as r:  # the start-up pass fails
        jobs = [await r.finished_job() for _ in range(3)]

        async def pruned() -> bool:
            return await r.stored_ids() == {jobs[-1].job_id}

        await r.until(pruned, "a later pass prunes")
    assert store.prunes >= 2
    assert "pruning old jobs failed" in caplog.text


async def test_without_rules_nothing_is_pruned_and_the_pruner_still_ends_with_the_recorder() -> None:
    async with rig(keep=None) as r:
        jobs = [await r.finished_job() for _ in range(3)]
        assert await r.pruner.prune() == 0
        assert await r.stored_ids() == {j.job_id for j in jobs}
    assert r.recorder.finished.is_set()  # and rig() returned: the task group did not hang

"""The checkpointer in process (a real engine, recorder, checkpointer and job control on a memory
store; no server): it follows a durable job only while the job lives, so what it holds is
bounded by the live jobs, however many come and go. (At 300 short jobs a second, every job that
ended before its start was committed used to leave an entry behind: a soak saw memory grow by
one job id per job; see bench/soak.py.)"""

from __future__ import annotations

import anyio

from routilux.engine import Engine, Entry, JobStatus
from routilux.server.checkpoints import Checkpointer
from routilux.server.control import JobControl
from routilux.server.eventlog import Recorder
from routilux.store import CheckpointRecord, JobRecord, MemoryStore
from tests.support.routines import chain, make_registry


class SlowCommits(MemoryStore):
    """A commit takes a while, as on a disk: a short job ends before its start is saved."""

    async def put_job(self, record: JobRecord, *, checkpoint: CheckpointRecord | None = None) -> None:
        await anyio.sleep(0.05)
        await super().put_job(record, checkpoint=checkpoint)


async def test_nothing_is_kept_of_ended_jobs_even_those_that_ended_before_their_start_was_saved() -> None:
    store = SlowCommits()
    with anyio.fail_after(30):
        async with store, anyio.create_task_group() as tg:
            async with Engine(registry=make_registry()) as engine:
                recorder = Recorder(engine, store)
                checkpointer = Checkpointer(engine, store, interval=0.05, events_queued=recorder.caught_up)
                control = JobControl(engine, store, checkpointer=checkpointer)
                tg.start_soon(recorder.run)
                tg.start_soon(checkpointer.run)
                tg.start_soon(checkpointer.keep)
                plan = engine.compile(chain("short", "Relay", "Collect"))
                idle = await control.start(plan, runtime_id=None, entries=(), timeout=None,
                                           complete_when_idle=False)  # lives on: followed
                jobs = []

                async def start_one() -> None:
                    jobs.append(await control.start(plan, runtime_id=None, entries=[Entry("r0", "input", {"n": 1})],
                                                    timeout=None, complete_when_idle=True))

                async with anyio.create_task_group() as starts:  # concurrent starts share commits
                    for _ in range(200):
                        starts.start_soon(start_one)
                for job in jobs:
                    assert await job.wait(5) is JobStatus.COMPLETED
                while checkpointer.pending or recorder.pending:
                    await anyio.sleep(0.01)
                await anyio.sleep(0.2)  # a few rounds of keep()
                assert set(checkpointer._live) == set(checkpointer._saved) == {idle.job_id}
                assert checkpointer._activations == checkpointer._unencodable == checkpointer._chosen == {}
                idle.cancel()
                while checkpointer.pending:
                    await anyio.sleep(0.01)
                await anyio.sleep(0)
                assert checkpointer._live == checkpointer._saved == {}

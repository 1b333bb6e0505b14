"""Resuming at start-up, in process (``routilux.server.resume``): however many jobs come back, the
store is read a fixed number of times, each job gets its own posts and numbers its events after the
last one recorded, an unchanged job's checkpoint is not written again, and a job that cannot come
back is failed with a reason while the others resume."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import msgspec

from routilux.engine import Job, JobStatus
from routilux.server.lifespan import open_services
from routilux.server.services import Services
from routilux.server.settings import Settings
from routilux.store import SQLiteStore, StoredEvent, StoredPost
from tests.support.routines import chain, make_registry

JOBS = 30


class CountingStore(SQLiteStore):
    """A SQLite store that counts the reads a restart makes of each job's events and posts."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.reads: dict[str, int] = {}

    def _count(self, name: str) -> None:
        self.reads[name] = self.reads.get(name, 0) + 1

    async def events_since(self, job_id: str, since: int = 0, limit: int = 1000) -> list[StoredEvent]:
        self._count("events_since")
        return await super().events_since(job_id, since, limit)

    async def last_event_seqs(self, job_ids: Collection[str]) -> dict[str, int]:
        self._count("last_event_seqs")
        return await super().last_event_seqs(job_ids)

    async def posts_after(self, job_id: str, n: int) -> list[StoredPost]:
        self._count("posts_after")
        return await super().posts_after(job_id, n)

    async def posts_after_many(self, after: Mapping[str, int]) -> dict[str, list[StoredPost]]:
        self._count("posts_after_many")
        return await super().posts_after_many(after)


async def _no_forwarding(request: Any) -> Any:
    raise AssertionError("a single server forwards nothing")


@asynccontextmanager
async def server(store: SQLiteStore) -> AsyncIterator[Services]:
    """The services of one server run on ``store``; leaving is a graceful stop."""
    async with open_services(Settings(db=store.location), serve_request=_no_forwarding,
                             registry=make_registry(), store=store) as services:
        yield services


async def until(condition: Callable[[], bool], what: str) -> None:
    with anyio.fail_after(10):
        while not condition():
            await anyio.sleep(0.01)
    assert condition(), what


async def start_idle(services: Services, flow_id: str, posts: list[Any]) -> Job:
    plan = services.catalog.get(flow_id).runnable_plan()
    job = await services.control.start(plan, runtime_id=None, entries=[], timeout=None, complete_when_idle=False)
    for value in posts:
        await services.control.post(job, "r0", "input", {"data": value}, timeout=5)
    await until(lambda: job.status is JobStatus.IDLE, f"job {job.job_id} idle")
    return job


def kept(job: Job) -> list[Any]:
    return [item for batch in job.shared_data.get("batches", {}).get("r0", []) for item in batch]


def post_data(value: Any) -> bytes:
    return msgspec.json.encode({"routine_id": "r0", "slot_name": "input", "data": {"data": value}})


async def test_many_jobs_resume_with_a_fixed_number_of_reads_and_no_checkpoint_written(tmp_path: Path) -> None:
    async with server(CountingStore(tmp_path / "r.db")) as services:
        await services.catalog.create(chain("keep", "Collect"))
        jobs = [await start_idle(services, "keep", [i]) for i in range(JOBS)]
    before = {job.job_id: job for job in jobs}
    store = CountingStore(tmp_path / "r.db")
    async with server(store) as services:
        resumed = {job_id: services.engine.get_job(job_id) for job_id in before}
        assert all(job is not None and job.status is JobStatus.IDLE for job in resumed.values())
        assert {job_id: kept(job) for job_id, job in resumed.items() if job} == {
            job_id: kept(job) for job_id, job in before.items()}
        assert store.reads == {"last_event_seqs": 1, "posts_after_many": 1}
        checkpointer = services.control.checkpointer
        assert checkpointer is not None
        # the stored checkpoints are the jobs as they are: nothing to write
        assert await checkpointer.save(resumed.values()) == 0  # type: ignore[arg-type]
        one = resumed[jobs[0].job_id]
        assert one is not None
        await services.control.post(one, "r0", "input", {"data": "more"}, timeout=5)
        await until(lambda: one.status is JobStatus.IDLE, "idle again")
        assert await checkpointer.save(resumed.values()) == 1  # type: ignore[arg-type]  # once it changed


async def test_each_job_replays_its_own_posts_and_numbers_after_its_last_recorded_event(tmp_path: Path) -> None:
    async with server(SQLiteStore(str(tmp_path / "r.db"))) as services:
        await services.catalog.create(chain("keep", "Collect"))
        a = await start_idle(services, "keep", ["a1"])
        b = await start_idle(services, "keep", ["b1"])
        c = await start_idle(services, "keep", [])
        seqs = {job.job_id: job._seq for job in (a, b, c)}
    # What a crash leaves: posts acknowledged after the checkpoints, and events published after
    # them (recorded, and perhaps seen by clients).
    store = SQLiteStore(str(tmp_path / "r.db"))
    async with store:
        for job_id, values in ((a.job_id, ["a2", "a3"]), (b.job_id, ["b2"])):
            for n, value in enumerate(values, start=2):
                await store.append_post(StoredPost(job_id, n, post_data(value)))
        later = [StoredEvent(b.job_id, seqs[b.job_id] + k, "log", b"{}") for k in (1, 2, 3)]
        store.record_events(later)
    async with server(SQLiteStore(str(tmp_path / "r.db"))) as services:
        jobs = {job_id: services.engine.get_job(job_id) for job_id in seqs}
        for job in jobs.values():
            assert job is not None
            await until(lambda job=job: job.status is JobStatus.IDLE, f"job {job.job_id} idle")  # type: ignore[misc]
        assert [kept(job) for job in jobs.values() if job] == [["a1", "a2", "a3"], ["b1", "b2"], []]
        await services.recorder.caught_up(services.engine.bus.published)
        await services.store.flush()
        for job_id, last in ((a.job_id, seqs[a.job_id]), (b.job_id, seqs[b.job_id] + 3), (c.job_id, seqs[c.job_id])):
            events = await services.store.events_since(job_id, last, 1)
            assert events[0].type == "job_resume" and events[0].seq == last + 1
            assert msgspec.json.decode(events[0].payload)["data"]["reason"] == "restart"


async def test_a_job_that_cannot_come_back_fails_with_its_reason_and_the_others_resume(tmp_path: Path) -> None:
    async with server(SQLiteStore(str(tmp_path / "r.db"))) as services:
        await services.catalog.create(chain("keep", "Collect"))
        await services.catalog.create(chain("going", "Collect"))
        stays = await start_idle(services, "keep", [1])
        orphan = await start_idle(services, "going", [2])
    store = SQLiteStore(str(tmp_path / "r.db"))
    async with store:
        assert await store.delete_flow("going")
    async with server(SQLiteStore(str(tmp_path / "r.db"))) as services:
        assert services.engine.get_job(stays.job_id) is not None
        assert services.engine.get_job(orphan.job_id) is None
        record = await services.store.get_job(orphan.job_id)
        assert record is not None and record.status == "failed" and record.error is not None
        assert record.error["message"] == ("interrupted: server restarted, and the job could not resume: "
                                           "its flow 'going' no longer exists")
        assert await services.store.get_checkpoint(orphan.job_id) is None
        assert (await services.store.get_job(stays.job_id)).status == "idle"  # type: ignore[union-attr]

"""Job listings read this server's jobs as they are now, and the store for the rest.

``JobLocator.listing`` merges the jobs in memory (filtered by their current status) with a page
of the store (those jobs left out), so every page and total must equal what one sorted list of
"the jobs as they are now" would give. These tests build such a world — jobs in memory whose
stored status lags, jobs only in the store — and compare every page with that list.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast

import msgspec
import pytest

from routilux.engine import Engine
from routilux.server.jobs import JobLocator, listing_key
from routilux.store import JobQuery, MemoryStore
from tests.support.stores import T0, job

STATUSES = ("pending", "running", "idle", "paused", "completed", "failed", "cancelled")


@dataclass
class LiveJob:
    """What the listing reads of a job in memory (an engine Job has these too)."""

    job_id: str
    flow_id: str
    runtime_id: str
    status: str
    created_at: Any


@dataclass
class FakeEngine:
    jobs: dict[str, LiveJob] = field(default_factory=dict)

    def get_job(self, job_id: str) -> LiveJob | None:
        return self.jobs.get(job_id)


async def world(seed: int, *, clustered: bool) -> tuple[JobLocator, dict[str, str]]:
    """Jobs in memory (stored with a status that may lag) and jobs only in the store; returns
    the locator and every job's status as it is now."""
    rng = random.Random(seed)
    store = MemoryStore()
    await store.open()
    engine = FakeEngine()
    now: dict[str, str] = {}
    for n in range(rng.randint(0, 40)):
        job_id = f"j{n:03d}"
        at = rng.choice((0, 1, 2, 3, 5, 8))  # ties in created_at: the job id decides
        flow_id = rng.choice(("fa", "fb"))
        current = rng.choice(STATUSES)
        in_memory = rng.random() < 0.6
        if in_memory:
            stored = current if current in ("completed", "failed", "cancelled") and rng.random() < 0.5 else (
                rng.choice(("pending", "running", "idle", "paused")))  # lagging: the end not yet written
            engine.jobs[job_id] = LiveJob(job_id, flow_id, "default", current, T0 + timedelta(seconds=at))
        else:
            if not clustered:
                current = rng.choice(("completed", "failed", "cancelled"))  # one server: live jobs are in memory
            stored = current
        await store.put_job(job(job_id, at, flow_id=flow_id, status=stored))
        now[job_id] = current
    locator = JobLocator(cast(Engine, engine), store, membership=cast(Any, object()) if clustered else None)
    return locator, now


def expected(store_jobs: list[Any], now: dict[str, str], query: JobQuery) -> list[str]:
    matching = [j for j in store_jobs if (query.flow_id is None or j.flow_id == query.flow_id)
                and (query.status is None or now[j.job_id] == query.status)]
    return [j.job_id for j in sorted(matching, key=listing_key)]


@pytest.mark.parametrize("clustered", [False, True])
@pytest.mark.parametrize("seed", range(12))
async def test_every_page_and_total_is_that_of_the_jobs_as_they_are_now(seed: int, clustered: bool) -> None:
    locator, now = await world(seed, clustered=clustered)
    everything, _ = await locator.store.list_jobs(JobQuery(limit=1000))
    for status in (None, *STATUSES):
        for flow_id in (None, "fa"):
            query = JobQuery(status=status, flow_id=flow_id, with_state=False)
            want = expected(everything, now, query)
            for limit in (1, 3, 100):
                for offset in range(0, len(want) + 3):
                    page, total = await locator.listing(msgspec.structs.replace(query, limit=limit, offset=offset))
                    assert [j.job_id for j in page] == want[offset:offset + limit], (status, flow_id, offset, limit)
                    assert total == len(want)
                    for listed in page:  # a job in memory is shown as it is now
                        assert listed.status == now[listed.job_id]


async def test_a_live_status_on_a_single_server_is_answered_from_memory_alone() -> None:
    locator, now = await world(3, clustered=False)
    await locator.store.put_job(job("ghost", status="running"))  # a stale record nobody runs
    page, total = await locator.listing(JobQuery(status="running"))
    assert "ghost" not in [j.job_id for j in page]
    assert total == sum(1 for s in now.values() if s == "running")

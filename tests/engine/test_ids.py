"""Job ids: UUID version 7 as 32 hex digits, ordered by the millisecond they were made in (so a
store's B-trees grow at one edge; see routilux.engine.ids), and unique."""

from __future__ import annotations

import time
import uuid

from routilux.engine import Engine
from routilux.engine.ids import new_job_id
from tests.support.routines import chain, make_registry


def test_an_id_is_a_version_7_uuid_in_32_hex_digits_carrying_its_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    job_id = new_job_id()
    after = time.time_ns() // 1_000_000
    assert len(job_id) == 32 and job_id == job_id.lower() and int(job_id, 16) >= 0
    parsed = uuid.UUID(hex=job_id)
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert before <= parsed.int >> 80 <= after


def test_ids_made_in_later_milliseconds_sort_after_earlier_ones() -> None:
    batches = []
    for _ in range(5):
        batches.append([new_job_id() for _ in range(50)])
        time.sleep(0.002)
    for earlier, later in zip(batches, batches[1:], strict=False):
        assert max(earlier) < min(later)


def test_ids_are_unique_within_a_millisecond_too() -> None:
    ids = [new_job_id() for _ in range(100_000)]
    assert len(set(ids)) == len(ids)


async def test_the_engine_names_its_jobs_so() -> None:
    async with Engine(registry=make_registry()) as engine:
        first = await engine.start_job(chain("f", "Relay"))
        time.sleep(0.002)
        second = await engine.start_job(chain("f", "Relay"))
        assert uuid.UUID(hex=first.job_id).version == 7 and first.job_id < second.job_id
        assert (await engine.start_job(chain("f", "Relay"), job_id="mine")).job_id == "mine"

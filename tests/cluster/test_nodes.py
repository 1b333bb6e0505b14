"""Leases, ownership and the reaper, against a real redis-server and the shared Redis store.

A node that stops renewing its lease is declared lost once the lease expires; its unfinished jobs
become ``failed`` (``interrupted: worker lost``) in the shared store, with a ``job_end`` at the
end of their event streams — exactly once, however many nodes reap at the same time — and a node
that finds its own lease gone fails its jobs itself and joins again.
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime
from typing import Any

import anyio
import msgspec
import pytest
import redis.asyncio as aioredis

from routilux.bus import Event, EventBus
from routilux.bus.events import encode_json
from routilux.cluster.nodes import WORKER_LOST, ClusterMembership
from routilux.store import JobRecord, StoredEvent
from routilux.store.errors import StoreUnreachable
from routilux.store.redis import RedisStore
from tests.support.membership import LEASE, member
from tests.support.stores import held


def shared_store(client: aioredis.Redis, prefix: str) -> contextlib.AbstractAsyncContextManager[RedisStore]:
    return held(RedisStore(client, prefix=prefix, node_id="test"))


async def running_job(store: RedisStore, membership: ClusterMembership, events: int = 3) -> str:
    """A job ``membership``'s node runs: owned, recorded as running, ``events`` events written."""
    job_id = f"job-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    await membership.own(job_id, "flow", "default", now)
    await store.put_job(JobRecord(job_id=job_id, flow_id="flow", runtime_id="default", status="running",
                                  created_at=now))
    store.record_events([
        StoredEvent(job_id, seq, "log", encode_json(Event(seq, "log", job_id, "flow", None, now, {})))
        for seq in range(1, events + 1)
    ])
    await store.flush()
    return job_id


async def test_a_lost_nodes_jobs_fail_with_the_reason_and_a_final_job_end(client: aioredis.Redis, prefix: str) -> None:
    async with shared_store(client, prefix) as store:
        a, b = member(client, store, prefix, "A"), member(client, store, prefix, "B")
        await a.join()
        await b.join()  # B never renews: it is "killed" right after starting its job
        job_id = await running_job(store, b)
        assert await a.reap_once() == []  # B's lease still holds
        assert (await a.owner_of(job_id)).node == "B"  # type: ignore[union-attr]
        await anyio.sleep(LEASE + 0.1)
        assert await a.reap_once() == [job_id]
        record = await store.get_job(job_id)
        assert record is not None and record.status == "failed" and record.completed_at is not None
        assert record.error == {"type": "interrupted", "message": WORKER_LOST}
        events = await store.events_since(job_id)
        assert [e.seq for e in events] == [1, 2, 3, 4]
        end = msgspec.json.decode(events[-1].payload)
        assert end["type"] == "job_end" and end["data"]["status"] == "failed"
        assert end["data"]["error"] == record.error and end["job_id"] == job_id and end["flow_id"] == "flow"
        # B is forgotten: its ownership, its job set and its membership
        assert await a.owner_of(job_id) is None
        assert await client.hkeys(f"{prefix}:nodes") == [b"A"]
        assert await a.reap_once() == []


async def test_many_reapers_fail_a_job_once_and_skip_jobs_that_had_ended(client: aioredis.Redis, prefix: str) -> None:
    async with shared_store(client, prefix) as store:
        reapers = [member(client, store, prefix, name) for name in ("A", "C", "D")]
        lost = member(client, store, prefix, "B")
        for node in (*reapers, lost):
            await node.join()
        running = await running_job(store, lost)
        ended = await running_job(store, lost)
        record = await store.get_job(ended)
        await store.put_job(msgspec.structs.replace(record, status="completed"))  # type: ignore[type-var]
        await anyio.sleep(LEASE + 0.1)
        results: list[list[str]] = []

        async def reap(node: ClusterMembership) -> None:
            results.append(await node.reap_once())

        async with anyio.create_task_group() as tg:
            for node in reapers:
                tg.start_soon(reap, node)
        assert sorted(job for failed in results for job in failed) == [running]
        assert (await store.get_job(ended)).status == "completed"  # type: ignore[union-attr]
        assert [e.seq for e in await store.events_since(running)] == [1, 2, 3, 4]


async def test_a_node_that_finds_its_lease_gone_fails_its_jobs_and_joins_again(
    client: aioredis.Redis, prefix: str
) -> None:
    fenced: list[list[str]] = []
    async with shared_store(client, prefix) as store:
        node = member(client, store, prefix, "A", fence=lambda ids: fenced.append(list(ids)))
        await node.join()
        job_id = await running_job(store, node)
        await client.delete(f"{prefix}:lease:A")  # as if it had expired (a stalled loop)
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(node._renew_forever)
                while not fenced:
                    await anyio.sleep(0.02)
                tg.cancel_scope.cancel()
        assert fenced == [[job_id]]
        assert await node.is_alive("A")  # joined again


async def test_a_job_is_owned_until_its_engine_forgets_it(client: aioredis.Redis, prefix: str) -> None:
    """An ended job still in its owner's memory is still its owner's to answer for; once the
    engine forgets it, the shared store answers and the ownership goes."""
    async with shared_store(client, prefix) as store:
        bus = EventBus()
        node = ClusterMembership(client, store, bus, node_id="A", prefix=prefix, lease_seconds=LEASE)
        await node.join()
        job_id = await running_job(store, node)
        other = await running_job(store, node)
        async with anyio.create_task_group() as tg:
            tg.start_soon(node.run)
            bus.publish(Event(9, "job_end", job_id, "flow", None, datetime.now(UTC), {"status": "completed"}))
            await anyio.sleep(0.2)
            assert (await node.owner_of(job_id)).node == "A"  # type: ignore[union-attr]
            node.release_later([job_id])
            with anyio.fail_after(5):
                while await node.owner_of(job_id) is not None:
                    await anyio.sleep(0.02)
            node.release_later([other])
            bus.close()  # run() returns when the bus closes, releasing what is left
        assert node.owned == set()
        assert await node.owner_of(other) is None
        assert await client.smembers(f"{prefix}:node-jobs:A") == set()


async def test_a_node_claims_a_job_through_its_stores_writer_and_a_claim_that_failed_lets_go(
    client: aioredis.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node owns a job before it starts it, through its store's writer (so the entry is in Redis
    before any event of the job); if the answer is lost (Redis took the claim, the reply never
    came), the claim fails and what reached Redis is let go: no server answers for a job that does
    not run."""
    async with held(RedisStore(client, prefix=prefix, node_id="A", fence_writes=True)) as store:
        node = member(client, store, prefix, "A")
        await node.join()
        now = datetime.now(UTC)
        batches = store.stats().batches
        await node.own("started", "flow", "default", now)
        assert store.stats().batches == batches + 1  # written by the store's writer
        assert (await node.owner_of("started")).node == "A"  # type: ignore[union-attr]
        assert node.owned == {"started"}

        claimed = store.claim_job

        async def reply_lost(*args: Any, **kwargs: Any) -> None:
            await claimed(*args, **kwargs)
            raise StoreUnreachable("a write failed: Timeout reading from socket", location=store.location)

        monkeypatch.setattr(store, "claim_job", reply_lost)
        async with anyio.create_task_group() as tg:
            tg.start_soon(node.run)
            with pytest.raises(StoreUnreachable):
                await node.own("lost", "flow", "default", now)
            assert node.owned == {"started"}
            with anyio.fail_after(5):
                while await node.owner_of("lost") is not None:
                    await anyio.sleep(0.02)
            tg.cancel_scope.cancel()
        assert await client.smembers(f"{prefix}:node-jobs:A") == {b"started"}

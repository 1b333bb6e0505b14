"""Owner epochs, fenced writes and the reaper's hand-over, against a real redis-server.

- The shared store of a cluster node refuses every write of a job another node owns now — its
  record, events, checkpoint, posts — inside the writing script, and tells the node which jobs.
- The reaper hands a lost node's durable jobs (those with a checkpoint) to live nodes of the same
  worker group with the next epoch, and fails the others; with no live node of the group, the
  durable ones wait, assigned to the lost node.
- A draining node hands its jobs over the same way (compare-and-set on each owner entry).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import anyio
import pytest
import redis.asyncio as aioredis

from routilux.bus import Event
from routilux.bus.events import encode_json
from routilux.cluster.nodes import WORKER_LOST
from routilux.store import CheckpointRecord, JobRecord, StoredEvent, StoredPost
from routilux.store.errors import OwnershipLost
from routilux.store.redis import RedisStore
from tests.support.membership import LEASE, member
from tests.support.stores import held


def event(job_id: str, seq: int) -> StoredEvent:
    return StoredEvent(job_id, seq, "log", encode_json(Event(seq, "log", job_id, "flow", None, datetime.now(UTC), {})))


def record(job_id: str, status: str = "running") -> JobRecord:
    return JobRecord(job_id=job_id, flow_id="flow", runtime_id="default", status=status, created_at=datetime.now(UTC))


async def test_a_node_that_no_longer_owns_a_job_cannot_write_for_it(client: aioredis.Redis, prefix: str) -> None:
    fenced: list[list[str]] = []
    async with held(RedisStore(client, prefix=prefix, node_id="A", fence_writes=True)) as on_a, \
            held(RedisStore(client, prefix=prefix, node_id="B", fence_writes=True)) as on_b:
        on_a.on_fenced = fenced.append
        a, b = member(client, on_a, prefix, "A"), member(client, on_b, prefix, "B")
        await a.join()
        await b.join()
        job_id, free = f"job-{uuid.uuid4().hex[:8]}", f"free-{uuid.uuid4().hex[:8]}"
        await a.own(job_id, "flow", "default", datetime.now(UTC))
        await on_a.put_job(record(job_id))
        await on_a.put_checkpoint(CheckpointRecord(job_id, 0, b"{}", datetime.now(UTC)))
        on_a.record_events([event(job_id, 1)])
        await on_a.flush()
        owner = await a.owner_of(job_id)
        assert owner is not None and (owner.node, owner.epoch) == ("A", 1)

        assert await a.hand_over([job_id]) == {"B": [job_id]}  # as a drain does
        owner = await a.owner_of(job_id)
        assert owner is not None and (owner.node, owner.epoch) == ("B", 2)
        assert await b.assigned_here() == {job_id} and await a.assigned_here() == set()

        # A's writes are refused, each kind, and A is told; nothing of them is kept
        with pytest.raises(OwnershipLost):
            await on_a.put_job(record(job_id, "failed"))
        with pytest.raises(OwnershipLost):
            await on_a.append_post(StoredPost(job_id, 1, b'{"routine_id":"r","slot_name":"s"}'))
        with pytest.raises(OwnershipLost):
            await on_a.put_checkpoint(CheckpointRecord(job_id, 5, b"{}", datetime.now(UTC)))
        on_a.record_job(record(job_id, "cancelled"))
        on_a.record_events([event(job_id, 2), event(free, 1)])
        await on_a.flush()
        assert fenced and {j for ids in fenced for j in ids} == {job_id}
        assert (await on_b.get_job(job_id)).status == "running"  # type: ignore[union-attr]
        assert [e.seq for e in await on_b.events_since(job_id)] == [1]
        assert (await on_b.get_checkpoint(job_id)).posts == 0  # type: ignore[union-attr]
        assert await on_b.posts_after(job_id, 0) == []
        assert [e.seq for e in await on_b.events_since(free)] == [1]  # a job nobody owns: anyone writes
        # B, the owner, writes
        on_b.record_events([event(job_id, 2)])
        await on_b.put_job(record(job_id, "idle"))
        await on_b.flush()
        assert [e.seq for e in await on_b.events_since(job_id)] == [1, 2]
        assert (await on_b.get_job(job_id)).status == "idle"  # type: ignore[union-attr]


async def test_the_reaper_hands_durable_jobs_to_live_nodes_and_fails_the_others(
    client: aioredis.Redis, prefix: str
) -> None:
    told: list[tuple[str, list[str]]] = []

    async def assigned(node: str, ids: list[str]) -> None:
        told.append((node, sorted(ids)))

    async with held(RedisStore(client, prefix=prefix, node_id="R", fence_writes=True)) as store:
        reaper = member(client, store, prefix, "R", on_assigned=assigned)
        lost, gpu_lost = member(client, store, prefix, "L"), member(client, store, prefix, "G", group="gpu")
        for node in (reaper, lost, gpu_lost):
            await node.join()
        durable, fleeting, gpu = (f"{kind}-{uuid.uuid4().hex[:8]}" for kind in ("durable", "fleeting", "gpu"))
        now = datetime.now(UTC)
        for job_id, owner in ((durable, lost), (fleeting, lost), (gpu, gpu_lost)):
            await store.put_job(record(job_id))  # written before the owners claim them (R's store is fenced)
            if job_id != fleeting:
                await store.put_checkpoint(CheckpointRecord(job_id, 0, b"{}", now))
            await owner.own(job_id, "flow", "default", now)
        await anyio.sleep(LEASE + 0.1)  # L and G never renewed
        await reaper.join()  # R does (this test runs no renewing task)

        assert await reaper.reap_once() == [fleeting]  # no checkpoint: it cannot move
        assert (await store.get_job(fleeting)).error == {"type": "interrupted", "message": WORKER_LOST}  # type: ignore[union-attr]
        owner = await reaper.owner_of(durable)
        assert owner is not None and (owner.node, owner.epoch) == ("R", 2)
        assert await reaper.assigned_here() == {durable}
        assert (await store.get_job(durable)).status == "running"  # type: ignore[union-attr]
        assert told == [("R", [durable])]
        # no live node of group gpu: its job waits, assigned to the lost node, which stays listed
        owner = await reaper.owner_of(gpu)
        assert owner is not None and (owner.node, owner.epoch) == ("G", 1)
        assert await client.hexists(f"{prefix}:nodes", "G") and not await client.hexists(f"{prefix}:nodes", "L")
        # ... until a node of that group joins (and the per-node lock expired)
        await member(client, store, prefix, "G2", group="gpu").join()
        await reaper.join()
        await anyio.sleep(reaper.reap_interval + 0.05)  # the next pass
        await reaper.reap_once()
        owner = await reaper.owner_of(gpu)
        assert owner is not None and (owner.node, owner.epoch) == ("G2", 2)
        assert not await client.hexists(f"{prefix}:nodes", "G")

"""The Redis event bridge, against a real redis-server: what one server's store writes to a job's
stream reaches the other servers' buses in order, once, never its own; and a consumer that fell
behind ``MAXLEN`` gets a gap for exactly the seqs it lost."""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime

import anyio
import redis.asyncio as aioredis

from routilux.bus import Event, EventBus, Gap
from routilux.bus.events import encode_json
from routilux.cluster.redis_events import RedisEventBridge
from routilux.store import StoredEvent
from routilux.store.redis import RedisStore
from tests.support.stores import held


def event(job_id: str, seq: int, type_: str = "log", flow_id: str = "f") -> Event:
    return Event(seq=seq, type=type_, job_id=job_id, flow_id=flow_id, routine_id=None,  # type: ignore[arg-type]
                 timestamp=datetime.now(UTC), data={"n": seq})


def writer(
    client: aioredis.Redis, prefix: str, node: str, maxlen: int = 1000
) -> contextlib.AbstractAsyncContextManager[RedisStore]:
    """Server ``node``'s store: the one writer of its jobs' streams (the recorder feeds it)."""
    return held(RedisStore(client, events_per_job=maxlen, prefix=prefix, node_id=node))


async def write(store: RedisStore, *events: Event) -> None:
    store.record_events([StoredEvent(e.job_id, e.seq, e.type, encode_json(e)) for e in events])
    await store.flush()


async def collect(sub, until_seq: int, job_id: str) -> list[Event | Gap]:  # type: ignore[no-untyped-def]
    got: list[Event | Gap] = []
    with anyio.fail_after(10):
        while True:
            item = await sub.receive()
            got.append(item)
            last = item.seq if isinstance(item, Event) else item.to_seq
            if item.job_id == job_id and last >= until_seq:
                return got


async def test_events_cross_in_order_once_and_not_back(client: aioredis.Redis) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    bus_a, bus_b = EventBus(), EventBus()
    a = RedisEventBridge(client, bus_a, maxlen=1000, node_id="A", prefix=prefix, block_ms=100)
    b = RedisEventBridge(client, bus_b, maxlen=1000, node_id="B", prefix=prefix, block_ms=100)
    watch_a = bus_a.subscribe()
    watch_b = bus_b.subscribe(flow_ids=["f"])  # B follows what it watches: every job of flow f
    async with writer(client, prefix, "A") as store_a, anyio.create_task_group() as tg:
        tg.start_soon(a.run)
        tg.start_soon(b.run)
        await anyio.sleep(0.2)  # both consumers are reading the announcements
        job = "job-" + uuid.uuid4().hex
        await write(store_a, event(job, 1, "job_start"), *(event(job, seq) for seq in range(2, 200)))
        await write(store_a, event(job, 200, "job_end"))
        got_b = await collect(watch_b, 200, job)
        await anyio.sleep(0.3)  # give A every chance to (wrongly) read its own events back
        tg.cancel_scope.cancel()
    assert [e.seq for e in got_b] == list(range(1, 201))  # in order, complete, no duplicate
    assert all(isinstance(e, Event) and e.job_id == job for e in got_b)
    assert got_b[5].data == {"n": 6}
    assert watch_a.receive_nowait() is None  # nothing relayed back to the server that wrote it
    assert a.relayed == 0 and b.relayed == 200
    assert b.is_remote(job) and not a.is_remote(job)
    assert b.followed == 0  # it ended: B reads its stream no more


async def test_a_consumer_behind_maxlen_gets_a_gap(client: aioredis.Redis) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    bus_b = EventBus()
    maxlen = 100
    b = RedisEventBridge(client, bus_b, maxlen=maxlen, node_id="B", prefix=prefix, block_ms=100)
    job = "job-" + uuid.uuid4().hex
    watch_b = bus_b.subscribe(job_ids=[job])
    async with writer(client, prefix, "A", maxlen) as store_a, anyio.create_task_group() as tg:
        # A writes a long job while B is not running: by the time B reads, MAXLEN has trimmed
        # the start of the job's stream.
        await write(store_a, event(job, 1, "job_start"), *(event(job, seq) for seq in range(2, 1000)),
                    event(job, 1000, "job_end"))
        length = await client.xlen(f"{prefix}:job:{job}")
        assert maxlen <= length < 1000
        # B starts after the announcement was made: it finds the job on demand, from seq 0
        known = await b.lookup(job)
        assert known is not None and known.status == "completed" and known.last_seq == 1000
        known.ended, known.last_seq = False, 0  # as if B had been following from the start
        b.follow(job, known.flow_id, known.node)
        tg.start_soon(b.run)
        got = await collect(watch_b, 1000, job)
        tg.cancel_scope.cancel()
    first_kept = 1000 - length + 1
    assert got[0] == Gap(job_id=job, from_seq=1, to_seq=first_kept - 1)
    assert [e.seq for e in got[1:]] == list(range(first_kept, 1001))
    assert b.gaps == first_kept - 1


async def test_replay_reads_a_remote_job_by_seq(client: aioredis.Redis) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    reader = RedisEventBridge(client, EventBus(), maxlen=1000, node_id="B", prefix=prefix)
    job = "job-" + uuid.uuid4().hex
    async with writer(client, prefix, "A") as store_a:
        await write(store_a, *(event(job, seq, "job_start" if seq == 1 else "log") for seq in range(1, 51)))
    after = await reader.events_after(job, 20, count=10)
    assert [seq for seq, _type, _payload in after] == list(range(21, 31))
    assert all(type_ == "log" for _seq, type_, _payload in after)
    assert await reader.events_after(job, 50) == []


async def test_a_job_found_by_lookup_is_followed_at_once(client: aioredis.Redis) -> None:
    """A server that learns of a job on demand (it missed the announcement) relays its next
    events without waiting for its blocking read to time out."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    bus_b = EventBus()
    b = RedisEventBridge(client, bus_b, maxlen=1000, node_id="B", prefix=prefix, block_ms=30_000)
    job = "job-" + uuid.uuid4().hex
    async with writer(client, prefix, "A") as store_a, anyio.create_task_group() as tg:
        await write(store_a, event(job, 1, "job_start"))
        tg.start_soon(b.run)  # after the announcement: B will not read it
        await anyio.sleep(0.2)  # B is parked in a 30 s XREAD
        known = await b.lookup(job)
        assert known is not None and known.followed and known.last_seq == 1
        watch_b = bus_b.subscribe(job_ids=[job])
        await write(store_a, event(job, 2, "job_end"))
        with anyio.fail_after(3):  # far less than B's 30 s block
            got = await watch_b.receive()
        tg.cancel_scope.cancel()
    assert isinstance(got, Event) and got.seq == 2 and got.type == "job_end"

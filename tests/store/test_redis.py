"""What only the Redis store has to prove (the contract suite covers the rest): the event streams
are the bridge's format, several processes share one store safely, Redis failures are clear
errors, and its indexes answer exactly what the memory store answers."""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import msgspec
import pytest
import redis.asyncio as aioredis

from routilux.bus import Event, EventBus
from routilux.bus.events import encode_json
from routilux.cluster.redis_events import RedisEventBridge
from routilux.store import (
    CheckpointRecord,
    FlowRevisionConflict,
    JobQuery,
    MemoryStore,
    StoredEvent,
    StoredPost,
    StoreError,
    StoreOverloaded,
    open_store,
)
from routilux.store.errors import StoreUnreachable
from routilux.store.redis import RedisStore
from tests.support import stores
from tests.support.redis_server import RedisServer, free_port
from tests.support.stores import T0, build_redis, event, flow, held, job


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    async with aioredis.Redis.from_url(redis_server.url) as client:
        yield client


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex}"


@pytest.fixture
async def store_redis(redis_server: RedisServer) -> AsyncIterator[RedisStore]:
    """A Redis store in a namespace of its own (as the contract suite builds them)."""
    stores.redis_url = redis_server.url
    async with held(build_redis()) as store:
        yield store


def bus_event(job_id: str, seq: int, type_: str = "log", flow_id: str = "etl") -> Event:
    return Event(seq=seq, type=type_, job_id=job_id, flow_id=flow_id, routine_id=None,  # type: ignore[arg-type]
                 timestamp=datetime.now(UTC), data={"n": seq})


def stored(e: Event) -> StoredEvent:
    return StoredEvent(job_id=e.job_id, seq=e.seq, type=e.type, payload=encode_json(e))


# -- the event streams are the bridge's ------------------------------------------------------
async def test_events_are_written_in_the_bridge_format_and_announced(client: aioredis.Redis, prefix: str) -> None:
    events = [bus_event("j1", 1, "job_start"), bus_event("j1", 2), bus_event("j1", 3, "job_end")]
    async with held(RedisStore(client, prefix=prefix, node_id="node-a")) as store:
        store.record_events([stored(e) for e in events])
        await store.flush()
        entries = await client.xrange(f"{prefix}:job:j1")
        assert [entry_id for entry_id, _ in entries] == [b"1-0", b"2-0", b"3-0"]
        assert entries[1][1] == {b"node": b"node-a", b"event": encode_json(events[1])}
        (_, announced), = await client.xrange(f"{prefix}:jobs")
        assert announced == {b"job_id": b"j1", b"flow_id": b"etl", b"node": b"node-a"}
        assert await client.ttl(f"{prefix}:job:j1") == -1  # no TTL: retention deletes jobs
        # another server's bridge finds the job and replays it from the store's stream
        bridge = RedisEventBridge(client, EventBus(), maxlen=100, node_id="node-b", prefix=prefix)
        remote = await bridge.lookup("j1")
        assert remote is not None and remote.node == "node-a" and remote.status == "completed"
        assert [(seq, type_) for seq, type_, _ in await bridge.events_after("j1", 1)] == [(2, "log"), (3, "job_end")]
    assert await client.ping()  # the store left the shared client open


async def test_a_replay_replaces_and_fills_in_the_middle_of_a_stream(client: aioredis.Redis, prefix: str) -> None:
    async with held(RedisStore(client, prefix=prefix, events_per_job=4)) as store:
        store.record_events([event("j1", s) for s in (1, 2, 4, 5)])
        await store.flush()
        store.record_events([event("j1", 2, "job_end"), event("j1", 3), event("j1", 6)])
        await store.flush()
        got = await store.events_since("j1")
        assert [(e.seq, e.type) for e in got] == [(3, "log"), (4, "log"), (5, "log"), (6, "log")]
        store.record_events([event("j1", 4, "job_end"), event("j1", 1)])  # 1 is below what is kept
        await store.flush()
        assert [(e.seq, e.type) for e in await store.events_since("j1")] == [
            (3, "log"), (4, "job_end"), (5, "log"), (6, "log")
        ]
        store.record_events([event("j1", 7)])  # the stream still appends after a rewrite
        await store.flush()
        assert [e.seq for e in await store.events_since("j1", since=5)] == [6, 7]
        assert store.stats().lost_records == 0


async def test_seq_zero_is_refused_when_handed_over(store_redis: RedisStore) -> None:
    with pytest.raises(ValueError, match=">= 1"):
        store_redis.record_events([event("j1", 0)])


# -- several processes, one store ------------------------------------------------------------
async def test_two_stores_on_one_prefix_see_each_others_writes(redis_server: RedisServer, prefix: str) -> None:
    async with (
        held(RedisStore(redis_server.url, prefix=prefix)) as a,
        held(RedisStore(redis_server.url, prefix=prefix)) as b,
    ):
        a.record_job(job("j1", status="running"))
        await a.flush()
        assert (await b.get_job("j1")).status == "running"
        b.record_job(job("j1", status="completed", completed_at=T0))
        await b.flush()
        assert (await a.list_jobs(JobQuery(status="running")))[1] == 0
        assert [j.job_id for j in (await a.list_jobs(JobQuery(status="completed")))[0]] == ["j1"]


async def test_concurrent_conditional_flow_writes_have_exactly_one_winner(
    redis_server: RedisServer, prefix: str
) -> None:
    async with (
        held(RedisStore(redis_server.url, prefix=prefix)) as a,
        held(RedisStore(redis_server.url, prefix=prefix)) as b,
    ):
        await a.put_flow(flow("etl"), expected_revision=0)
        attempts = [
            store.put_flow(flow("etl", revision=2, document={"by": n}), expected_revision=1)
            for n, store in enumerate([a, b] * 5)
        ]
        results = await asyncio.gather(*attempts, return_exceptions=True)
        winners = [n for n, r in enumerate(results) if r is None]
        assert len(winners) == 1
        assert all(isinstance(r, FlowRevisionConflict) and r.current_revision == 2 for r in results if r is not None)
        assert (await b.get_flow("etl")).document == {"by": winners[0]}


async def test_mark_interrupted_keeps_states_and_moves_jobs_between_indexes(store_redis: RedisStore) -> None:
    store_redis.record_job(job("j1", status="running", state={"shared_data": {"x": 1}}))
    store_redis.record_job(job("j2", 1, status="completed", completed_at=T0))
    assert await store_redis.mark_interrupted("restart") == ["j1"]
    got = await store_redis.get_job("j1")
    assert got.status == "failed" and got.state == {"shared_data": {"x": 1}}
    assert (await store_redis.list_jobs(JobQuery(status="running")))[1] == 0
    assert [j.job_id for j in (await store_redis.list_jobs(JobQuery(status="failed")))[0]] == ["j1"]
    assert sorted(await store_redis.prune_jobs(keep=0)) == ["j1", "j2"]  # both finished now
    assert (await store_redis.counts()).job_count == 0


async def test_a_job_that_ends_leaves_no_checkpoint_or_posts_key_behind(client: aioredis.Redis, prefix: str) -> None:
    async with held(RedisStore(client, prefix=prefix)) as store:
        for i, job_id in enumerate(["ends", "deleted", "pruned", "lives"]):
            await store.put_job(job(job_id, i))
            await store.put_checkpoint(CheckpointRecord(job_id=job_id, posts=1, data=b"{}", taken_at=T0))
            await store.append_post(StoredPost(job_id=job_id, n=1, data=b"{}"))
        await store.append_post(StoredPost(job_id="no-record", n=1, data=b"{}"))
        store.record_job(job("ends", 0, status="cancelled", completed_at=T0))
        await store.delete_jobs(["deleted", "no-record"])
        store.record_job(job("pruned", 2, status="completed", completed_at=T0))
        await store.flush()
        assert await store.prune_jobs(keep=0) == ["ends", "pruned"]
        posts = {key.decode() async for key in client.scan_iter(f"{prefix}:posts:*")}
        assert posts == {f"{prefix}:posts:lives"}
        assert await client.hkeys(f"{prefix}:checkpoints") == [b"lives"]


# -- errors ----------------------------------------------------------------------------------
async def test_an_unreachable_server_is_a_clear_error_without_the_password() -> None:
    url = f"redis://user:s3cret@127.0.0.1:{free_port()}/0"
    store = RedisStore(url)
    with pytest.raises(StoreError, match=r"cannot reach Redis at redis://user@127\.0\.0\.1:\d+/0") as caught:
        async with held(store):
            pass
    assert "s3cret" not in str(caught.value) and "s3cret" not in repr(caught.value.to_dict())


async def test_redis_failures_while_open_are_store_errors_and_records_wait_for_redis(tmp_path: Path) -> None:
    """Redis lost: reads and awaited writes fail at once (StoreUnreachable, naming the server);
    recorded job records and events are kept, and written once Redis is back — none lost."""
    server = RedisServer(tmp_path, persistent=True).start()
    try:
        async with held(RedisStore(server.url, prefix="p")) as store:
            await store.put_job(job("j1"))
            server.kill()
            with pytest.raises(StoreUnreachable, match=r"at redis://127\.0\.0\.1:\d+/0"):
                await store.get_job("j1")
            with pytest.raises(StoreUnreachable, match="a write failed"):
                await store.put_flow(flow())
            store.record_job(job("j2"))
            store.record_events([event("j2", 1)])
            with pytest.raises(StoreUnreachable):
                await store.flush()
            assert store.stats().lost_records == 0 and store.stats().pending_events == 1
            assert store.write_error is not None
            server.start()
            deadline = time.monotonic() + 10
            while True:
                try:
                    await store.flush()
                    break
                except StoreUnreachable:
                    assert time.monotonic() < deadline, "the kept records were not written after Redis returned"
                    await anyio.sleep(0.05)
            assert (await store.get_job("j1")) is not None and (await store.get_job("j2")) is not None
            assert [e.seq for e in await store.events_since("j2")] == [1]
            assert store.stats().lost_records == 0 and store.write_error is None
    finally:
        server.stop()


async def test_records_redis_never_took_are_counted_lost_at_close(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer(tmp_path).start()
    try:
        store = RedisStore(server.url, prefix="p")
        async with held(store):
            server.kill()
            with caplog.at_level(logging.ERROR, "routilux.store"):
                store.record_job(job("j2"))
                store.record_events([event("j2", 1)])
        assert store.stats().lost_records == 2
        assert "were not stored" in caplog.text
    finally:
        server.stop()


async def test_a_value_routilux_did_not_write_is_a_clear_error(client: aioredis.Redis, prefix: str) -> None:
    async with held(RedisStore(client, prefix=prefix)) as store:
        await client.hset(f"{prefix}:job_records", "j1", b"not json")
        await client.hset(f"{prefix}:flows", "etl", b'{"flow_id": 1}')
        with pytest.raises(StoreError, match="reading a job failed .* is not what Routilux writes"):
            await store.get_job("j1")
        with pytest.raises(StoreError, match="listing flows failed"):
            await store.list_flows()


async def test_a_client_that_decodes_responses_is_refused(redis_server: RedisServer) -> None:
    async with aioredis.Redis.from_url(redis_server.url, decode_responses=True) as client:
        with pytest.raises(ValueError, match="decode_responses"):
            RedisStore(client)


async def test_scripts_lost_by_redis_are_loaded_again(client: aioredis.Redis, prefix: str) -> None:
    async with held(RedisStore(client, prefix=prefix)) as store:
        await client.script_flush()
        store.record_job(job("j1"))  # in a batch pipeline
        await store.flush()
        await client.script_flush()
        await store.put_job(job("j2", 1))  # alone
        await client.script_flush()
        assert [j.job_id for j in (await store.list_jobs(JobQuery()))[0]] == ["j2", "j1"]


async def test_event_backlog_is_bounded_and_overload_is_explicit(redis_server: RedisServer) -> None:
    async with held(RedisStore(redis_server.url, prefix=f"test-{uuid.uuid4().hex}", max_pending_events=10)) as store:
        store.record_events([event("j1", s) for s in range(1, 9)])
        with pytest.raises(StoreOverloaded):
            store.record_events([event("j1", s) for s in range(9, 13)])
        await store.wait_for_room()
        store.record_events([event("j1", s) for s in range(9, 13)])
        await store.flush()
        assert [e.seq for e in await store.events_since("j1")] == list(range(1, 13))
        assert store.stats().rejected_events == 4


def test_open_store_gives_a_redis_store_for_redis_urls(tmp_path: Path) -> None:
    for url in ("redis://localhost:6379/0", "rediss://h:6380/1", "unix:///run/redis.sock?db=2"):
        assert isinstance(open_store(url), RedisStore)
    store = open_store("redis://:pw@localhost/0", events_per_job=7)
    assert isinstance(store, RedisStore) and store.events_per_job == 7 and "pw" not in store.location


# -- the indexes answer what the memory store answers ----------------------------------------
async def test_random_histories_give_the_same_answers_as_the_memory_store(store_redis: RedisStore) -> None:
    rng = random.Random(7)
    statuses = ["pending", "running", "idle", "paused", "completed", "failed", "cancelled"]
    async with held(MemoryStore()) as memory:
        for step in range(600):
            job_id = f"j{rng.randrange(120)}"
            status = rng.choice(statuses)
            record = job(
                job_id,
                at=rng.randrange(40),  # many ties on created_at
                flow_id=rng.choice(["fa", "fb", "fc"]),
                runtime_id=rng.choice(["default", "fast"]),
                status=status,
                completed_at=T0 + timedelta(seconds=rng.randrange(60)) if rng.random() < 0.7 else None,
                state={"step": step},
            )
            for store in (memory, store_redis):
                store.record_job(record)
            if rng.random() < 0.3:  # checkpoints and posts, interleaved with the records
                target = f"j{rng.randrange(130)}"  # some have no record
                mark = CheckpointRecord(job_id=target, posts=step, data=b"%d" % step, taken_at=T0)
                message = StoredPost(job_id=target, n=rng.randrange(1, 6), data=b"%d" % step)
                for store in (memory, store_redis):
                    await store.put_checkpoint(mark)
                    await store.append_post(message)
            if step % 97 == 0:
                victims = [f"j{rng.randrange(120)}" for _ in range(3)]
                assert await memory.delete_jobs(victims) == await store_redis.delete_jobs(victims)
        await store_redis.flush()
        for _ in range(60):
            query = JobQuery(
                flow_id=rng.choice([None, "fa", "fb", "fc"]),
                status=rng.choice([None, *statuses]),
                runtime_id=rng.choice([None, "default", "fast"]),
                limit=rng.choice([0, 1, 7, 50, 1000]),
                offset=rng.choice([0, 3, 20]),
                with_state=rng.random() < 0.5,
            )
            assert await store_redis.list_jobs(query) == await memory.list_jobs(query), query
        assert await store_redis.counts() == await memory.counts()
        assert await store_redis.list_checkpoints() == await memory.list_checkpoints()
        for i in range(130):
            assert await store_redis.get_checkpoint(f"j{i}") == await memory.get_checkpoint(f"j{i}")
            assert await store_redis.posts_after(f"j{i}", 1) == await memory.posts_after(f"j{i}", 1)
        cutoff = T0 + timedelta(seconds=30)
        assert await store_redis.prune_jobs(keep=20, ended_before=cutoff, limit=15) == await memory.prune_jobs(
            keep=20, ended_before=cutoff, limit=15
        )
        assert sorted(await store_redis.mark_interrupted("x")) == sorted(await memory.mark_interrupted("x"))
        everything = JobQuery(limit=1000)
        redis_jobs, memory_jobs = (await store_redis.list_jobs(everything))[0], (await memory.list_jobs(everything))[0]
        assert [msgspec.structs.replace(j, completed_at=None) for j in redis_jobs] == [
            msgspec.structs.replace(j, completed_at=None) for j in memory_jobs
        ]
        assert await store_redis.prune_jobs(keep=5) == await memory.prune_jobs(keep=5)
        assert await store_redis.list_checkpoints() == await memory.list_checkpoints() == []


# -- cost: a few commands per batch, whatever its size ---------------------------------------
async def test_awaited_writes_ride_in_the_records_pipeline_and_a_refusal_fails_only_its_own(
    redis_server: RedisServer, client: aioredis.Redis, prefix: str
) -> None:
    """A job start, a post and a flow write queued while a batch is being written go out, with
    the records queued beside them, as ONE pipeline (a busy server pays one round trip for all,
    not one each); the flow write refused for its revision fails alone: the records and the
    operations beside it are written."""
    with anyio.fail_after(10):
        await _ride_together(redis_server, client, prefix)


async def _ride_together(redis_server: RedisServer, client: aioredis.Redis, prefix: str) -> None:
    async with held(RedisStore(client, prefix=prefix)) as store, \
            aioredis.Redis.from_url(redis_server.url) as pauser:
        await store.put_flow(flow("f"))
        batches = store.stats().batches
        answers: dict[str, str] = {}

        async def answer(name: str, write: Awaitable[object]) -> None:
            try:
                await write
                answers[name] = "ok"
            except StoreError as exc:
                answers[name] = type(exc).__name__

        await pauser.execute_command("CLIENT", "PAUSE", 10_000, "WRITE")  # scripts wait in Redis
        try:
            store.record_events([event("running", 1)])  # the writer sends it, and waits
            while store.stats().pending_events:
                await anyio.sleep(0.001)
            async with anyio.create_task_group() as tg:
                writes = {"start": store.put_job(job("new", 1)),
                          "stale flow write": store.put_flow(flow("f", revision=3), expected_revision=7),
                          "post": store.append_post(StoredPost(job_id="new", n=1, data=b"{}"))}
                for queued, (name, write) in enumerate(writes.items(), 1):
                    tg.start_soon(answer, name, write)
                    while store.stats().pending_ops < queued:  # queued behind the batch in flight
                        await anyio.sleep(0.001)
                store.record_events([event("running", 2)])
                await pauser.execute_command("CLIENT", "UNPAUSE")
        finally:
            await pauser.execute_command("CLIENT", "UNPAUSE")
        assert answers == {"start": "ok", "stale flow write": "FlowRevisionConflict", "post": "ok"}
        assert store.stats().batches == batches + 2  # the first records, then all the rest
        assert [e.seq for e in await store.events_since("running")] == [1, 2]
        assert (await store.get_job("new")) is not None
        assert [p.n for p in await store.posts_after("new", 0)] == [1]
        assert (await store.get_flow("f")).revision == 1  # type: ignore[union-attr]


async def _commands(client: aioredis.Redis) -> dict[str, int]:
    stats = await client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


async def test_batches_and_reads_cost_a_few_commands_not_one_per_record(client: aioredis.Redis, prefix: str) -> None:
    async with held(RedisStore(client, prefix=prefix)) as store:
        await client.config_resetstat()
        for i in range(1000):
            store.record_job(job(f"j{i:04}", i, status=("running", "completed")[i % 2], state={"n": i}))
        store.record_events([event(f"j{i % 10:04}", i // 10 + 1) for i in range(1000)])
        await store.flush()
        # two upserts of 500 jobs and one append of 1000 events, in one pipeline; inside the
        # upserts, one variadic command per key (counted by Redis too), not one per job
        calls = await _commands(client)
        assert calls["evalsha"] == 3 and calls["hset"] == 6 and calls["hmget"] == 2
        assert calls["zadd"] == 2 * 7  # all, flow, 2 statuses, runtime, active, finished
        assert calls["xadd"] == 1000 and calls.get("xtrim", 0) == 0  # no job is over its bound
        await client.config_resetstat()
        jobs, total = await store.list_jobs(JobQuery(status="completed", flow_id="etl", limit=100))
        assert len(jobs) == 100 and total == 500
        assert await store.get_job("j0001") is not None
        assert len(await store.events_since("j0001", 0, 1000)) == 100
        calls = await _commands(client)
        assert {k: calls[k] for k in ("evalsha", "multi", "exec")} == {"evalsha": 2, "multi": 1, "exec": 1}
        assert calls["hmget"] == 2 and calls["zinterstore"] == 1 and calls["xrange"] == 1

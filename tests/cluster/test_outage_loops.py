"""The cluster's loops on their own, against a real ``redis-server`` of each test's own: the
request channel, the event bridge and the lease survive Redis killed and started again, and a
part that fails for an unforeseen reason is restarted rather than taking the server down."""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import redis.asyncio as aioredis

from routilux.bus import Event, EventBus
from routilux.bus.events import encode_json
from routilux.cluster.channel import ForwardedRequest, ForwardedResponse, NodeChannel, OwnerUnavailable
from routilux.cluster.nodes import ClusterMembership
from routilux.cluster.redis_events import RedisEventBridge
from routilux.cluster.supervise import supervised
from routilux.store import StoredEvent
from routilux.store.backoff import Backoff
from routilux.store.redis import RedisStore
from routilux.store.redis.connection import connect
from tests.support.redis_server import RedisServer
from tests.support.servers import ROUTINE_MODULES, ServerProcess, gunicorn_argv, stop_all
from tests.support.stores import held


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path, persistent=True).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def client(redis: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = await connect(redis.url)  # the cluster's client: its timeouts, its retry
    try:
        yield client
    finally:
        await client.aclose()


def new_channel(client: aioredis.Redis, prefix: str, node: str, notices: list[str]) -> NodeChannel:
    async def echo(request: ForwardedRequest) -> ForwardedResponse:
        return ForwardedResponse(request.id, 200, [], request.body)

    async def alive(other: str) -> bool:
        return True

    async def on_notice(notice: str) -> None:
        notices.append(notice)

    return NodeChannel(client, node_id=node, prefix=prefix, handle=echo, is_alive=alive, on_notice=on_notice,
                       check_interval=0.2)


async def round_trip(sender: NodeChannel, to: str) -> bytes:
    request = sender.new_request(method="GET", path="/x", query=b"", headers=[], body=b"ping", client=None,
                                 timeout=5)
    return (await sender.request(to, request)).body


def event(job_id: str, seq: int, type_: str = "log") -> StoredEvent:
    e = Event(seq=seq, type=type_, job_id=job_id, flow_id="f", routine_id=None,  # type: ignore[arg-type]
              timestamp=datetime.now(UTC), data={"n": seq})
    return StoredEvent(job_id, seq, type_, encode_json(e))


async def until(condition: Callable[[], bool], timeout: float = 10) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.02)


async def test_channel_bridge_and_lease_survive_redis_killed_and_started_again(
    redis: RedisServer, client: aioredis.Redis
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    notices_a: list[str] = []
    a, b = new_channel(client, prefix, "A", notices_a), new_channel(client, prefix, "B", [])
    bus_b = EventBus()
    bridge = RedisEventBridge(client, bus_b, maxlen=1000, node_id="B", prefix=prefix, block_ms=100)
    watch = bus_b.subscribe(flow_ids=["f"])  # B relays what it watches: the jobs of flow f
    job = "job-" + uuid.uuid4().hex
    async with held(RedisStore(client, prefix=prefix, node_id="A")) as store_a, \
            held(RedisStore(client, prefix=prefix, node_id="B")) as store_b:
        membership = ClusterMembership(client, store_b, EventBus(), node_id="A", prefix=prefix, lease_seconds=3)
        await membership.join()
        async with anyio.create_task_group() as tg:
            await tg.start(a.run)
            await tg.start(b.run)
            tg.start_soon(bridge.run)
            tg.start_soon(membership.run)
            await anyio.sleep(0.2)  # the bridge reads the announcements
            store_a.record_events([event(job, 1, "job_start"), *(event(job, s) for s in range(2, 11))])
            await store_a.flush()
            assert await round_trip(a, "B") == b"ping"

            redis.kill()
            store_a.record_events([event(job, s) for s in range(11, 21)])  # kept by the writer
            await until(lambda: not a.connected and not b.connected and bridge.read_errors > 0)
            await anyio.sleep(0.5)
            redis.start()

            await until(lambda: a.connected and b.connected)
            await until(lambda: "- resync" in notices_a)  # A reloads what it may have missed
            assert await round_trip(a, "B") == b"ping"
            assert await round_trip(b, "A") == b"ping"
            seqs: list[int] = []
            with anyio.fail_after(10):
                while len(seqs) < 20:
                    seqs.append((await watch.receive()).seq)
            assert seqs == list(range(1, 21))  # resumed from the last id read: in order, once
            await until(lambda: membership.renew_failures == 0, timeout=5)
            assert await membership.is_alive("A")  # the lease was renewed, and A is listed again
            assert b"A" in await client.hkeys(membership.nodes_key)
            assert a.losses >= 1 and b.losses >= 1
            tg.cancel_scope.cancel()


async def test_the_channel_subscribes_again_after_an_unexpected_error(client: aioredis.Redis) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    notices: list[str] = []
    a, b = new_channel(client, prefix, "A", notices), new_channel(client, prefix, "B", [])
    serve = a._serve_messages
    failures = 0

    async def fails_once(pubsub: Any) -> None:
        nonlocal failures
        if failures == 0:
            failures += 1
            raise RuntimeError("a bug nobody foresaw")
        await serve(pubsub)

    a._serve_messages = fails_once  # type: ignore[method-assign]
    async with anyio.create_task_group() as tg:
        await tg.start(a.run)
        await tg.start(b.run)
        await until(lambda: a.losses == 1 and a.connected and "- resync" in notices)
        assert await round_trip(b, "A") == b"ping"
        tg.cancel_scope.cancel()


async def test_a_dropped_pubsub_connection_is_subscribed_again(client: aioredis.Redis) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    notices: list[str] = []
    a, b = new_channel(client, prefix, "A", notices), new_channel(client, prefix, "B", [])
    async with anyio.create_task_group() as tg:
        await tg.start(a.run)
        await tg.start(b.run)
        killed = await client.client_kill_filter(_type="pubsub")  # both subscriptions dropped by Redis
        assert killed == 2
        # redis-py's retry reconnects and subscribes again by itself, or the channel does (losses)
        with anyio.fail_after(10):
            while True:
                try:
                    assert await round_trip(a, "B") == b"ping" and await round_trip(b, "A") == b"ping"
                    break
                except OwnerUnavailable:
                    await anyio.sleep(0.05)
        tg.cancel_scope.cancel()


async def test_a_bridge_that_fails_unexpectedly_is_restarted_and_loses_nothing(client: aioredis.Redis) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    bus_b = EventBus()
    bridge = RedisEventBridge(client, bus_b, maxlen=1000, node_id="B", prefix=prefix, block_ms=100)
    watch = bus_b.subscribe(flow_ids=["f"])  # B relays what it watches: the jobs of flow f
    relay = bridge._relay
    failures = 0

    def fails_once(job_id: str, entries: Any) -> None:
        nonlocal failures
        if failures == 0:
            failures += 1
            raise RuntimeError("a bug nobody foresaw")
        relay(job_id, entries)

    bridge._relay = fails_once  # type: ignore[method-assign]
    job = "job-" + uuid.uuid4().hex
    async with held(RedisStore(client, prefix=prefix, node_id="A")) as store_a, anyio.create_task_group() as tg:
        tg.start_soon(functools.partial(supervised, "event bridge", bridge.run, backoff=Backoff(0.05, 0.1)))
        await anyio.sleep(0.2)
        store_a.record_events([event(job, 1, "job_start"), *(event(job, s) for s in range(2, 6))])
        await store_a.flush()
        seqs: list[int] = []
        with anyio.fail_after(10):
            while len(seqs) < 5:
                seqs.append((await watch.receive()).seq)
        assert failures == 1 and seqs == [1, 2, 3, 4, 5]
        tg.cancel_scope.cancel()


async def test_lease_and_reaper_loops_go_on_after_unexpected_errors(client: aioredis.Redis) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    async with held(RedisStore(client, prefix=prefix, node_id="A")) as store:
        membership = ClusterMembership(client, store, EventBus(), node_id="A", prefix=prefix, lease_seconds=0.6)
        await membership.join()
        reap = membership.reap_once
        rounds = 0

        async def fails_at_first() -> list[str]:
            nonlocal rounds
            rounds += 1
            if rounds <= 2:
                raise RuntimeError("a bug nobody foresaw")
            return await reap()

        membership.reap_once = fails_at_first  # type: ignore[method-assign]
        async with anyio.create_task_group() as tg:
            tg.start_soon(membership.run)
            await until(lambda: rounds >= 4)  # the reaper went on (past its hold after failures)
            await anyio.sleep(1.0)  # several lease renewals
            assert await membership.is_alive("A")
            tg.cancel_scope.cancel()


# -- a part of the server that dies: live turns 503, then the process exits 1 --------------------
def _faulty_server(tmp_path: Path, argv: list[str] | None = None) -> tuple[ServerProcess, Path]:
    trigger = tmp_path / "fail-now"
    server = ServerProcess(tmp_path / "routilux.db", argv=argv,
                           ROUTILUX_ROUTINE_MODULES=f"{ROUTINE_MODULES},tests.support.faulty_parts",
                           ROUTILUX_TEST_FAULT_FILE=str(trigger), ROUTILUX_LOG_LEVEL="info")
    return server.start(), trigger


def _live_statuses_until(server: ServerProcess, done: Callable[[list[int]], bool], timeout: float) -> list[int]:
    """``/api/health/live``'s statuses (0: no answer), polled until ``done`` says so."""
    statuses: list[int] = []
    deadline = time.monotonic() + timeout
    while not done(statuses):
        assert time.monotonic() < deadline, f"live answered {statuses[-20:]}:\n{server.output()[-3000:]}"
        try:
            statuses.append(httpx.get(server.url + "/api/health/live", timeout=1).status_code)
        except httpx.HTTPError:
            statuses.append(0)
        time.sleep(0.02)
    return statuses


def test_a_server_whose_part_died_answers_live_503_then_exits_1(tmp_path: Path) -> None:
    """uvicorn (``python -m routilux.api.main``): the recorder fails unexpectedly; the server does
    not serve on half-dead: live answers 503, and the process exits with status 1."""
    server, trigger = _faulty_server(tmp_path)
    try:
        assert httpx.get(server.url + "/api/health/live").status_code == 200
        trigger.touch()
        statuses = _live_statuses_until(server, lambda s: server.process.poll() is not None, timeout=20)
        assert server.process.returncode == 1, server.output()[-3000:]
        assert 503 in statuses
        assert 200 not in statuses[statuses.index(503):]  # never back to 200 once it said 503
        assert "a part of the server stopped with an error" in server.output()
    finally:
        server.stop()


def test_a_gunicorn_worker_whose_part_died_is_replaced(tmp_path: Path) -> None:
    """gunicorn: the worker says 503 on live, exits 1, and the arbiter starts a new one that serves."""
    argv = gunicorn_argv(1, "routilux.api.worker.UvicornWorker")
    server, trigger = _faulty_server(tmp_path, argv)
    try:
        trigger.touch()
        statuses = _live_statuses_until(server, lambda s: 503 in s and s[-1] == 200, timeout=30)
        assert server.process.poll() is None  # the arbiter goes on
        assert "a part of the server stopped with an error" in server.output()
        assert "exited with code 1" in server.output(), server.output()[-3000:]
        assert statuses[-1] == 200
    finally:
        stop_all(server)

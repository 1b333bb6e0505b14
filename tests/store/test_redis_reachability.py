"""The Redis reachability latch (``routilux.store.redis.reachability``) against a real
``redis-server`` of each test's own, frozen (SIGSTOP) or killed: one call that finds Redis silent
tells every request at once, the other callers keep asking, and the mark clears as soon as Redis
answers again."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest
import redis.asyncio as aioredis
import redis.exceptions

from routilux.store.errors import StoreUnreachable
from routilux.store.redis import RedisStore
from routilux.store.redis.connection import SOCKET_TIMEOUT, command_retry, is_connection_error, new_client
from routilux.store.redis.reachability import (
    Reachability,
    RedisUnreachable,
    reachability_of,
    serving_a_request,
    watch,
)
from tests.support.redis_server import RedisServer
from tests.support.stores import flow, held

#: Slack for the scheduling of a busy test machine.
SLACK = 0.3


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from RedisServer(tmp_path).serving()


@pytest.fixture
async def client(server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = new_client(server.url)  # a Routilux client: its timeouts, its retry, its latch
    try:
        assert await client.ping()  # answered: a latch left marked by an earlier server on this port clears
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def latch(client: aioredis.Redis) -> Reachability:
    latch = reachability_of(client)
    assert not latch.unreachable
    return latch


async def as_request(client: aioredis.Redis, key: str = "k") -> bytes | None:
    """GET ``key`` as a request's task would."""
    with serving_a_request():
        value: bytes | None = await client.get(key)
        return value


async def timed_out(client: aioredis.Redis, key: str = "k") -> None:
    """GET ``key`` as a loop would, expecting Redis to let it time out."""
    with pytest.raises(redis.exceptions.TimeoutError):
        await client.get(key)


async def test_a_frozen_redis_is_found_once_for_every_request(
    server: RedisServer, client: aioredis.Redis, latch: Reachability
) -> None:
    server.pause()
    async with anyio.create_task_group() as tg:
        tg.start_soon(timed_out, client)  # a loop's call, asked first: it times out first
        await anyio.sleep(0.4)  # a request comes later
        started = time.monotonic()
        with pytest.raises(RedisUnreachable) as caught:
            await as_request(client)
        released_after = time.monotonic() - started
    # The request did not wait for a timeout of its own: it was released when the loop's came.
    assert released_after < SOCKET_TIMEOUT - 0.4 + SLACK, released_after
    assert latch.unreachable
    assert is_connection_error(caught.value)  # answered 503 cluster_unavailable like any lost Redis
    # A request now fails at once.
    started = time.monotonic()
    with pytest.raises(RedisUnreachable):
        await as_request(client)
    assert time.monotonic() - started < 0.1


async def test_other_callers_keep_asking_and_an_answer_clears_the_mark(
    server: RedisServer, client: aioredis.Redis, latch: Reachability
) -> None:
    server.pause()
    await timed_out(client)
    assert latch.unreachable
    started = time.monotonic()
    await timed_out(client)  # not a request: it really asks, and waits for its own timeout
    assert time.monotonic() - started >= SOCKET_TIMEOUT - 0.05
    server.resume()
    assert await client.ping()  # asked after the mark, answered: Redis is reachable again
    assert not latch.unreachable
    with serving_a_request():
        assert await client.set("k", b"v")
    assert await as_request(client) == b"v"


async def test_a_request_that_began_as_redis_froze_does_not_also_pay_the_rate_limiters_wait(
    server: RedisServer, client: aioredis.Redis, latch: Reachability
) -> None:
    """The shared rate limiter asks first, with a timeout of its own (0.25 s) too short to prove
    anything: the request's own call is released once Redis was silent for a whole socket
    timeout since the limiter asked — not a whole timeout after its own call began."""
    limiter = aioredis.Redis.from_url(server.url, socket_timeout=0.25, socket_connect_timeout=0.25,
                                      retry=command_retry(server.url, timeout=0.25))
    try:
        # Redis silent for 0.4 s: the limiter gives up, the request's call is answered, no mark.
        async with anyio.create_task_group() as tg:
            server.pause()
            with serving_a_request():
                with pytest.raises(redis.exceptions.TimeoutError):
                    await limiter.get("k")
                assert not latch.unreachable  # a suspicion only
                tg.start_soon(_resume_after, server, 0.15)
                assert await client.set("k", b"v")
        assert not latch.unreachable
        # Redis frozen: the limiter's question, then the request's.
        server.pause()
        asked = time.monotonic()
        with serving_a_request():
            with pytest.raises(redis.exceptions.TimeoutError):
                await limiter.get("k")
            with pytest.raises(RedisUnreachable):
                await client.get("k")
        took = time.monotonic() - asked
        assert SOCKET_TIMEOUT - 0.05 <= took < SOCKET_TIMEOUT + SLACK, took  # not 0.25 s + 1.2 s
        assert latch.unreachable
    finally:
        await limiter.aclose()


async def _resume_after(server: RedisServer, seconds: float) -> None:
    await anyio.sleep(seconds)
    server.resume()


@pytest.mark.parametrize("outage", ["freeze", "kill"])
async def test_watch_clears_the_mark_as_soon_as_redis_is_back(
    server: RedisServer, client: aioredis.Redis, latch: Reachability, outage: str
) -> None:
    """A frozen Redis answers the watcher's waiting PING the moment it resumes; a killed one, the
    next PING once it is started again."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch, client)
        if outage == "freeze":
            server.pause()
            await timed_out(client)
        else:
            server.kill()
            with pytest.raises(redis.exceptions.ConnectionError):
                await client.get("k")  # refused (after the one quick retry)
        assert latch.unreachable
        with pytest.raises(RedisUnreachable):
            await as_request(client)
        if outage == "freeze":
            server.resume()
        else:
            server.start()  # returns once it answers PING
        back = time.monotonic()
        with anyio.fail_after(5):
            while latch.unreachable:
                await anyio.sleep(0.01)
        assert time.monotonic() - back < SLACK
        tg.cancel_scope.cancel()
    assert await as_request(client) is None


async def test_a_store_write_a_request_gave_up_on_is_never_written(
    server: RedisServer, client: aioredis.Redis, latch: Reachability
) -> None:
    """A request's write waiting behind another in the store's writer is given up when Redis is
    marked unreachable (its 503 comes then), and the writer skips it when it gets there, even
    though Redis answers again by then: nothing is written after a 503."""
    async with held(RedisStore(client, prefix=f"test-{uuid.uuid4().hex}")) as store:
        server.pause()
        queued = anyio.Event()
        async with anyio.create_task_group() as tg:

            async def loop_write() -> None:  # not a request: waits for Redis
                queued.set()
                await store.put_flow(flow("first"))

            tg.start_soon(loop_write)
            await queued.wait()
            with anyio.fail_after(5):
                while store.stats().pending_ops:  # the writer has taken it: it waits on Redis
                    await anyio.sleep(0.01)

            async def mark_soon() -> None:
                with anyio.fail_after(5):
                    while not store.stats().pending_ops:  # the request's write is queued behind
                        await anyio.sleep(0.01)
                latch.failed(time.monotonic(), redis.exceptions.TimeoutError("another call timed out"))

            tg.start_soon(mark_soon)
            with serving_a_request(), pytest.raises(StoreUnreachable):
                await store.put_flow(flow("second"))
            server.resume()  # the first write is answered; the writer then reaches the second
        # A request's write while Redis is marked is refused before it is queued.
        assert latch.unreachable
        with serving_a_request(), pytest.raises(StoreUnreachable):
            await store.put_flow(flow("third"))
        await store.flush()
        assert [f.flow_id for f in await store.list_flows()] == ["first"]
        assert not latch.unreachable  # the reads above were answered


async def test_a_process_that_stood_still_does_not_take_redis_for_lost(
    server: RedisServer, client: aioredis.Redis, latch: Reachability
) -> None:
    """An event loop that stalls past a call's timeout lets the timeout beat the reply that came
    meanwhile: that call fails, but Redis answered, and requests must not all fail for it."""
    outcome: list[BaseException] = []

    async def asked_before_the_stall() -> None:
        try:
            await client.blpop(["empty"], timeout=0.3)  # Redis answers (nil) after 0.3 s
        except redis.exceptions.TimeoutError as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(asked_before_the_stall)
        await anyio.sleep(0.1)  # asked, and waiting for Redis
        time.sleep(SOCKET_TIMEOUT + 0.5)  # the stall under test: the answer comes meanwhile
    assert outcome, "the reply won: this test no longer shows a stall"  # asyncio runs the timer first
    assert not latch.unreachable
    assert await as_request(client) is None

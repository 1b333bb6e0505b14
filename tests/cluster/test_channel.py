"""Requests between nodes over Redis Pub/Sub: answered by the owner, never left hanging.

A request reaches the named node and returns its answer; a node that is not connected fails the
request at once; a node that stops renewing its lease while holding a request fails it within
the check interval; a deadline bounds every wait; a large answer travels through a key.
"""

from __future__ import annotations

import time
import uuid

import anyio
import pytest
import redis.asyncio as aioredis

from routilux.cluster.channel import (
    INLINE_ANSWER_BYTES,
    ForwardedRequest,
    ForwardedResponse,
    NodeChannel,
    OwnerUnavailable,
)


def channel(client: aioredis.Redis, prefix: str, node: str, handle=None, alive=None, notices=None) -> NodeChannel:  # type: ignore[no-untyped-def]
    async def echo(request: ForwardedRequest) -> ForwardedResponse:
        return ForwardedResponse(request.id, 200, [(b"x-node", node.encode())], request.body)

    async def is_alive(other: str) -> bool:
        return alive is None or alive(other)

    async def on_notice(notice: str) -> None:
        if notices is not None:
            notices.append(notice)

    return NodeChannel(client, node_id=node, prefix=prefix, handle=handle or echo, is_alive=is_alive,
                       on_notice=on_notice, check_interval=0.1)


def request_of(sender: NodeChannel, body: bytes = b"hello", timeout: float = 5.0) -> ForwardedRequest:
    return sender.new_request(method="POST", path="/api/jobs/j/pause", query=b"", headers=[], body=body,
                              client=("127.0.0.1", 1), timeout=timeout)


async def test_a_request_is_answered_by_the_node_it_names_and_notices_reach_every_node(client: aioredis.Redis) -> None:
    prefix = f"c{uuid.uuid4().hex[:8]}"
    notices_a: list[str] = []
    notices_b: list[str] = []
    a = channel(client, prefix, "A", notices=notices_a)
    b = channel(client, prefix, "B", notices=notices_b)
    async with anyio.create_task_group() as tg:
        await tg.start(a.run)
        await tg.start(b.run)
        answer = await a.request("B", request_of(a))
        assert (answer.status, answer.headers, answer.body) == (200, [(b"x-node", b"B")], b"hello")
        big = b"x" * (INLINE_ANSWER_BYTES + 1)
        assert (await a.request("B", request_of(a, big))).body == big  # through a key
        assert await client.keys(f"{prefix}:answer:*") == []  # read and deleted
        await b.notify("flow:etl")
        with anyio.fail_after(5):
            while not (notices_a and notices_b):
                await anyio.sleep(0.01)
        assert notices_a == notices_b == ["flow:etl"]
        tg.cancel_scope.cancel()
    assert (a.forwarded, b.served) == (2, 2)


async def test_a_node_that_is_not_there_fails_the_request_at_once(client: aioredis.Redis) -> None:
    prefix = f"c{uuid.uuid4().hex[:8]}"
    a = channel(client, prefix, "A")
    async with anyio.create_task_group() as tg:
        await tg.start(a.run)
        started = time.monotonic()
        with pytest.raises(OwnerUnavailable, match="not connected"):
            await a.request("gone", request_of(a))
        assert time.monotonic() - started < 0.5
        tg.cancel_scope.cancel()


async def test_an_owner_that_dies_holding_a_request_fails_it_within_the_check_interval(client: aioredis.Redis) -> None:
    prefix = f"c{uuid.uuid4().hex[:8]}"
    b_alive = True

    async def stuck(request: ForwardedRequest) -> ForwardedResponse:
        await anyio.sleep_forever()
        raise AssertionError

    a = channel(client, prefix, "A", alive=lambda node: b_alive)
    b = channel(client, prefix, "B", handle=stuck)
    async with anyio.create_task_group() as tg:
        await tg.start(a.run)
        await tg.start(b.run)

        async def die() -> None:
            nonlocal b_alive
            await anyio.sleep(0.3)
            b_alive = False

        tg.start_soon(die)
        started = time.monotonic()
        with pytest.raises(OwnerUnavailable, match="lease"):
            await a.request("B", request_of(a, timeout=30))
        assert 0.3 <= time.monotonic() - started < 1.0
        # a live owner that never answers: the deadline ends the wait
        b_alive = True
        started = time.monotonic()
        with pytest.raises(OwnerUnavailable, match="in time"):
            await a.request("B", request_of(a, timeout=0.5))
        assert 0.5 <= time.monotonic() - started < 1.0
        tg.cancel_scope.cancel()

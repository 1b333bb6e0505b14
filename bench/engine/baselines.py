"""The raw anyio baselines of the engine bench: the same 5-stage chain from memory object
streams, async and sync (see :func:`baseline_sync` for why it mirrors the engine).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from bench.engine.common import (
    HOPS_PER_ITEM,
    STAGES,
    Result,
    Tally,
)

STREAM_BUFFER = 1000  # the same bound as a Routilux slot's default capacity
Item = dict[str, Any]


def _timeout_for(n: int) -> float:
    """Generous wall-clock limit for one scenario: a stall or a lost item must not hang the run."""
    return 120.0 + n * 0.005


# ---------------------------------------------------------------------------------------------
# Raw anyio baselines
# ---------------------------------------------------------------------------------------------
def _streams() -> tuple[list[ObjectSendStream[Item]], list[ObjectReceiveStream[Item]]]:
    sends, recvs = [], []
    for _ in range(STAGES):
        send, recv = anyio.create_memory_object_stream[Item](STREAM_BUFFER)
        sends.append(send)
        recvs.append(recv)
    return sends, recvs


async def _run_chain(
    scenario: str,
    n: int,
    stage: Callable[[ObjectReceiveStream[Item], ObjectSendStream[Item]], Awaitable[None]],
) -> Result:
    """Feed ``n`` items through ``STAGES - 1`` copies of ``stage`` and a checking sink."""
    tally = Tally(n)
    sends, recvs = _streams()

    async def feed(send: ObjectSendStream[Item]) -> None:
        async with send:
            for i in range(n):
                await send.send({"i": i})

    async def sink(recv: ObjectReceiveStream[Item]) -> None:
        async with recv:
            async for item in recv:
                tally.add_one(item)

    t0 = time.perf_counter()
    with anyio.fail_after(_timeout_for(n)):
        async with anyio.create_task_group() as tg:
            for k in range(STAGES - 1):
                tg.start_soon(stage, recvs[k], sends[k + 1])
            tg.start_soon(sink, recvs[-1])
            tg.start_soon(feed, sends[0])
    seconds = time.perf_counter() - t0
    tally.verify(scenario)
    return Result(scenario, items=n, seconds=seconds, hops=n * HOPS_PER_ITEM)


async def baseline_async(n: int) -> Result:
    """Each stage is a task forwarding item by item between bounded memory streams."""

    async def forward(recv: ObjectReceiveStream[Item], send: ObjectSendStream[Item]) -> None:
        async with recv, send:
            async for item in recv:
                await send.send(item)

    return await _run_chain("raw anyio, async", n, forward)


async def baseline_async_batched(n: int) -> Result:
    """Informational: each stage takes everything waiting (as the ``immediate`` policy does) and
    forwards it with ``send_nowait``, awaiting only when the next stream is full. The fastest a
    hand-written anyio chain gets; the per-item chain above is the reference baseline."""

    async def forward(recv: ObjectReceiveStream[Item], send: ObjectSendStream[Item]) -> None:
        async with recv, send:
            async for first in recv:
                for item in _take_batch(first, recv):
                    try:
                        send.send_nowait(item)
                    except anyio.WouldBlock:
                        await send.send(item)

    return await _run_chain("raw anyio, async (batch drain)", n, forward)


def _take_batch(first: Item, recv: ObjectReceiveStream[Item]) -> list[Item]:
    """``first`` plus everything already waiting: what Routilux's ``immediate`` policy takes."""
    batch = [first]
    while True:
        try:
            batch.append(recv.receive_nowait())
        except (anyio.WouldBlock, anyio.EndOfStream):
            return batch


async def baseline_sync(n: int) -> Result:
    """The reference for sync routines: the engine's sync path written by hand with anyio.

    Per batch, not per item. Like the ``immediate`` policy, a stage takes every item waiting and
    makes one worker-thread call (``to_thread.run_sync``) for the whole batch. A sync routine's
    ``ctx.emit`` only queues the payload in the activation's outbox, and a pump on the loop
    delivers it with back-pressure; for a pass-through that amounts to "the thread hands its
    batch back and the loop sends each item", which is what this stage does. The ratio to it is
    the engine's own overhead, not the cost of threads.
    """

    def work(batch: list[Item]) -> list[Item]:
        return [item for item in batch]

    async def stage(recv: ObjectReceiveStream[Item], send: ObjectSendStream[Item]) -> None:
        async with recv, send:
            async for first in recv:
                for item in await anyio.to_thread.run_sync(work, _take_batch(first, recv)):
                    await send.send(item)

    return await _run_chain("raw anyio, sync (thread per batch, loop sends)", n, stage)


async def baseline_sync_blocking(n: int) -> Result:
    """Informational: one blocking ``from_thread.run(send.send, item)`` per item from the thread.

    The naive hand-written version, and what Routilux's ``ctx.emit`` did before it had an outbox:
    each emit is a round trip thread -> loop -> thread.
    """

    def work(batch: list[Item], send: ObjectSendStream[Item]) -> None:
        for item in batch:
            anyio.from_thread.run(send.send, item)

    async def stage(recv: ObjectReceiveStream[Item], send: ObjectSendStream[Item]) -> None:
        async with recv, send:
            async for first in recv:
                await anyio.to_thread.run_sync(work, _take_batch(first, recv), send)

    return await _run_chain("raw anyio, sync (thread per batch, blocking hop per item)", n, stage)


# ---------------------------------------------------------------------------------------------

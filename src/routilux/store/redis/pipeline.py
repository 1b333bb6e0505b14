"""Pipelines of the Redis store: a writer batch as one pipeline of script calls, script calls by
their SHA1, and reads of many jobs.

Each is one round trip (or one per :data:`READS_PER_PIPELINE` reads). A script Redis has lost
(it restarted, or its scripts were flushed) is sent again whole, with its source.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from routilux.store.batch_writer import Op, Written
from routilux.store.errors import StoreError
from routilux.store.redis.batches import BatchCalls, Call
from routilux.store.redis.scripts import Script
from routilux.store.segments import EventsBySeq

#: Commands of one pipeline in reads of many jobs (one round trip each, none holding Redis long).
READS_PER_PIPELINE: Final = 1000


async def run_calls(client: aioredis.Redis, calls: Sequence[Call]) -> list[Any]:
    """Send ``calls`` in one pipeline, in order. Each reply is the script's result, or the
    exception its call ended with (one call refused must not spoil the others: they carry other
    jobs' records and other requests' operations). Raises only what fails the whole pipeline
    (the connection)."""
    pipe = client.pipeline(transaction=False)
    for call in calls:
        pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
    replies = await pipe.execute(raise_on_error=False)
    for i, reply in enumerate(replies):
        if isinstance(reply, NoScriptError):  # Redis restarted or flushed its scripts
            call = calls[i]
            try:
                replies[i] = await client.eval(call.script.source, len(call.keys), *call.keys, *call.args)
            except (RedisError, OSError) as exc:
                replies[i] = exc
    return list(replies)


async def write_pipelined(client: aioredis.Redis, batch: list[EventsBySeq | Op], calls_of: BatchCalls,
                          failed: Callable[[Exception], StoreError]) -> tuple[Written, list[str]]:
    """Write ``batch`` — segments of records and operations (each a :class:`PipelinedWrite`, its
    ``fn`` making its result of its replies) — as ONE pipeline, in order. Each operation gets its
    result or error (``failed(reply)`` for an error reply); returns what was written, and the
    jobs whose records were fenced off. Raises only what fails the whole pipeline."""
    calls: list[Call] = []
    parts: list[tuple[EventsBySeq | Op, int, int]] = []  # item, where its calls start, unencodable
    for item in batch:
        start, unencodable = len(calls), 0
        if isinstance(item, Op):
            if item.fn is not None and not item.args[0].given_up:
                calls += item.args[0].calls
        else:
            item_calls, unencodable = calls_of.of(item)
            calls += item_calls
        parts.append((item, start, unencodable))
    replies = await run_calls(client, calls) if calls else []
    rows = lost = 0
    fenced: list[str] = []
    for i, (item, start, unencodable) in enumerate(parts):
        end = parts[i + 1][1] if i + 1 < len(parts) else len(calls)
        if isinstance(item, Op):
            _finish(item, replies[start:end], failed, calls_of.location)
            rows += 1
            continue
        refused, refused_jobs = calls_of.written(calls[start:end], replies[start:end])
        fenced += refused_jobs
        rows += item.size() - unencodable - refused
        lost += unencodable + refused
    return Written(rows, lost), fenced


def _finish(op: Op, replies: list[Any], failed: Callable[[Exception], StoreError], location: str) -> None:
    """Give a pipelined operation its result or error (it is done either way: a failure of a
    later batch does not undo it)."""
    try:
        if op.fn is not None and op.args[0].given_up:
            raise StoreError("not written: the request gave up waiting (Redis unreachable)", location=location)
        for reply in replies:
            if isinstance(reply, Exception):
                raise failed(reply)
        if op.fn is not None:
            op.result = op.fn(replies)
    except Exception as exc:  # noqa: BLE001 - the op's caller gets it (e.g. FlowRevisionConflict)
        op.error = exc
    op.committed = True


def raise_first(replies: Sequence[Any]) -> Sequence[Any]:
    """``replies`` if none is an exception; else raise the first."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


async def pipelined(client: aioredis.Redis, job_ids: list[str], command: Callable[[Any, str], object]) -> list[Any]:
    """``command(pipe, job_id)`` for every job, :data:`READS_PER_PIPELINE` to a round trip."""
    replies: list[Any] = []
    for start in range(0, len(job_ids), READS_PER_PIPELINE):
        pipe = client.pipeline(transaction=False)
        for job_id in job_ids[start : start + READS_PER_PIPELINE]:
            command(pipe, job_id)
        replies += await pipe.execute()
    return replies


class PipelinedWrite:
    """An awaited write's script calls, waiting in the store's writer for its next pipeline.
    ``given_up``: its caller stopped waiting before the writer got to it (a request that answered
    503 because Redis fell silent), so it is left out: nothing is written after a 503."""

    __slots__ = ("calls", "given_up")

    def __init__(self, calls: list[Call]) -> None:
        self.calls = calls
        self.given_up = False

    def give_up(self) -> None:
        self.given_up = True


def call(script: Script, keys: Sequence[Any], args: Sequence[Any]) -> Call:
    """A call of ``script`` made by an awaited operation (it carries no batched records)."""
    return Call(script, list(keys), list(args), 0, script.name)

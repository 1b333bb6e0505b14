"""Pipelines of the Redis store: script calls by their SHA1, and reads of many jobs.

Each is one round trip (or one per :data:`READS_PER_PIPELINE` reads). A script Redis has lost
(it restarted, or its scripts were flushed) is sent again whole, with its source.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from routilux.store.redis.batches import Call
from routilux.store.redis.scripts import Script

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


def call(script: Script, keys: Sequence[Any], args: Sequence[Any]) -> Call:
    """A call of ``script`` made by an awaited operation (it carries no batched records)."""
    return Call(script, list(keys), list(args), 0, script.name)

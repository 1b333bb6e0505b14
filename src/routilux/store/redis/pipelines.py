"""Pipelines of the Redis store: script calls by their SHA1, and reads of many jobs.

Each is one round trip (or one per :data:`READS_PER_PIPELINE` reads). A script Redis has lost
(restarted, or its scripts flushed) is sent again whole.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from routilux.store.redis.scripts import Script

#: Commands of one pipeline in reads of many jobs (one round trip each, none holding Redis long).
READS_PER_PIPELINE: Final = 1000

#: A script call: the script, its keys and its arguments.
ScriptCall = tuple[Script, Sequence[Any], Sequence[Any]]


async def run_scripts(client: aioredis.Redis, calls: Sequence[ScriptCall],
                      before: Callable[[Any], object] | None = None) -> list[Any]:
    """Run each call in one pipeline, in order, after the commands ``before(pipe)`` queues;
    returns the scripts' results, raises the first error."""
    pipe = client.pipeline(transaction=False)
    if before is not None:
        before(pipe)
    first = len(pipe)
    for script, keys, args in calls:
        pipe.evalsha(script.sha, len(keys), *keys, *args)
    replies = await pipe.execute(raise_on_error=False)
    for reply in replies[:first]:
        if isinstance(reply, Exception):
            raise reply
    results = list(replies[first:])
    for i, result in enumerate(results):
        if isinstance(result, NoScriptError):
            script, keys, args = calls[i]
            results[i] = result = await client.eval(script.source, len(keys), *keys, *args)
        if isinstance(result, Exception):
            raise result
    return results


async def pipelined(client: aioredis.Redis, job_ids: list[str], command: Callable[[Any, str], object]) -> list[Any]:
    """``command(pipe, job_id)`` for every job, :data:`READS_PER_PIPELINE` to a round trip."""
    replies: list[Any] = []
    for start in range(0, len(job_ids), READS_PER_PIPELINE):
        pipe = client.pipeline(transaction=False)
        for job_id in job_ids[start : start + READS_PER_PIPELINE]:
            command(pipe, job_id)
        replies += await pipe.execute()
    return replies

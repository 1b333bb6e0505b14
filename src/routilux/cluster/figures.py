"""Cluster-wide figures from the owners' aggregates, not from relayed events.

Each server's metrics aggregator counts the jobs it runs, from its own bus, and hands each
finished job's metrics to the shared store (``put_job_metrics``: the blob in ``p:metrics``, its
job id in ``p:metrics:order`` scored by a counter every put increments). :class:`FinishedFigures`
tails that order — the jobs finished since its cursor, a page at a time — and folds the other
servers' into this server's aggregator (:meth:`MetricsAggregator.restore
<routilux.monitor.aggregator.MetricsAggregator.restore>`, which skips this server's own, told by
the node id in the blob). So each server's flow figures and Prometheus counters are the
cluster's, at the cost of one read per finished job, whatever the jobs' event counts, and without
any server following another's job streams (:mod:`routilux.cluster.redis_events`).

Started from cursor 0, the first catch-up is the restore at start-up of what every server stored
before. A pruned job's entry is gone from both keys: it is skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final, cast

import anyio
import redis.asyncio as aioredis

from routilux.store.redis.keys import DEFAULT_PREFIX, Keys

log = logging.getLogger("routilux.cluster")

#: Finished jobs read per round trip.
PAGE: Final = 1000
#: How often the other servers' finished jobs are folded in (seconds).
INTERVAL_SECONDS: Final = 1.0


class FinishedFigures:
    """Folds the finished jobs' stored metrics into ``fold`` (blobs → how many were folded), in
    the order they were stored, each once."""

    def __init__(
        self,
        client: aioredis.Redis,
        fold: Callable[[list[bytes]], int],
        *,
        prefix: str = DEFAULT_PREFIX,
        interval: float = INTERVAL_SECONDS,
    ) -> None:
        self.client = client
        self.fold = fold
        self.blobs, self.order, _counter = Keys(prefix).metrics_keys
        self.interval = interval
        self.cursor = 0.0  # the score of the last entry read
        self.read = 0  # blobs read (this server's own included)

    async def catch_up(self) -> int:
        """Read every entry stored since the cursor; return how many blobs were read."""
        read = 0
        while True:
            page = cast(list[tuple[bytes, float]], await self.client.zrangebyscore(
                self.order, f"({self.cursor!r}", "+inf", start=0, num=PAGE, withscores=True))
            if not page:
                return read
            found = cast(list[bytes | None], await self.client.hmget(self.blobs, [job_id for job_id, _ in page]))
            self.fold([bytes(blob) for blob in found if blob is not None])
            self.cursor = page[-1][1]
            read += len(page)
            self.read += len(page)
            if len(page) < PAGE:
                return read

    async def run(self) -> None:
        """Catch up every ``interval`` until cancelled (the caller's task group owns it)."""
        while True:
            await anyio.sleep(self.interval)
            try:
                await self.catch_up()
            except (aioredis.RedisError, OSError) as exc:
                log.warning("reading the other servers' job metrics failed: %s; retrying", exc)

"""Cluster-wide figures from the owners' aggregates, not from relayed events.

Each server's metrics aggregator counts the jobs it runs, from its own bus, and hands each
finished job's metrics to the shared store (``put_job_metrics``: the blob in ``p:metrics``, its
job id in ``p:metrics:order`` scored by a counter every put increments). :class:`ClusterFigures`
tails that order — the jobs finished since its cursor, a page at a time — and folds the other
servers' into this server's aggregator (:meth:`MetricsAggregator.restore
<routilux.monitor.aggregator.MetricsAggregator.restore>`, which skips this server's own, told by
the node id in the blob). So each server's flow figures and Prometheus counters are the
cluster's, at the cost of one read per finished job, whatever the jobs' event counts, and without
any server following another's job streams (:mod:`routilux.cluster.redis_events`).

Started from cursor 0, the first catch-up is the restore at start-up of what every server stored
before. A pruned job's entry is gone from both keys: it is skipped.

Live jobs are counted by their owners too: every ``interval`` each server publishes its live jobs
by (flow, status) in the hash ``p:figures:live`` (field: its node id; value: when, and the counts)
and reads the others' — one write and one read a second per server, whatever the load. An entry
older than :data:`STALE_SECONDS` (a server that died without removing it) is ignored and removed.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Final, cast

import anyio
import msgspec
import redis.asyncio as aioredis

from routilux.store.redis.keys import DEFAULT_PREFIX, Keys

log = logging.getLogger("routilux.cluster")

#: Finished jobs read per round trip.
PAGE: Final = 1000
#: How often the other servers' finished jobs are folded in and live counts exchanged (seconds).
INTERVAL_SECONDS: Final = 1.0
#: A server's published live counts older than this are a dead server's: ignored and removed.
STALE_SECONDS: Final = 10.0

LiveCounts = Counter[tuple[str, str]]  # (flow_id, status) -> live jobs


class _Published(msgspec.Struct, array_like=True):
    at: float  # time.time() when published
    counts: list[tuple[str, str, int]]


_encode = msgspec.json.Encoder().encode
_decode_published = msgspec.json.Decoder(_Published).decode


class ClusterFigures:
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
        self.live_key = f"{prefix}:figures:live"

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

    async def exchange_live(self, node_id: str, mine: LiveCounts) -> LiveCounts:
        """Publish this server's live counts (``mine``); the other servers' summed."""
        now = time.time()
        published = _Published(now, [(flow, status, n) for (flow, status), n in mine.items() if n])
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hset(self.live_key, node_id, _encode(published))
            pipe.hgetall(self.live_key)
            _written, every = await pipe.execute()
        others: LiveCounts = Counter()
        stale = []
        for node, raw in cast(dict[bytes, bytes], every).items():
            if node.decode() == node_id:
                continue
            try:
                entry = _decode_published(raw)
            except msgspec.MsgspecError:
                entry = _Published(0.0, [])
            if entry.at < now - STALE_SECONDS:
                stale.append(node)
                continue
            for flow, status, n in entry.counts:
                others[(flow, status)] += n
        if stale:
            await self.client.hdel(self.live_key, *stale)
        return others

    async def withdraw(self, node_id: str) -> None:
        """This server stops: its live counts are no longer the cluster's."""
        await self.client.hdel(self.live_key, node_id)

    async def run(
        self, node_id: str, mine: Callable[[], LiveCounts], others: Callable[[LiveCounts], None]
    ) -> None:
        """Every ``interval`` until cancelled (the caller's task group owns it): fold in the jobs
        that ended elsewhere, publish this server's live counts (``mine()``) and hand the others'
        to ``others``; on the way out, withdraw them."""
        try:
            while True:
                await anyio.sleep(self.interval)
                try:
                    await self.catch_up()
                    others(await self.exchange_live(node_id, mine()))
                except (aioredis.RedisError, OSError) as exc:
                    log.warning("exchanging figures with the other servers failed: %s; retrying", exc)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                try:
                    await self.withdraw(node_id)
                except (aioredis.RedisError, OSError):
                    pass  # stale within STALE_SECONDS anyway

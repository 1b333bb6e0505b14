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

Live jobs are counted by their owners too: each server publishes its live jobs by (flow, status)
and its runtimes' demand (live jobs, activations in threads) in the hash ``p:figures:live``
(field: its node id; value: when, and the figures) within :data:`PUBLISH_SECONDS` of a change,
and at least every ``interval``; a server reads the others' before it answers a figure
(:meth:`ClusterFigures.refresh`, which also folds in the jobs that ended since) and every
``interval``. An entry older than :data:`STALE_SECONDS` (a server that died without removing it)
is ignored and removed. All this costs a few Redis calls a second per server, whatever the load.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Final, Protocol, cast

import anyio
import msgspec
import redis.asyncio as aioredis

from routilux.store.redis.keys import DEFAULT_PREFIX, Keys

log = logging.getLogger("routilux.cluster")

#: Finished jobs read per round trip.
PAGE: Final = 1000
#: How often the other servers' finished jobs are folded in and live counts exchanged (seconds).
INTERVAL_SECONDS: Final = 1.0
#: A server's published live figures older than this are a dead server's: ignored and removed.
STALE_SECONDS: Final = 10.0
#: A change of this server's live figures is published within this long (see PACE).
PUBLISH_SECONDS: Final = 0.05
#: ... but no sooner than this many times what encoding them took after the last publish.
PACE: Final = 50

JobCounts = Counter[tuple[str, str]]  # (flow_id, status) -> live jobs
RuntimeDemand = dict[str, tuple[int, int]]  # runtime_id -> (live jobs, activations in threads)


class Aggregates(Protocol):
    """What this reads and feeds of the node's metrics aggregator
    (:class:`routilux.monitor.MetricsAggregator`, a sibling layer it does not import)."""

    live_changes: int

    def restore(self, stored: list[bytes]) -> int: ...

    def live_counts(self) -> Counter[tuple[str, str]]: ...

    def runtime_demand(self) -> dict[str, tuple[int, int]]: ...

    def set_others(self, jobs: Counter[tuple[str, str]], runtimes: dict[str, tuple[int, int]]) -> None: ...


class _Published(msgspec.Struct, array_like=True):
    at: float  # time.time() when published
    jobs: list[tuple[str, str, int]]
    runtimes: list[tuple[str, int, int]]


_encode = msgspec.json.Encoder().encode
_decode_published = msgspec.json.Decoder(_Published).decode


class ClusterFigures:
    """Folds the finished jobs' stored metrics into ``aggregator`` (its ``restore`` skips this
    node's own), in the order they were stored, each once; and exchanges live figures."""

    def __init__(
        self,
        client: aioredis.Redis,
        aggregator: Aggregates,
        *,
        node_id: str,
        prefix: str = DEFAULT_PREFIX,
        interval: float = INTERVAL_SECONDS,
    ) -> None:
        self.client = client
        self.aggregator = aggregator
        self.node_id = node_id
        self.blobs, self.order, _counter = Keys(prefix).metrics_keys
        self.live_key = f"{prefix}:figures:live"
        self.interval = interval
        self.cursor = 0.0  # the score of the last entry read
        self.read = 0  # blobs read (this server's own included)
        self._lock = anyio.Lock()  # one catch-up at a time: each entry is folded once
        self._stale: list[bytes] = []  # dead servers' entries the last read found
        self._live = b""  # this server's live figures, encoded

    async def catch_up(self) -> int:
        """Fold every entry stored since the cursor; return how many blobs were read."""
        async with self._lock:
            read = 0
            while True:
                page = cast(list[tuple[bytes, float]], await self.client.zrangebyscore(
                    self.order, f"({self.cursor!r}", "+inf", start=0, num=PAGE, withscores=True))
                if not page:
                    return read
                found = cast(list[bytes | None],
                             await self.client.hmget(self.blobs, [job_id for job_id, _ in page]))
                self.aggregator.restore([bytes(blob) for blob in found if blob is not None])
                self.cursor = page[-1][1]
                read += len(page)
                self.read += len(page)
                if len(page) < PAGE:
                    return read

    async def refresh(self) -> None:
        """Before a figure is answered: the jobs that ended elsewhere, the others' live figures
        (if Redis does not answer, the figures are answered as they were)."""
        try:
            await self._refresh()
        except (aioredis.RedisError, OSError) as exc:
            log.warning("reading the other servers' figures failed: %s", exc)

    async def _refresh(self) -> None:
        await self.catch_up()
        self._take_others(cast(dict[bytes, bytes], await self.client.hgetall(self.live_key)), time.time())

    def _encode_live(self) -> None:
        aggregator = self.aggregator
        self._live = _encode(_Published(
            time.time(),
            [(flow, status, n) for (flow, status), n in aggregator.live_counts().items()],
            [(rid, jobs, threads) for rid, (jobs, threads) in aggregator.runtime_demand().items()]))

    async def publish(self) -> None:
        """This server's live figures (as last encoded), for the others."""
        await self.client.hset(self.live_key, self.node_id, self._live)

    def _take_others(self, every: dict[bytes, bytes], now: float) -> None:
        jobs: JobCounts = Counter()
        runtimes: RuntimeDemand = {}
        stale = []
        for node, raw in every.items():
            if node.decode() == self.node_id:
                continue
            try:
                entry = _decode_published(raw)
            except msgspec.MsgspecError:
                entry = _Published(0.0, [], [])
            if entry.at < now - STALE_SECONDS:
                stale.append(node)
                continue
            for flow, status, n in entry.jobs:
                jobs[(flow, status)] += n
            for rid, live, threads in entry.runtimes:
                had = runtimes.get(rid, (0, 0))
                runtimes[rid] = (had[0] + live, had[1] + threads)
        self.aggregator.set_others(jobs, runtimes)
        self._stale = stale

    async def run(self) -> None:
        """Until cancelled (the caller's task group owns it): publish this server's live figures
        within :data:`PUBLISH_SECONDS` of a change and every ``interval``; every ``interval`` fold
        in the jobs that ended elsewhere and read the others' figures. On the way out, withdraw
        this server's figures.

        Publishing walks the live jobs: with many of them it is paced so that it takes at most
        1/:data:`PACE` of the time (10,000 live jobs: a publish every few tenths of a second)."""
        published_at, published = -1.0, -1
        pause = PUBLISH_SECONDS
        try:
            while True:
                await anyio.sleep(pause)
                now = anyio.current_time()
                changes = self.aggregator.live_changes
                due = now - published_at >= self.interval
                if changes == published and not due:
                    continue
                try:
                    started = time.perf_counter()
                    self._encode_live()
                    pause = max(PUBLISH_SECONDS, PACE * (time.perf_counter() - started))
                    await self.publish()
                    published = changes
                    if due:
                        published_at = now
                        await self._refresh()
                        if self._stale:
                            await self.client.hdel(self.live_key, *self._stale)
                except (aioredis.RedisError, OSError) as exc:
                    published_at = now  # retried at the next interval
                    log.warning("exchanging figures with the other servers failed: %s; retrying", exc)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                try:
                    await self.client.hdel(self.live_key, self.node_id)
                except (aioredis.RedisError, OSError):
                    pass  # stale within STALE_SECONDS anyway

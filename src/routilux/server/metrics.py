"""The metrics aggregator's place in the server: fed by the bus, told slot capacities by the flow
catalogue, and handing each finished job's metrics to the store (so they outlive memory and a
restart, and are pruned with the job).

The aggregator calls back synchronously when a job ends; the blob goes through an unbounded
in-process channel to a writer task, so the aggregator never waits for the store and nothing is
dropped. Both tasks belong to the lifespan's task group and end when the bus closes.

In a cluster the aggregator counts this server's jobs only (the others' events reach this bus only
while a socket here watches them); the other servers' jobs are folded in from what their owners
stored as they end (:class:`~routilux.cluster.figures.ClusterFigures`, a task of the
aggregator's), so the flow figures and Prometheus counters stay the cluster's.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskGroup

from routilux.engine import Engine
from routilux.engine.slots import DEFAULT_SLOT_CAPACITY
from routilux.monitor import MetricsAggregator
from routilux.server.catalog import FlowCatalog
from routilux.store.backoff import Backoff
from routilux.store.base import Store
from routilux.store.errors import StoreUnreachable

if TYPE_CHECKING:
    from routilux.server.cluster_node import ClusterNode

log = logging.getLogger("routilux.server")


class SlotCapacities:
    """flow_id -> {(routine_id, slot): capacity}, from the flow's compiled plan (cached per
    revision of the flow)."""

    def __init__(self, catalog: FlowCatalog) -> None:
        self.catalog = catalog
        self._cache: dict[str, tuple[int, Mapping[tuple[str, str], int]]] = {}

    def __call__(self, flow_id: str) -> Mapping[tuple[str, str], int]:
        entry = self.catalog.find(flow_id)
        if entry is None or entry.plan is None:
            return {}
        cached = self._cache.get(flow_id)
        if cached is not None and cached[0] == entry.revision:
            return cached[1]
        capacities = {
            (rid, name): spec.capacity or DEFAULT_SLOT_CAPACITY
            for rid, routine in entry.plan.routines.items()
            for name, spec in routine.slot_specs.items()
        }
        self._cache[flow_id] = (entry.revision, capacities)
        return capacities


async def start_metrics(
    tg: TaskGroup, engine: Engine, store: Store, catalog: FlowCatalog, node: ClusterNode | None = None
) -> MetricsAggregator:
    """Subscribe the aggregator, fold in the finished jobs the store kept, start its tasks.

    In a cluster (``node``) the aggregator ignores the other servers' jobs' relayed events and
    folds in their stored metrics as they end; a job's metrics are stored by the server that ran
    it only."""
    send, receive = anyio.create_memory_object_stream[tuple[str, str, bytes]](math.inf)

    def finished(job_id: str, flow_id: str, blob: bytes) -> None:
        send.send_nowait((job_id, flow_id, blob))

    aggregator = MetricsAggregator(engine.bus, capacities=SlotCapacities(catalog), on_finished=finished,
                                   node_id=node.node_id if node is not None else None,
                                   is_remote=node.bridge.is_remote if node is not None else None)
    figures = None
    if node is None:
        restored = aggregator.restore(await store.all_job_metrics())
    else:
        from routilux.cluster.figures import ClusterFigures

        figures = ClusterFigures(node.client, aggregator, node_id=node.node_id, prefix=node.bridge.prefix)
        restored = await figures.catch_up()  # every node's, as the store kept them
        aggregator.refresh = figures.refresh
    if restored:
        log.info("metrics of %d finished job(s) restored from the store", restored)

    async def aggregate() -> None:
        try:
            async with anyio.create_task_group() as parts:
                if figures is not None:
                    parts.start_soon(figures.run)
                await aggregator.run()
                parts.cancel_scope.cancel()
        finally:
            send.close()

    async def keep() -> None:
        """Write what ended, a burst at a time (one store operation per burst)."""
        async with receive:
            async for first in receive:
                batch = [first]
                while True:
                    try:
                        batch.append(receive.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):  # drained, or the aggregator ended
                        break
                backoff = Backoff()
                while True:
                    try:
                        await store.put_job_metrics(batch)
                        break
                    except StoreUnreachable as exc:  # Redis lost: written once it is back...
                        if receive.statistics().open_send_streams == 0:  # ...unless the server stops
                            log.error("the metrics of %d finished job(s) were not stored (the server stops "
                                      "while the store is unreachable): %s", len(batch), exc.message)
                            break
                        if not backoff.failures:
                            log.error("the metrics of %d finished job(s) wait for the store: %s", len(batch),
                                      exc.message)
                        await backoff.sleep()
                    except Exception:  # the store's trouble must not take the server down
                        log.exception("could not store the metrics of %d finished job(s): %s", len(batch),
                                      ", ".join(job_id for job_id, _flow_id, _blob in batch[:20]))
                        break

    tg.start_soon(aggregate)
    tg.start_soon(keep)
    return aggregator


def runtime_pools(engine: Engine) -> dict[str, tuple[int, bool]]:
    """Each runtime's thread pool, as configured: (threads, shared) — what the aggregator needs
    to turn sync activations into busy and queued threads."""
    shared = engine.settings.shared_pool_size
    return {rid: (r.thread_pool_size or shared, r.thread_pool_size == 0) for rid, r in engine.runtimes.items()}

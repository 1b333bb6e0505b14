"""Everything the control plane is made of, built once by the lifespan and handed to the edge.

A request handler or socket reaches these through the application; nothing here knows HTTP, so
the same services serve a route, a forwarded request and (later) any other edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from routilux.engine import Engine
from routilux.monitor import MetricsAggregator
from routilux.server.catalog import FlowCatalog
from routilux.server.control import JobControl
from routilux.server.evaluations import Evaluations
from routilux.server.eventlog import EventLog, Recorder
from routilux.server.jobs import JobLocator
from routilux.server.retention import forget_locally
from routilux.server.runtimes import Runtimes
from routilux.server.settings import Settings
from routilux.store.base import Store

if TYPE_CHECKING:
    from routilux.server.cluster_node import ClusterNode


@dataclass(frozen=True)
class Services:
    settings: Settings
    engine: Engine
    store: Store
    catalog: FlowCatalog
    runtimes: Runtimes
    jobs: JobLocator
    control: JobControl
    recorder: Recorder
    events: EventLog
    metrics: MetricsAggregator
    #: ``evaluate`` requests, a few at a time.
    evaluations: Evaluations
    #: This server's membership of a cluster when ``ROUTILUX_REDIS_URL`` is set.
    cluster_node: ClusterNode | None = None
    def stop_taking_work(self) -> None:
        """The server is going to stop: refuse new jobs, and let every ``/wait`` answer now (in a
        cluster, the node also leaves the node list: no job is placed or handed to it any more)."""
        self.control.stopping.set()
        if self.cluster_node is not None:
            self.cluster_node.stopping.set()

    async def delete_jobs(self, job_ids: list[str]) -> int:
        """Delete finished jobs everywhere: the store, this server's memory, and in a cluster the
        memory of the servers that ran them. Returns how many the store held."""
        forget_locally(self.engine, self.recorder.history, job_ids)
        deleted = await self.store.delete_jobs(job_ids)
        if self.cluster_node is not None:
            await self.cluster_node.forget_everywhere(job_ids)
        return deleted

"""What every request handler reaches through ``request.app.state.services``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request

from routilux.api.catalog import FlowCatalog
from routilux.api.errors import APIError, not_found
from routilux.api.recorder import Recorder
from routilux.api.settings import Settings
from routilux.engine import Engine, Job
from routilux.store.base import JobRecord, Store

if TYPE_CHECKING:
    from routilux.api.cluster import ClusterNode
    from routilux.cluster.redis_events import RedisEventBridge
    from routilux.api.ws.session import Sessions
    from routilux.monitor import MetricsAggregator


@dataclass
class Services:
    settings: Settings
    engine: Engine
    store: Store
    catalog: FlowCatalog
    recorder: Recorder
    sessions: Sessions
    metrics: MetricsAggregator
    #: This server's membership of a cluster when ``ROUTILUX_REDIS_URL`` is set.
    cluster_node: ClusterNode | None = None

    @property
    def cluster(self) -> RedisEventBridge | None:
        """The event bridge (jobs of other servers, for WebSockets), in a cluster."""
        return self.cluster_node.bridge if self.cluster_node is not None else None

    def live_job(self, job_id: str) -> Job | None:
        return self.engine.get_job(job_id)

    async def any_job(self, job_id: str) -> Job | JobRecord:
        """The live job, or its stored record once it has left memory; 404 if neither."""
        job = self.engine.get_job(job_id)
        if job is not None:
            return job
        record = await self.store.get_job(job_id)
        if record is None:
            raise not_found("job", job_id, "GET /api/jobs lists the jobs")
        return record

    async def controllable_job(self, job_id: str, action: str) -> Job:
        """A live job to act on. A finished job that left memory is 409, like any terminal job."""
        found = await self.any_job(job_id)
        if isinstance(found, Job):
            return found
        raise APIError(
            409,
            "illegal_transition",
            f"cannot {action} job {job_id}: it is {found.status}",
            job_id=job_id,
            status=found.status,
            action=action,
        )


def services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]

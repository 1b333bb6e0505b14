"""Finding a job wherever it is, and how a job is described to clients and to the store.

A job may be live in this server's engine, running on another server of the cluster (its events
reach this one through Redis), or only remembered by the store once it ended and left memory.
:class:`JobLocator` is the one place that knows that order, so REST reads, controls and
WebSockets all find the same job the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from routilux.bus import LIVE_STATUSES, JobStatus
from routilux.engine import Engine, Job
from routilux.engine.flow import is_valid_id
from routilux.engine.job import JobSnapshot
from routilux.server.errors import Conflict, job_not_found
from routilux.store.base import JobQuery, JobRecord, Store

if TYPE_CHECKING:
    from routilux.cluster.nodes import ClusterMembership
    from routilux.cluster.redis_events import RedisEventBridge, RemoteJob


#: In a cluster, how many live jobs of each status are read from the shared store at most.
LIVE_PER_STATUS = 10_000


class JobLocator:
    """Live here, running elsewhere (a cluster), or stored: in that order."""

    def __init__(
        self,
        engine: Engine,
        store: Store,
        *,
        bridge: RedisEventBridge | None = None,
        membership: ClusterMembership | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.bridge = bridge
        self.membership = membership

    def live(self, job_id: str) -> Job | None:
        return self.engine.get_job(job_id)

    def is_remote(self, job_id: str) -> bool:
        """Whether ``job_id`` is known to run on another server (its events are relayed here)."""
        return self.bridge is not None and self.bridge.is_remote(job_id)

    async def any_job(self, job_id: str) -> Job | JobRecord:
        """The live job, or its stored record once it has left memory; NotFound if neither."""
        job = self.engine.get_job(job_id)
        if job is not None:
            return job
        record = await self.store.get_job(job_id)
        if record is None:
            raise job_not_found(job_id)
        return record

    async def controllable(self, job_id: str, action: str) -> Job:
        """A live job to act on. A finished job that left memory conflicts, like any ended job."""
        found = await self.any_job(job_id)
        if isinstance(found, Job):
            return found
        raise Conflict(
            "illegal_transition",
            f"cannot {action} job {job_id}: it is {found.status}",
            job_id=job_id,
            status=found.status,
            action=action,
        )

    async def all_live(self) -> list[Job | JobRecord]:
        """Every job not yet ended: this server's, and in a cluster the other servers', as their
        owners last recorded them in the shared store (at most :data:`LIVE_PER_STATUS` a status)."""
        local: dict[str, Job | JobRecord] = {j.job_id: j for j in self.engine.jobs.values() if not j.is_terminal}
        found = list(local.values())
        if self.membership is not None:
            for status in sorted(LIVE_STATUSES):
                records, _total = await self.store.list_jobs(
                    JobQuery(status=status, limit=LIVE_PER_STATUS, with_state=False))
                found += [r for r in records if r.job_id not in local]
        return found

    async def watchable(self, job_id: str) -> Job | JobRecord | RemoteJob | None:
        """The job as a socket may watch it: live here, running on another server (whose events
        reach this one through Redis), or recorded; None for an id that names nothing."""
        if not is_valid_id(job_id):
            return None
        found: Job | JobRecord | RemoteJob | None = self.engine.get_job(job_id)
        if found is None and self.bridge is not None and self.membership is not None:
            # Another server's job: only its events say how far it has got. A job started an
            # instant ago may have no event in Redis yet, but its owner is recorded before its id
            # was given out.
            found = await self.bridge.lookup(job_id)
            if found is None:
                owner = await self.membership.owner_of(job_id)
                if owner is not None and owner.node != self.membership.node_id:
                    found = self.bridge.follow(job_id, owner.flow_id, owner.node)
        return found or await self.store.get_job(job_id)


def job_view(job: Job | JobRecord) -> JobSnapshot:
    """A job as the API shows it, whether it is live or only remembered by the store."""
    if isinstance(job, Job):
        return job.snapshot()
    fields = {name: getattr(job, name) for name in JobSnapshot.__struct_fields__ if name != "status"}
    return JobSnapshot(status=JobStatus(job.status), **fields)


def job_record(job: Job, *, with_state: bool) -> JobRecord:
    """What the store keeps of ``job``; the full state only when asked (it is costly)."""
    snapshot = msgspec.structs.asdict(job.snapshot())
    snapshot["status"] = job.status.value
    state: dict[str, Any] = {}
    if with_state:
        state = {key: value for key, value in job.state().items() if key not in snapshot}
    return JobRecord(**snapshot, state=state)


def snapshot_state_of(found: Job | JobRecord) -> dict[str, Any]:
    """What a socket's ``snapshot`` frame says of a job this server holds (or has a record of)."""
    if isinstance(found, Job):
        return {
            "status": found.status.value,
            "flow_id": found.flow_id,
            "last_seq": found.last_seq,
            "routine_states": msgspec.to_builtins(found.routine_states),
            "error": found.error,
        }
    return {
        "status": found.status,
        "flow_id": found.flow_id,
        "last_seq": None,
        "routine_states": found.state.get("routine_states", {}),
        "error": found.error,
    }

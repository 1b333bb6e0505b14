"""Finding a job wherever it is, and how a job is described to clients and to the store.

A job may be live in this server's engine, running on another server of the cluster (its events
reach this one through Redis), or only remembered by the store once it ended and left memory.
:class:`JobLocator` is the one place that knows that order, so REST reads, controls and
WebSockets all find the same job the same way.
"""

from __future__ import annotations

import heapq
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec

from routilux.bus import LIVE_STATUSES, TERMINAL_STATUSES
from routilux.engine import Engine, Job
from routilux.engine.flow import is_valid_id
from routilux.server.errors import Conflict, job_not_found
from routilux.server.job_views import error_fields, routine_states_view
from routilux.store.base import JobQuery, JobRecord, Store
from routilux.store.errors import StoreUnreachable

if TYPE_CHECKING:
    from routilux.cluster.nodes import ClusterMembership
    from routilux.cluster.redis_events import RedisEventBridge, RemoteJob


#: In a cluster, how many live jobs of each status are read from the shared store at most.
LIVE_PER_STATUS = 10_000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def listing_key(job: Job | JobRecord) -> tuple[int, str]:
    """The order of a job listing, as every store keeps it: newest first (to the microsecond a
    store keeps), then by job id."""
    return -((job.created_at - _EPOCH) // _MICROSECOND), job.job_id


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

    async def listing(self, query: JobQuery) -> tuple[list[Job | JobRecord], int]:
        """One page of jobs and how many match, as the jobs are now.

        A job's record is committed before its id is given out, so the store lists every job;
        but the status it has there may lag (``idle`` → ``running`` is never written, other
        changes a moment after they happen). A status filter is therefore applied to this
        server's jobs as they are in memory, and to the store only for the others: on a single
        server every live job is in memory, so a live status is answered from memory alone; a
        finished status from the store, without the jobs that just ended here (their end may not
        be committed yet), merged with those from memory. In a cluster the other servers' jobs
        are filtered by the status their owners last recorded.
        """
        status = query.status
        if status is None:
            records, total = await self.store.list_jobs(query)
            return [self.engine.get_job(r.job_id) or r for r in records], total
        local = [
            job for job in self.engine.jobs.values()
            if (query.flow_id is None or job.flow_id == query.flow_id)
            and (query.runtime_id is None or job.runtime_id == query.runtime_id)
        ]
        mine = [job for job in local if job.status == status]
        if status in TERMINAL_STATUSES:
            exclude = frozenset(job.job_id for job in mine)  # an ended status is never left: only ours may lag
        elif self.membership is not None:
            exclude = frozenset(job.job_id for job in local)  # ours may be stored with a status they left
        else:
            page = heapq.nsmallest(query.offset + query.limit, mine, key=listing_key)[query.offset:]
            return list(page), len(mine)
        return await self._merged(mine, msgspec.structs.replace(query, exclude=exclude))

    async def _merged(self, mine: list[Job], query: JobQuery) -> tuple[list[Job | JobRecord], int]:
        """``query``'s page of ``mine`` (in memory) and the store's jobs (``query.exclude`` left
        out, so the two never overlap), in listing order, and the total of both.

        The store pages by position; this server's jobs come between its records. Stored job
        number ``i`` is at position ``i + (how many of mine come before it)``, which is from ``i``
        to ``i + len(mine)``, so the page's stored jobs are among numbers ``offset - len(mine)``
        to ``offset + limit``: that is what is read (one query, whatever the offset), and the
        position of the first one read follows from how many of mine come before it.
        """
        offset, limit = query.offset, query.limit
        wanted = offset + limit
        head: list[Job | JobRecord] = list(heapq.nsmallest(wanted, mine, key=listing_key))
        first = max(0, offset - len(mine))
        fetched, stored = await self.store.list_jobs(msgspec.structs.replace(query, offset=first, limit=wanted - first))
        total = len(mine) + stored
        base = 0
        if first > 0:
            if not fetched:
                return [], total  # fewer stored jobs than ``first``: the page is past the end
            boundary = listing_key(fetched[0])
            base = first + sum(1 for job in mine if listing_key(job) < boundary)
            head = [job for job in head if listing_key(job) > boundary]
        merged = sorted([*head, *fetched], key=listing_key)
        return merged[offset - base : offset - base + limit], total

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
            found = await self._remote(job_id)
        return found or await self.store.get_job(job_id)

    async def _remote(self, job_id: str) -> RemoteJob | None:
        """Another server's job: only its events say how far it has got. A job started an
        instant ago may have no event in Redis yet, but its owner is recorded before its id was
        given out. :class:`StoreUnreachable` if Redis cannot be reached (like the store's reads)."""
        assert self.bridge is not None and self.membership is not None
        from routilux.store.redis.connection import CONNECTION_ERRORS  # a cluster: Redis is there

        try:
            found = await self.bridge.lookup(job_id)
            if found is None:
                owner = await self.membership.owner_of(job_id)
                if owner is not None and owner.node != self.membership.node_id:
                    found = self.bridge.follow(job_id, owner.flow_id, owner.node)
        except CONNECTION_ERRORS as exc:
            raise StoreUnreachable(f"looking job {job_id} up in the cluster failed: {exc}") from None
        return found


def job_record(job: Job, *, with_state: bool) -> JobRecord:
    """What the store keeps of ``job``; the full state only when asked (it is costly)."""
    snapshot = msgspec.structs.asdict(job.snapshot())
    snapshot["status"] = job.status.value
    state: dict[str, Any] = {}
    if with_state:
        state = {key: value for key, value in job.state().items() if key not in snapshot}
    return JobRecord(**snapshot, state=state)


def snapshot_state_of(found: Job | JobRecord) -> dict[str, Any]:
    """What a socket's ``snapshot`` frame says of a job this server holds (or has a record of),
    shown as REST shows it (``error`` as text, ``error_detail`` beside it)."""
    if isinstance(found, Job):
        status, last_seq, states = found.status.value, found.last_seq, msgspec.to_builtins(found.routine_states)
    else:
        status, last_seq, states = found.status, None, found.state.get("routine_states", {})
    return {
        "status": status,
        "flow_id": found.flow_id,
        "last_seq": last_seq,
        "routine_states": routine_states_view(states),
        **error_fields(found.error),
    }

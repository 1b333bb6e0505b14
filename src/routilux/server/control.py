"""Changes to jobs that a client is told about only once they are saved.

A 2xx for a change means the change is committed to the store: a started job's record and
checkpoint exist (so a restart never loses a job whose id was given out), a paused, resumed,
cancelled, completed or failed job's record and checkpoint say so, and a post is in the store's
post log. Concurrent requests share a commit: each awaits its own
``put_job``, and the store's single writer commits everything queued in one transaction (group
commit), so throughput holds while every answer waits for the disk.

When the store refuses, the change is not acknowledged: a job that could not be recorded is
cancelled and forgotten (nobody has its id), and the store's error reaches the client as 503
``store_unavailable``. A control action already applied to the live job stays applied — the job
is in memory, and the recorder writes its record with the next change — but the client is told
it was not saved, and may retry: every control action is idempotent or answers 409 on a job that
has moved on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import anyio

from routilux.bus.events import utc_now
from routilux.engine import Engine, Entry, FlowPlan, Job
from routilux.engine.ids import new_job_id
from routilux.server.checkpoints import Checkpointer
from routilux.server.errors import Unavailable
from routilux.server.jobs import job_record
from routilux.store.base import Store
from routilux.store.errors import OwnershipLost, StoreError

if TYPE_CHECKING:
    from routilux.cluster.nodes import ClusterMembership

log = logging.getLogger("routilux.server")

NOT_SAVED = "not saved: the store refused the job's record"


class JobControl:
    def __init__(
        self,
        engine: Engine,
        store: Store,
        *,
        checkpointer: Checkpointer | None = None,
        membership: ClusterMembership | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        #: Durable jobs' checkpoints are committed with their records (None: not kept).
        self.checkpointer = checkpointer
        #: In a cluster: the job's owner is recorded before its id is given out.
        self.membership = membership
        #: Set when a graceful stop begins (SIGTERM, Ctrl-C): no job starts any more, and long
        #: polls answer at once.
        self.stopping = anyio.Event()

    async def start(
        self,
        plan: FlowPlan,
        *,
        runtime_id: str | None,
        entries: Iterable[Entry],
        timeout: float | None,
        complete_when_idle: bool,
        durable: bool | None = None,
    ) -> Job:
        """Start a job and return it once its record is committed (and, in a cluster, its owner
        known to every server). ``durable`` overrides the flow's ``execution.durable`` for this
        job (None: the flow decides)."""
        if self.stopping.is_set():
            raise Unavailable("shutting_down", "the server is stopping and starts no new job; retry on another "
                              "server or after it restarted", retry_after=5)
        job_id = new_job_id()
        if self.membership is not None:  # owned before it starts: before any event of it
            runtime = self.engine.get_runtime(runtime_id).runtime_id
            await self.membership.own(job_id, plan.flow_id, runtime, utc_now())
        try:
            job = await self.engine.start_job(plan, runtime_id=runtime_id, entries=entries, timeout=timeout,
                                              complete_when_idle=complete_when_idle, job_id=job_id)
        except BaseException:
            if self.membership is not None:
                self.membership.release_later([job_id])
            raise
        if durable is not None and self.checkpointer is not None:
            self.checkpointer.choose(job, durable)
        try:
            await self._commit(job, with_state=False)
        except BaseException as exc:
            # Nobody has this job's id: it must not run on unrecorded.
            if not job.is_terminal:
                job.cancel(NOT_SAVED)
            self.engine.forget_job(job.job_id)
            if isinstance(exc, StoreError):
                log.error("job %s of flow %s was not started: %s", job.job_id, job.flow_id, exc.message)
            raise
        return job

    async def saved(self, job: Job) -> None:
        """Commit ``job``'s record as it is now (with its final state once it has ended), and the
        checkpoint of a durable live job (its breakpoints too), in one commit."""
        await self._commit(job, with_state=job.is_terminal)

    async def _commit(self, job: Job, *, with_state: bool) -> None:
        """Commit the record (and the checkpoint) in one write: they stand or fall together."""
        record = job_record(job, with_state=with_state)
        checkpointer = None if job.is_terminal else self.checkpointer
        taken = [] if checkpointer is None else await checkpointer.take([job], force=True)
        await self.store.put_job(record, checkpoint=taken[0].record if taken else None)
        if checkpointer is not None:
            checkpointer.written_as(taken)

    async def post(self, job: Job, routine_id: str, slot: str, data: Any, *, timeout: float) -> None:
        """Deliver ``data`` to ``job``; for a durable job, return once the post is committed too
        (a restart then delivers it again if the job's last checkpoint predates it)."""
        if self.checkpointer is None:
            await job.post(routine_id, slot, data, timeout=timeout)
            return
        try:
            await self.checkpointer.posts.deliver(job, routine_id, slot, data, timeout=timeout)
        except OwnershipLost:
            # Another server owns the job now (this one stalled and lost it): not acknowledged,
            # the client retries there.
            raise Unavailable("owner_unavailable", f"job {job.job_id} moved to another server; retry",
                              retry_after=1, job_id=job.job_id, moving=True) from None

"""Jobs that outlive the process: each durable live job's checkpoint, kept in the store.

A job's checkpoint (:meth:`routilux.engine.Job.checkpoint_bytes`) is written

- when the job starts and on every control action (with the answer: see :mod:`.control`);
- as soon as it goes idle or is paused;
- while it runs, at least every ``every_activations`` activations or ``interval`` seconds,
  whichever comes first;
- for every live job when the server stops gracefully.

Everything due at once is written together: the checkpoints are taken one after another (each a
consistent picture of its job), then written concurrently, so the store's single writer commits
them in one transaction. A job is written again only if it changed since (``job.changes``). A
checkpoint is queued after the events it has seen (the recorder's ``caught_up``), so the store
never holds a checkpoint whose events it lacks: a resumed job's events have no gap.

Posts are kept separately (:meth:`JobPosts.deliver`): a post is numbered, delivered into the job
and appended durably before its 202; a checkpoint says how many posts it already holds, so a
restart replays exactly those that came after it, in order.

A job is durable if its flow is (``execution.durable``, the default) unless its start chose
otherwise (``durable`` in the start request): :meth:`Checkpointer.choose`.

A value a checkpoint cannot hold (``ctx.state`` and shared data must be JSON) is reported on the
job: one ``log`` event at level ``error`` (``fields.checkpoint_error``), and the job's state says
it (:meth:`Checkpointer.checkpoint_error`) until a checkpoint succeeds again, which another
``log`` event announces. The job keeps running meanwhile, without a newer checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import Any, NamedTuple

import anyio
import msgspec

from routilux.bus import Event, Gap
from routilux.bus.consumer import BatchConsumer
from routilux.bus.events import utc_now
from routilux.debug.breakpoints import make_breakpoint
from routilux.debug.session import JobDebugger, attach
from routilux.engine import Engine, Job
from routilux.engine.errors import CheckpointError
from routilux.server.errors import Unavailable
from routilux.store.base import CheckpointRecord, Store, StoredPost
from routilux.store.errors import OwnershipLost, StoreError

log = logging.getLogger("routilux.server")

DEFAULT_INTERVAL = 1.0
DEFAULT_EVERY_ACTIVATIONS = 100


class SavedBreakpoint(msgspec.Struct, frozen=True, kw_only=True):
    """A breakpoint as a checkpoint keeps it (the debugger is the server's, not the engine's)."""

    breakpoint_id: str
    type: str
    routine_id: str | None = None
    slot_name: str | None = None
    event_name: str | None = None
    source: str | None = None
    target: str | None = None
    condition: str | None = None
    enabled: bool = True
    hit_count: int = 0
    created_at: datetime


class SavedJob(msgspec.Struct, frozen=True):
    """What the store keeps of a live job: the engine's checkpoint, as the engine encoded it, and
    the job's breakpoints."""

    job: msgspec.Raw
    breakpoints: list[SavedBreakpoint] = []
    #: The start's choice of durability, when it overrode the flow's (see :meth:`Checkpointer.choose`).
    durable: bool | None = None


_encode_saved = msgspec.json.Encoder().encode
decode_saved = msgspec.json.Decoder(SavedJob).decode


def saved_job(job: Job, durable: bool | None = None) -> bytes:
    """The job's checkpoint with its breakpoints and the start's choice of durability
    (CheckpointError if a value cannot be kept)."""
    engine_part = msgspec.Raw(job.checkpoint_bytes())
    debugger = job.probe if isinstance(job.probe, JobDebugger) else None
    breakpoints = [] if debugger is None else [
        SavedBreakpoint(breakpoint_id=bp.breakpoint_id, type=bp.type, routine_id=bp.routine_id,
                        slot_name=bp.slot_name, event_name=bp.event_name, source=bp.source, target=bp.target,
                        condition=bp.condition, enabled=bp.enabled, hit_count=bp.hit_count, created_at=bp.created_at)
        for bp in debugger.breakpoints.values()
    ]
    return _encode_saved(SavedJob(engine_part, breakpoints, durable))


def restore_breakpoints(job: Job, saved: list[SavedBreakpoint]) -> None:
    """Set the saved breakpoints on a restored job again, with their ids and hit counts."""
    if not saved:
        return
    debugger = attach(job)
    for spec in saved:
        bp = make_breakpoint(job.plan, job.job_id, type=spec.type,  # type: ignore[arg-type]
                             routine_id=spec.routine_id, slot_name=spec.slot_name, event_name=spec.event_name,
                             source=spec.source, target=spec.target, condition=spec.condition,
                             enabled=spec.enabled)
        bp.breakpoint_id = spec.breakpoint_id
        bp.hit_count = spec.hit_count
        bp.created_at = spec.created_at
        debugger.add(bp)


class PostData(msgspec.Struct, frozen=True):
    """What a stored post holds: where it goes and what."""

    routine_id: str
    slot_name: str
    data: Any = None


_encode_post = msgspec.json.Encoder().encode
_decode_post = msgspec.json.Decoder(PostData).decode


class Checkpointer(BatchConsumer):
    """Writes the checkpoints of this server's durable live jobs (module docstring)."""

    log = log
    lost_message = "checkpointer missed events %s..%s of job %s"

    def __init__(
        self,
        engine: Engine,
        store: Store,
        *,
        interval: float = DEFAULT_INTERVAL,
        every_activations: int = DEFAULT_EVERY_ACTIVATIONS,
        events_queued: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(engine.bus, buffer=100_000)
        #: Waits until the events published so far are queued for the store (the recorder's
        #: ``caught_up``): a checkpoint is written after the events it has seen, never before.
        self.events_queued = events_queued
        self.engine = engine
        self.store = store
        self.interval = interval
        self.every_activations = every_activations
        self.posts = JobPosts(store, self.is_durable)
        self.written = 0  # checkpoints written since start (logs, tests)
        self._live: dict[str, Job] = {}  # this server's durable jobs that have not ended
        self._saved: dict[str, int] = {}  # job_id -> job.changes when its checkpoint was taken
        self._activations: dict[str, int] = {}  # activations ended since the job's last checkpoint
        self._unencodable: dict[str, str] = {}  # job_id -> why its checkpoint cannot be taken
        self._chosen: dict[str, bool] = {}  # job_id -> durable, where its start chose
        self._due = anyio.Event()

    # -- which jobs ---------------------------------------------------------------------------
    def choose(self, job: Job, durable: bool) -> None:
        """The job's start chose whether it is durable, whatever its flow says (called before its
        first checkpoint; its ``job_start`` may or may not have been seen yet)."""
        if job.is_terminal:
            return  # it ended already (and was forgotten): keep nothing of it
        self._chosen[job.job_id] = durable
        if durable:
            self._live[job.job_id] = job
        else:
            self._live.pop(job.job_id, None)

    def is_durable(self, job: Job) -> bool:
        """Whether ``job`` is checkpointed to outlive the process."""
        chosen = self._chosen.get(job.job_id)
        return job.plan.flow.execution.durable if chosen is None else chosen

    def checkpoint_error(self, job_id: str) -> str | None:
        """Why the job's checkpoint cannot be taken now (None: it can, or the job is not durable)."""
        return self._unencodable.get(job_id)

    # -- what makes a checkpoint due ----------------------------------------------------------
    async def consume(self, batch: list[Event | Gap]) -> None:
        for item in batch:
            if item.__class__ is Gap:
                continue
            kind = item.type  # type: ignore[union-attr]
            job_id = item.job_id
            if kind == "routine_end":
                n = self._activations[job_id] = self._activations.get(job_id, 0) + 1
                if n >= self.every_activations:
                    self._due.set()
            elif kind in ("job_idle", "job_pause"):
                self._due.set()
            elif kind in ("job_start", "job_resume"):
                job = self.engine.get_job(job_id)
                if job is not None and self.is_durable(job):
                    self._live[job_id] = job
            elif kind == "job_end":
                self._forget(job_id)

    def drop(self, job_id: str) -> None:
        """Keep nothing more of ``job_id``: it stopped here without ending (it moved)."""
        self._forget(job_id)

    def _forget(self, job_id: str) -> None:
        self._live.pop(job_id, None)
        self._saved.pop(job_id, None)
        self._activations.pop(job_id, None)
        self._unencodable.pop(job_id, None)
        self._chosen.pop(job_id, None)
        self.posts.forget(job_id)

    async def keep(self) -> None:
        """Write what is due, whenever something is and at least every ``interval`` seconds,
        until the bus closes (run it beside :meth:`run` in the owner's task group)."""
        async with anyio.create_task_group() as tg:

            async def until_finished() -> None:
                await self.finished.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(until_finished)
            failing = False
            while True:
                with anyio.move_on_after(self.interval):
                    await self._due.wait()
                self._due = anyio.Event()
                try:
                    await self.save(self._live.values())
                    failing = False
                except Exception as exc:  # noqa: BLE001 - a store failure is retried at the next round
                    why = _store_failure(exc)
                    if why is None:
                        log.exception("writing checkpoints failed; trying again in %g s", self.interval)
                    elif not failing:  # the store is down (Redis lost, disk full): once per outage
                        log.error("writing checkpoints failed: %s; trying again every %g s", why, self.interval)
                    failing = True

    def restored(self, job: Job) -> None:
        """``job`` was just restored from its stored checkpoint, which so describes it: nothing to
        write until it changes (a restart of 10,000 idle jobs writes no checkpoint)."""
        self._saved[job.job_id] = job.changes

    # -- writing ------------------------------------------------------------------------------
    def _wanted(self, job: Job, force: bool) -> bool:
        if job.is_terminal or not self.is_durable(job):
            return False
        return force or self._saved.get(job.job_id) != job.changes

    async def save(self, jobs: Iterable[Job], *, force: bool = False) -> int:
        """Checkpoint ``jobs`` (those durable, live and changed since their last checkpoint, or
        all live durable ones with ``force``) and commit them together; how many were written.
        A store failure propagates (the caller answers 503, or retries later)."""
        taken = await self.take(jobs, force=force)
        await self.write(taken)
        return len(taken)

    async def take(self, jobs: Iterable[Job], *, force: bool = False) -> list[Taken]:
        """The checkpoints of ``jobs`` (see :meth:`save`), ready to write: once this returns, the
        events they have seen are queued for the store, so whatever is queued next commits after
        them (in the same transaction at the earliest)."""
        taken: list[Taken] = []
        for job in list(jobs):
            if not self._wanted(job, force):
                continue
            changes = job.changes
            try:
                data = saved_job(job, self._chosen.get(job.job_id))
            except CheckpointError as exc:
                self._cannot_checkpoint(job, exc.message)
                continue
            if self._unencodable.pop(job.job_id, None) is not None:
                job.publish("log", None, {"level": "info", "message": "the job can be checkpointed again",
                                          "fields": {"checkpoint_error": None}})
            record = CheckpointRecord(job.job_id, self.posts.delivered(job.job_id), data, utc_now())
            taken.append(Taken(job.job_id, changes, record))
        if taken and self.events_queued is not None:
            await self.events_queued(self.engine.bus.published)
        return taken

    def _cannot_checkpoint(self, job: Job, why: str) -> None:
        """Report, once per reason, that ``job`` has no up-to-date checkpoint (module docstring)."""
        if self._unencodable.get(job.job_id) == why:
            return
        self._unencodable[job.job_id] = why
        log.warning("job %s cannot be checkpointed, and so would not survive a restart: %s", job.job_id, why)
        job.publish("log", None, {
            "level": "error",
            "message": f"the job cannot be checkpointed, so a restart would resume it from an older "
                       f"checkpoint or fail it, until this is fixed: {why}",
            "fields": {"checkpoint_error": why},
        })

    async def write(self, taken: list[Taken]) -> None:
        """Commit checkpoints :meth:`take` took (queued together: one transaction)."""
        if len(taken) == 1:
            await self._put(taken[0].record)
        elif taken:
            async with anyio.create_task_group() as tg:
                for item in taken:
                    tg.start_soon(self._put, item.record)
        self.written_as(taken)

    async def _put(self, record: CheckpointRecord) -> None:
        try:
            await self.store.put_checkpoint(record)
        except OwnershipLost:
            # In a cluster another server owns the job now: the store told the server, which stops it here.
            log.info("job %s moved to another server; its checkpoint from here was refused", record.job_id)

    def written_as(self, taken: list[Taken]) -> None:
        """``taken`` is committed (by :meth:`write`, or with a job's record). Nothing is kept of
        a job that ended meanwhile: its ``job_end`` may have been consumed already (a short job
        ends before its start's commit returns), and nothing would forget it again."""
        for item in taken:
            job = self.engine.get_job(item.job_id)
            if job is not None and not job.is_terminal:
                self._saved[item.job_id] = item.changes
            self._activations.pop(item.job_id, None)
        self.written += len(taken)


class Taken(NamedTuple):
    """A checkpoint taken and not yet written, with the job's ``changes`` when it was taken."""

    job_id: str
    changes: int
    record: CheckpointRecord


def _store_failure(exc: Exception) -> StoreError | None:
    """The store's own error behind ``exc`` (checkpoints are written concurrently, so it may come
    in a group), or None if something else failed: that one deserves its traceback."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, ExceptionGroup):
        found, rest = exc.split(StoreError)
        if found is not None and rest is None:
            first = found.exceptions[0]
            while isinstance(first, ExceptionGroup):
                first = first.exceptions[0]
            return first if isinstance(first, StoreError) else None
    return None


class JobPosts:
    """Numbers each durable job's posts, delivers them in order, and keeps them in the store.

    Posts to one job are delivered one at a time (a per-job lock), so "the first ``n`` posts are in
    the job" is always a prefix and a checkpoint can say how many it holds. Appending to the store
    happens after delivery, outside the lock: concurrent posts share a commit.
    """

    def __init__(self, store: Store, is_durable: Callable[[Job], bool]) -> None:
        self.store = store
        self.is_durable = is_durable
        self._delivered: dict[str, int] = {}
        self._numbered: dict[str, int] = {}
        self._locks: dict[str, anyio.Lock] = {}
        #: Jobs that stopped here to move to another server (a post that waited for one answers 503).
        self.moved: set[str] = set()

    def lock(self, job_id: str) -> anyio.Lock:
        """The lock one delivery to ``job_id`` holds (a drain takes it: no post is half done)."""
        lock = self._locks.get(job_id)
        if lock is None:
            lock = self._locks[job_id] = anyio.Lock()
        return lock

    def delivered(self, job_id: str) -> int:
        return self._delivered.get(job_id, 0)

    @property
    def tracked_jobs(self) -> int:
        """How many jobs it keeps anything of (a lock, a count): bounded by the live ones."""
        return len(self._locks.keys() | self._delivered.keys() | self._numbered.keys())

    def resume(self, job_id: str, n: int) -> None:
        """A restored job holds its posts up to ``n`` (the checkpoint's and those replayed)."""
        self._delivered[job_id] = self._numbered[job_id] = n

    def forget(self, job_id: str) -> None:
        self._delivered.pop(job_id, None)
        self._numbered.pop(job_id, None)
        self._locks.pop(job_id, None)

    async def deliver(self, job: Job, routine_id: str, slot: str, data: Any, *, timeout: float) -> None:
        """Post to ``job``; once this returns, the post is in the job and (durable jobs) committed."""
        if not self.is_durable(job):
            await job.post(routine_id, slot, data, timeout=timeout)
            return
        lock = self.lock(job.job_id)
        try:
            async with lock:
                if job.is_terminal and job.job_id in self.moved:
                    raise Unavailable("owner_unavailable", f"job {job.job_id} is moving to another server; retry",
                                      retry_after=1, job_id=job.job_id, moving=True)
                n = self._numbered.get(job.job_id, 0) + 1
                await job.post(routine_id, slot, data, timeout=timeout)
                self._numbered[job.job_id] = self._delivered[job.job_id] = n
        finally:
            # A post that lost the race with its job's end may have made the lock after the job
            # was forgotten (job_end): nothing else would ever drop it.
            if job.is_terminal and self._locks.get(job.job_id) is lock and not lock.statistics().tasks_waiting \
                    and not lock.locked():
                del self._locks[job.job_id]
        await self.store.append_post(StoredPost(job.job_id, n, _encode_post(PostData(routine_id, slot, data))))

    async def replay(self, job: Job, after: int, posts: Iterable[StoredPost], *, timeout: float) -> int:
        """Deliver ``posts`` (the job's stored posts numbered after ``after``, those its checkpoint
        does not hold, read for many jobs at once: ``Store.posts_after_many``), in order; the
        number of the last one (``after`` if none)."""
        last = after
        for post in posts:
            item = _decode_post(post.data)
            await job.post(item.routine_id, item.slot_name, item.data, timeout=timeout)
            last = post.n
        self.resume(job.job_id, last)
        return last

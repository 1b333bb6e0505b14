"""The persistence interface: what the API keeps across restarts.

Everything the control plane must still know after a restart — flows, job records, runtimes,
each job's recent events, and what a live job needs to outlive the process (its checkpoint and
its posts) — goes through :class:`Store`. Three implementations share this contract
and one test-suite: :class:`~routilux.store.memory.MemoryStore`,
:class:`~routilux.store.sqlite.SQLiteStore` (the default) and
:class:`~routilux.store.redis.RedisStore` (one store shared by several server processes). The
engine never sees the store; the API writes to it, and a bus subscriber records job progress
into it.

Writes come in two speeds. ``await store.put_flow(...)`` returns once the write is durable (used
for rare, user-visible changes). ``store.record_job(...)`` / ``store.record_events(...)`` only
enqueue (used on the hot path); they are written in batches by the store's single writer, and
:meth:`Store.flush` waits for everything enqueued so far.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol, Self

import msgspec

from routilux.store.errors import StoreError

#: How many jobs one :meth:`Store.prune_jobs` call deletes at most (one short write transaction).
#: Every write waiting meanwhile waits for it, acknowledged job starts included: on SQLite with
#: 10,000 jobs kept, deleting 500 jobs with their events took 150-500 ms (random job ids spread
#: them over the whole B-tree: a page written per job per index), 100 take 20-60 ms; less with
#: the engine's time-ordered ids.
PRUNE_BATCH = 100


class FlowRecord(msgspec.Struct, frozen=True):
    """A stored flow: its DSL document as JSON (lossless), its revision and timestamps."""

    flow_id: str
    document: dict[str, Any]
    revision: int
    created_at: datetime
    updated_at: datetime
    source: str | None = None  # the file it was loaded from, if any


class JobRecord(msgspec.Struct, frozen=True):
    """A job as remembered: enough to list it, show it and explain how it ended."""

    job_id: str
    flow_id: str
    runtime_id: str
    status: str
    created_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    error: dict[str, Any] | None = None
    timeout: float | None = None
    complete_when_idle: bool = False
    #: routine_states, execution_history, shared_data, pause_points... as the job last showed them.
    state: dict[str, Any] = {}


class RuntimeRecord(msgspec.Struct, frozen=True):
    runtime_id: str
    thread_pool_size: int
    is_default: bool
    created_at: datetime
    #: In a cluster, only servers of this worker group run the runtime's jobs (None: any server).
    worker_group: str | None = None


class StoredEvent(msgspec.Struct, frozen=True):
    """One bus event of a job, kept as the JSON the clients receive."""

    job_id: str
    seq: int
    type: str
    payload: bytes  # the event encoded as JSON


class CheckpointRecord(msgspec.Struct, frozen=True):
    """A live job's last checkpoint: what a restarted server resumes it from."""

    job_id: str
    posts: int  # how many of the job's posts (numbered 1, 2, ...) the checkpoint already holds
    data: bytes  # the engine's checkpoint, JSON bytes (opaque to the store)
    taken_at: datetime


class StoredPost(msgspec.Struct, frozen=True):
    """One post to a job, kept until the job ends so a resumed job can replay what its
    checkpoint does not hold yet."""

    job_id: str
    n: int  # the job's post number, from 1
    data: bytes  # JSON bytes (opaque to the store)


class JobQuery(msgspec.Struct, frozen=True):
    flow_id: str | None = None
    status: str | None = None
    runtime_id: str | None = None
    limit: int = 100
    offset: int = 0
    #: False leaves each record's ``state`` empty: listings don't show it, and decoding it is
    #: most of a page's cost.
    with_state: bool = True
    #: Jobs left out of the page and the total, as if they were not stored: the server lists the
    #: jobs it runs from memory (their stored status may lag a moment) and the rest from here.
    exclude: frozenset[str] = frozenset()


class StoreCounts(msgspec.Struct, frozen=True):
    flow_count: int
    job_count: int


class StoreLifetime:
    """``async with store:`` opens the store and closes it on the way out, for every store."""

    @property
    def write_error(self) -> StoreError | None:
        """Why the store's last write failed, while writes fail (None once one succeeds again)."""
        return None

    async def probe_writes(self) -> None:
        """Write something tiny now (a store that never fails to write has nothing to try)."""

    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class Store(Protocol):
    """The contract every store implements (see the module docstring for write semantics)."""

    async def open(self) -> None:
        """Create tables/structures; start the writer. Must be called before anything else."""

    async def close(self) -> None:
        """Flush pending writes and stop the writer."""

    async def flush(self) -> None:
        """Wait until every write enqueued before this call is durable."""

    @property
    def write_error(self) -> StoreError | None:
        """Why the last write failed, while writes fail; None when the last write succeeded.
        ``GET /api/health`` answers 503 ``degraded`` with it."""

    async def probe_writes(self) -> None:
        """Write something tiny through the writer: StoreError if writes fail. Health uses it to
        notice, with no other traffic, that writes work again (and so clear ``write_error``)."""

    # flows
    async def put_flow(self, record: FlowRecord, *, expected_revision: int | None = None) -> None:
        """Store ``record`` (replacing the flow of that id) and wait until it is durable.

        ``expected_revision`` makes the write conditional, so two processes editing one flow
        cannot silently undo each other's change: ``None`` writes unconditionally; ``0`` writes
        only if the flow does not exist yet; ``n > 0`` only if the stored flow's revision is
        exactly ``n``. Otherwise nothing is written and
        :class:`~routilux.store.errors.FlowRevisionConflict` says what the store holds
        (``current_revision``, ``None`` if the flow does not exist). Check and write are one
        atomic step, also against other processes sharing the store.
        """

    async def get_flow(self, flow_id: str) -> FlowRecord | None: ...
    async def list_flows(self) -> list[FlowRecord]:
        """Every flow, by ``flow_id`` (code point order)."""

    async def delete_flow(self, flow_id: str, expected_revision: int | None = None) -> bool:
        """Forget a flow (its jobs stay: they are history); ``False`` if there was none.
        ``expected_revision`` follows the rule of :meth:`put_flow`."""

    # jobs
    def record_job(self, record: JobRecord) -> None:
        """Enqueue an upsert of ``record`` (written in the next batch)."""

    async def put_job(self, record: JobRecord, *, checkpoint: CheckpointRecord | None = None) -> None:
        """Upsert ``record`` and wait until it is durable; with ``checkpoint`` (the same job's),
        both in one write that succeeds or fails as a whole."""

    async def get_job(self, job_id: str) -> JobRecord | None: ...
    async def list_jobs(self, query: JobQuery) -> tuple[list[JobRecord], int]:
        """Jobs matching the filters, newest first (created_at desc, job_id), and the total."""

    async def delete_jobs(self, job_ids: Sequence[str]) -> int:
        """Delete jobs with their events, metrics, checkpoints and posts; returns how many jobs
        were deleted."""

    async def prune_jobs(
        self, *, keep: int | None = None, ended_before: datetime | None = None, limit: int = PRUNE_BATCH
    ) -> list[str]:
        """Delete finished jobs (status in :data:`TERMINAL_STATUSES`) with their events (and
        anything else hanging off them, as :meth:`delete_jobs`): those
        beyond the newest ``keep`` and those that ended before ``ended_before``; ``None`` turns
        either rule off. Returns the deleted ids, oldest first (their number is how many went).

        A job's end is its ``completed_at`` (its ``created_at`` if it has none); ties are broken by
        ``job_id``, the greater counting as newer. Jobs that have not finished are never touched,
        whatever their age. At most ``limit`` jobs go per call, so one call never holds the store
        for long (SQLite has one writer): call again while it returns ``limit`` ids. Retention is
        this method plus a caller that runs it now and then (the API server's
        :class:`~routilux.server.retention.JobPruner`).
        """

    async def mark_interrupted(self, reason: str, *, keep: Collection[str] = ()) -> list[str]:
        """Every non-terminal job not in ``keep`` becomes ``failed`` with ``{"type":
        "interrupted", "message": reason}`` and a ``completed_at`` (losing its checkpoint and
        posts, as any job that ends); returns their ids, oldest job first (called at start-up).
        ``keep`` names the jobs the server resumed from their checkpoints: they are left as
        they are."""

    async def counts(self) -> StoreCounts: ...

    # runtimes
    async def put_runtime(self, record: RuntimeRecord) -> None: ...
    async def list_runtimes(self) -> list[RuntimeRecord]: ...

    # events
    def record_events(self, events: Sequence[StoredEvent]) -> None:
        """Enqueue events (written in the next batch); a job keeps at most ``events_per_job``,
        the newest."""

    async def wait_for_room(self) -> None:
        """Return once ``record_events`` would accept more (after it raised StoreOverloaded)."""

    async def events_since(self, job_id: str, since: int = 0, limit: int = 1000) -> list[StoredEvent]:
        """Events of ``job_id`` with ``seq > since``, oldest first, at most ``limit``."""

    async def last_event_seqs(self, job_ids: Collection[str]) -> dict[str, int]:
        """The ``seq`` of the newest stored event of each of ``job_ids`` (those with none are
        left out), in one read: a restart asks it for every job it resumes, and one awaited
        read per job would cost more than restoring the job."""

    # job metrics (what the metrics aggregator keeps of a finished job; deleted with the job)
    async def put_job_metrics(self, items: Sequence[tuple[str, str, bytes]]) -> None:
        """Store (or replace) finished jobs' metrics: ``(job_id, flow_id, blob)`` each, the blob
        opaque; many at once, since jobs end in bursts."""

    async def get_job_metrics(self, job_id: str) -> bytes | None: ...

    async def all_job_metrics(self) -> list[bytes]:
        """Every stored blob, in the order they were stored (oldest first)."""

    # checkpoints and posts: what a job needs to outlive the process ("acknowledged means
    # durable"). A job that ends loses both: a record that becomes terminal (``record_job``,
    # ``put_job``, ``mark_interrupted``) deletes them in the same write, and so do
    # ``delete_jobs`` and ``prune_jobs``. Writes for a job whose record is already terminal are
    # dropped, so an ended job is never resurrected by a late write.
    async def put_checkpoint(self, record: CheckpointRecord) -> None:
        """Store ``record``, replacing the job's previous checkpoint, and wait until it is
        durable (through the batch writer: concurrent ones share a commit). Dropped if the job's
        record is already terminal (a late checkpoint must never resurrect an ended job)."""

    async def get_checkpoint(self, job_id: str) -> CheckpointRecord | None: ...

    async def list_checkpoints(self) -> list[CheckpointRecord]:
        """Checkpoints of jobs whose record exists and is not terminal (what a restart resumes),
        oldest job first (created_at, then job_id)."""

    async def append_post(self, post: StoredPost) -> None:
        """Store ``post`` and wait until it is durable (through the batch writer: group
        commit). ``(job_id, n)`` is unique: writing it again replaces the stored post. Dropped,
        like a late checkpoint, if the job's record is already terminal."""

    async def posts_after(self, job_id: str, n: int) -> list[StoredPost]:
        """The job's posts numbered above ``n``, by number."""

    async def posts_after_many(self, after: Mapping[str, int]) -> dict[str, list[StoredPost]]:
        """:meth:`posts_after` of many jobs in one read: for each ``job_id: n`` of ``after``, the
        job's posts numbered above ``n``, by number (jobs with none are left out)."""

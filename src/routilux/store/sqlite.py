"""The default store: one SQLite file (or ``:memory:``), written by a single batching writer.

How writes flow
    Every write goes through one queue, in order, and is applied by one writer task. Between two
    awaited operations (``put_flow``, ``put_job``, ``delete_*``, ``mark_interrupted``,
    ``put_runtime``, ``flush``), fire-and-forget writes are *coalesced* into a segment:
    ``record_job`` keeps only the latest record per ``job_id`` and ``record_events`` keeps, per
    job, only the newest ``events_per_job`` events (older ones would be pruned right after insert
    anyway; this assumes ``seq`` grows per job, as the bus guarantees). The writer takes up to
    ``batch_max`` rows off the front of the queue and writes them in ONE transaction in a worker
    thread (``anyio.to_thread.run_sync`` with a dedicated ``CapacityLimiter(1)``), so the event loop
    never waits on the disk. An awaited operation returns once the transaction holding it commits;
    ``flush`` returns once everything enqueued before it has committed.

Memory bounds and overload (nothing is ever dropped silently)
    * Job records are coalesced, so pending job writes are bounded by the number of distinct jobs
      — ``record_job`` never fails for load.
    * Pending events are bounded by ``max_pending_events`` (default 200,000). A ``record_events``
      call that would go beyond it raises :class:`~routilux.store.errors.StoreOverloaded` and keeps
      none of its events, so the caller knows exactly what was not stored; it should ``await
      store.wait_for_room()`` (which returns once the backlog is below half the limit) and retry.
      A bus subscriber doing this makes its own bounded buffer overflow instead, and the bus then
      reports the lost ``seq`` range — the accounting stays exact end to end.
    * If a whole batch cannot be written (disk full, I/O error), every awaited operation in it
      raises :class:`~routilux.store.errors.StoreError`, and the fire-and-forget records in it are
      reported in the log at ERROR level and counted in :meth:`SQLiteStore.stats`.

Reads run in worker threads too, on their own read-only connections (WAL lets them proceed while
the writer writes). A ``:memory:`` database exists per connection, so there the reads share the
writer's single connection and its ``CapacityLimiter(1)``. Reads see what has been committed:
after ``record_*``, ``await store.flush()`` before reading it back.

Ownership: the writer task lives in a task group that :meth:`SQLiteStore.open` enters and
:meth:`SQLiteStore.close` exits, so **open and close must be called from the same task** —
``async with SQLiteStore(path) as store:`` is the way to hold one (an app's lifespan does exactly
this). Reads and writes may come from any task on the same event loop. Closing, or cancelling
the owner, still writes everything already accepted (shielded; the backlog is bounded) before
the connections close; after that every call raises
:class:`~routilux.store.errors.StoreClosedError`.

One process per store
    See :mod:`routilux.store.single_process`: :meth:`SQLiteStore.open` locks ``<db>.lock`` (or,
    for ``:memory:`` in a server's worker, a lock per server) before it touches the database.
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar

import anyio
import msgspec

from routilux.store import _codec
from routilux.store.base import (
    PRUNE_BATCH,
    TERMINAL_STATUSES,
    FlowRecord,
    JobQuery,
    JobRecord,
    RuntimeRecord,
    StoreCounts,
    StoredEvent,
    StoreLifetime,
)
from routilux.store.errors import (
    FlowRevisionConflict,
    StoreClosedError,
    StoreError,
    StoreOverloaded,
    check_expected_revision,
)
from routilux.store.single_process import claim_store, release_store

log = logging.getLogger("routilux.store")

T = TypeVar("T")

#: The schema version this code writes (``PRAGMA user_version``).
SCHEMA_VERSION: Final[int] = 4

_TERMINAL_SQL = ", ".join(f"'{status}'" for status in sorted(TERMINAL_STATUSES))
#: When a finished job ended, as the ``jobs_finished`` index orders it (queries must spell it alike).
_ENDED = "COALESCE(completed_at, created_at)"

#: ``_MIGRATIONS[n]`` takes a database from version ``n`` to ``n + 1``; a future change appends.
_MIGRATIONS: Final[list[list[str]]] = [
    [
        """CREATE TABLE IF NOT EXISTS flows (
            flow_id    TEXT PRIMARY KEY,
            document   TEXT NOT NULL,
            revision   INTEGER NOT NULL,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            source     TEXT
        )""",
        """CREATE TABLE IF NOT EXISTS jobs (
            job_id             TEXT PRIMARY KEY,
            flow_id            TEXT NOT NULL,
            runtime_id         TEXT NOT NULL,
            status             TEXT NOT NULL,
            created_at         INTEGER NOT NULL,
            started_at         INTEGER,
            completed_at       INTEGER,
            error              TEXT,
            timeout            REAL,
            complete_when_idle INTEGER NOT NULL,
            state              TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS jobs_newest ON jobs (created_at DESC, job_id)",
        "CREATE INDEX IF NOT EXISTS jobs_by_flow ON jobs (flow_id, created_at DESC, job_id)",
        "CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, created_at DESC, job_id)",
        "CREATE INDEX IF NOT EXISTS jobs_by_runtime ON jobs (runtime_id, created_at DESC, job_id)",
        """CREATE TABLE IF NOT EXISTS runtimes (
            runtime_id       TEXT PRIMARY KEY,
            thread_pool_size INTEGER NOT NULL,
            is_default       INTEGER NOT NULL,
            created_at       INTEGER NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS events (
            job_id  TEXT NOT NULL,
            seq     INTEGER NOT NULL,
            type    TEXT NOT NULL,
            payload BLOB NOT NULL,
            PRIMARY KEY (job_id, seq)
        ) WITHOUT ROWID""",
    ],
    [
        # 1 -> 2: finished jobs in the order they ended, so pruning reads only what it deletes
        # (plus the ``keep`` newest entries of this index) instead of every job.
        f"""CREATE INDEX IF NOT EXISTS jobs_finished ON jobs ({_ENDED}, job_id)
            WHERE status IN ({_TERMINAL_SQL})""",
    ],
    [
        # 2 -> 3: what the metrics aggregator keeps of each finished job (deleted with the job).
        """CREATE TABLE IF NOT EXISTS job_metrics (
            stored  INTEGER PRIMARY KEY AUTOINCREMENT,
            job_id  TEXT NOT NULL UNIQUE,
            flow_id TEXT NOT NULL,
            data    BLOB NOT NULL
        )""",
    ],
    [
        # 3 -> 4: the worker group a runtime's jobs are placed on in a cluster (NULL: any).
        "ALTER TABLE runtimes ADD COLUMN worker_group TEXT",
    ],
]
assert len(_MIGRATIONS) == SCHEMA_VERSION

_JOB_COLUMNS = (
    "job_id, flow_id, runtime_id, status, created_at, started_at, completed_at, error, timeout, "
    "complete_when_idle, state"
)
_JOB_COLUMNS_NO_STATE = _JOB_COLUMNS.replace("complete_when_idle, state", "complete_when_idle, '{}'")
_UPSERT_JOB = f"""
    INSERT INTO jobs ({_JOB_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (job_id) DO UPDATE SET
        flow_id = excluded.flow_id, runtime_id = excluded.runtime_id, status = excluded.status,
        created_at = excluded.created_at, started_at = excluded.started_at,
        completed_at = excluded.completed_at, error = excluded.error, timeout = excluded.timeout,
        complete_when_idle = excluded.complete_when_idle, state = excluded.state
"""
_UPSERT_FLOW = """
    INSERT INTO flows (flow_id, document, revision, created_at, updated_at, source)
    VALUES (?, ?, ?, ?, ?, ?)
    ON CONFLICT (flow_id) DO UPDATE SET
        document = excluded.document, revision = excluded.revision,
        created_at = excluded.created_at, updated_at = excluded.updated_at, source = excluded.source
"""
_UPSERT_RUNTIME = """
    INSERT INTO runtimes (runtime_id, thread_pool_size, is_default, created_at, worker_group)
    VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (runtime_id) DO UPDATE SET
        thread_pool_size = excluded.thread_pool_size, is_default = excluded.is_default,
        created_at = excluded.created_at, worker_group = excluded.worker_group
"""
_INSERT_EVENT = "INSERT OR REPLACE INTO events (job_id, seq, type, payload) VALUES (?, ?, ?, ?)"
_PRUNE_EVENTS = """
    DELETE FROM events WHERE job_id = ?1
    AND seq <= (SELECT MAX(seq) FROM events WHERE job_id = ?1) - ?2
"""
# Pruning reads the partial index ``jobs_finished`` (INDEXED BY: without ANALYZE statistics the
# planner would pick jobs_by_status and sort every finished job).
_FINISHED = f"FROM jobs INDEXED BY jobs_finished WHERE status IN ({_TERMINAL_SQL})"
_PRUNE_BOUNDARY = f"SELECT {_ENDED}, job_id {_FINISHED} ORDER BY {_ENDED} DESC, job_id DESC LIMIT 1 OFFSET ?"
_PRUNE_UP_TO = f"""SELECT job_id {_FINISHED}
    AND ({_ENDED} < ?1 OR ({_ENDED} = ?1 AND job_id <= ?2)) ORDER BY {_ENDED}, job_id LIMIT ?3"""
_PRUNE_BEFORE = f"SELECT job_id {_FINISHED} AND {_ENDED} < ? ORDER BY {_ENDED}, job_id LIMIT ?"

_MEMORY: Final[str] = ":memory:"

def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def _unjson(text: str) -> Any:
    return msgspec.json.decode(text)


def _job_row(r: JobRecord) -> tuple[Any, ...]:
    return (
        r.job_id,
        r.flow_id,
        r.runtime_id,
        r.status,
        _codec.to_us(r.created_at),
        _codec.opt_to_us(r.started_at),
        _codec.opt_to_us(r.completed_at),
        None if r.error is None else _json(r.error),
        r.timeout,
        1 if r.complete_when_idle else 0,
        _json(r.state),
    )


def _job_from_row(row: tuple[Any, ...]) -> JobRecord:
    job_id, flow_id, runtime_id, status, created, started, completed, error, timeout, cwi, state = row
    return JobRecord(
        job_id=job_id,
        flow_id=flow_id,
        runtime_id=runtime_id,
        status=status,
        created_at=_codec.from_us(created),
        started_at=_codec.opt_from_us(started),
        completed_at=_codec.opt_from_us(completed),
        error=None if error is None else _unjson(error),
        timeout=timeout,
        complete_when_idle=bool(cwi),
        state=_unjson(state),
    )


def _flow_from_row(row: tuple[Any, ...]) -> FlowRecord:
    flow_id, document, revision, created, updated, source = row
    return FlowRecord(
        flow_id=flow_id,
        document=_unjson(document),
        revision=revision,
        created_at=_codec.from_us(created),
        updated_at=_codec.from_us(updated),
        source=source,
    )


class StoreStats(msgspec.Struct, frozen=True):
    """What the writer is doing; cheap to take, meant for logs and /metrics."""

    pending_jobs: int  # coalesced job upserts waiting to be written
    pending_events: int  # events waiting to be written
    pending_ops: int  # awaited operations (put_*, delete_*, flush...) waiting
    batches: int  # transactions committed
    rows: int  # job upserts + events + operations committed
    failed_batches: int  # transactions that could not be written
    lost_records: int  # fire-and-forget job records and events in failed batches (all logged)
    rejected_events: int  # events refused with StoreOverloaded (the caller was told)


class _Op:
    """One awaited operation: ``fn(conn, *args)`` runs inside the writer's transaction."""

    __slots__ = ("args", "done", "error", "fn", "result")

    def __init__(self, fn: Callable[..., Any] | None, args: tuple[Any, ...]) -> None:
        self.fn = fn  # None: a flush barrier
        self.args = args
        self.done = anyio.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class _Segment:
    """The fire-and-forget writes between two operations: latest job record per job, newest
    ``events_per_job`` events per job."""

    __slots__ = ("events", "jobs", "n_events")

    def __init__(self) -> None:
        self.jobs: dict[str, JobRecord] = {}
        self.events: dict[str, deque[StoredEvent]] = {}
        self.n_events = 0

    def size(self) -> int:
        return len(self.jobs) + self.n_events

    def split(self, n: int) -> _Segment:
        """Move up to ``n`` rows from the front of this segment into a new one."""
        part = _Segment()
        if self.jobs:
            for job_id in list(itertools.islice(self.jobs, n)):
                part.jobs[job_id] = self.jobs.pop(job_id)
            n -= len(part.jobs)
        while n > 0 and self.events:
            job_id = next(iter(self.events))
            kept = self.events[job_id]
            if len(kept) <= n:
                taken = self.events.pop(job_id)
            else:
                taken = deque(kept.popleft() for _ in range(n))
            part.events[job_id] = taken
            part.n_events += len(taken)
            self.n_events -= len(taken)
            n -= len(taken)
        return part


class SQLiteStore(StoreLifetime):
    """The :class:`~routilux.store.base.Store` contract on SQLite (see the module docstring).

    ``path`` is a file (its directory must exist) or ``":memory:"``. ``events_per_job`` bounds
    each job's stored events (newest kept); ``batch_max`` bounds the rows one transaction writes;
    ``max_pending_events`` bounds the events waiting for the writer; ``readers`` is the size of
    the read-connection pool (file databases); ``busy_timeout`` is how long, in seconds, to wait
    for a lock held by another process before failing.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        events_per_job: int = 10_000,
        batch_max: int = 500,
        max_pending_events: int = 200_000,
        readers: int = 4,
        busy_timeout: float = 5.0,
    ) -> None:
        if events_per_job < 1 or batch_max < 1 or max_pending_events < 1 or readers < 1:
            raise ValueError("events_per_job, batch_max, max_pending_events and readers must be >= 1")
        self._memory = str(path) == _MEMORY
        self.path: str | Path = _MEMORY if self._memory else Path(path)
        self.location = str(self.path)
        self.events_per_job = events_per_job
        self.batch_max = batch_max
        self.max_pending_events = max_pending_events
        self._n_readers = 1 if self._memory else readers
        self._busy_timeout = busy_timeout
        #: The file whose ``flock`` says "this process serves the store" (None: nothing to lock).
        self.lock_path: Path | None = None if self._memory else Path(f"{Path(path).resolve()}.lock")
        self._lock_fd: int | None = None

        self._state = "new"  # new → open → closing → closed
        self._stack: AsyncExitStack | None = None
        self._owner: int | None = None  # the id of the task that opened the store
        self._wconn: sqlite3.Connection | None = None
        self._readers: list[sqlite3.Connection] = []
        self._write_limiter = anyio.CapacityLimiter(1)
        self._read_slots = anyio.CapacityLimiter(self._n_readers)
        self._read_threads = anyio.CapacityLimiter(self._n_readers)
        self._active_reads = 0
        self._reads_idle = anyio.Event()

        self._queue: deque[_Segment | _Op] = deque()
        self._in_flight = False
        self._stopping = False
        self._writer_gone = False
        self._writer_done = anyio.Event()
        self._wake = anyio.Event()
        self._room = anyio.Event()
        self._pending_events = 0
        self._batches = 0
        self._rows = 0
        self._failed_batches = 0
        self._lost_records = 0
        self._rejected_events = 0

    def __repr__(self) -> str:
        return f"SQLiteStore({self.location!r})"

    # -- life cycle ------------------------------------------------------------------------
    async def open(self) -> None:
        """Open the database (creating or migrating its schema) and start the writer task.

        Must be awaited in the task that will later await :meth:`close`.
        """
        if self._state != "new":
            raise StoreError(f"{self!r} was already opened; make a new store", location=self.location)
        try:
            await anyio.to_thread.run_sync(self._open_sync, limiter=self._write_limiter)
        except sqlite3.Error as exc:
            raise self._error("cannot open the store", exc) from None
        self._owner = anyio.get_current_task().id
        stack = AsyncExitStack()
        task_group = await stack.enter_async_context(anyio.create_task_group())
        task_group.start_soon(self._run_writer, name=f"routilux store writer ({self.location})")
        self._stack = stack
        self._state = "open"

    async def close(self) -> None:
        """Write everything pending, stop the writer and close the connections. Idempotent.

        Shielded from cancellation: records already accepted are written before it returns.
        """
        if self._state in ("closing", "closed"):
            return
        if self._state == "new":
            self._state = "closed"
            return
        if anyio.get_current_task().id != self._owner:
            raise RuntimeError(
                f"{self!r} must be closed by the task that opened it (its writer's task group "
                "lives there); hold the store with `async with store:`"
            )
        self._state = "closing"  # from here on, new reads and writes are refused
        self._stopping = True
        self._wake.set()
        try:
            with anyio.CancelScope(shield=True):
                await self._writer_done.wait()  # the writer drains the queue, then returns
                if self._active_reads:
                    await self._reads_idle.wait()
            assert self._stack is not None
            await self._stack.aclose()  # the writer has returned: this only exits its task group
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._close_sync, limiter=self._write_limiter)
            self._state = "closed"

    def _open_sync(self) -> None:
        try:
            self._take_lock()  # before anything touches the database (migration, mark_interrupted)
            self._wconn = conn = self._connect()
            if not self._memory:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StoreError(
                        f"{self.location}: SQLite refused WAL mode (journal_mode is {mode!r}); "
                        "is it on a network filesystem?",
                        location=self.location,
                    )
            conn.execute("PRAGMA synchronous = NORMAL")
            self._migrate(conn)
            if not self._memory:
                for _ in range(self._n_readers):
                    reader = self._connect()
                    reader.execute("PRAGMA query_only = ON")
                    self._readers.append(reader)
        except BaseException:
            self._close_sync()
            raise

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.location, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.location} has schema version {version}, but this Routilux only knows up to "
                f"{SCHEMA_VERSION}; upgrade Routilux or use another database file",
                location=self.location,
            )
        if version == SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            for step in _MIGRATIONS[version:]:
                for statement in step:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _close_sync(self) -> None:
        if self._wconn is not None and not self._memory:
            try:
                self._wconn.execute("PRAGMA optimize")  # what SQLite advises before closing
            except sqlite3.Error:
                log.warning("PRAGMA optimize failed on %s", self.location, exc_info=True)
        for conn in [*self._readers, self._wconn]:
            if conn is not None:
                try:
                    conn.close()
                except sqlite3.Error:  # pragma: no cover - closing a broken connection
                    log.exception("closing a connection to %s failed", self.location)
        self._readers = []
        self._wconn = None
        if self._lock_fd is not None:  # last: the next process starts once everything is written
            release_store(self._lock_fd)
            self._lock_fd = None

    def _take_lock(self) -> None:
        """Refuse with :class:`StoreInUseError` if another process serves this store."""
        self._lock_fd = claim_store(self.location, self.lock_path)

    def _error(self, what: str, exc: sqlite3.Error) -> StoreError:
        message = f"{what} at {self.location}: {exc}"
        if not self._memory and "unable to open" in str(exc) and not Path(self.location).parent.is_dir():
            message += f" (the directory {Path(self.location).parent} does not exist)"
        elif "not a database" in str(exc) or "malformed" in str(exc):
            message += " (the file is not a Routilux SQLite database, or it is corrupt)"
        return StoreError(message, location=self.location, sqlite_error=str(exc))

    def _check_open(self) -> None:
        if self._state != "open" or self._writer_gone:
            if self._state == "new":
                what = "not open yet (use `async with store:`)"
            elif self._state == "open":
                what = "unusable: its writer task was cancelled (close it)"
            else:
                what = "closed"
            raise StoreClosedError(f"the store at {self.location} is {what}", location=self.location)

    def stats(self) -> StoreStats:
        pending_jobs = pending_ops = 0
        for item in self._queue:
            if type(item) is _Op:
                pending_ops += 1
            else:
                pending_jobs += len(item.jobs)
        return StoreStats(
            pending_jobs=pending_jobs,
            pending_events=self._pending_events,
            pending_ops=pending_ops,
            batches=self._batches,
            rows=self._rows,
            failed_batches=self._failed_batches,
            lost_records=self._lost_records,
            rejected_events=self._rejected_events,
        )

    # -- the write queue -------------------------------------------------------------------
    def _segment(self) -> _Segment:
        queue = self._queue
        if queue and type(queue[-1]) is _Segment:
            return queue[-1]  # type: ignore[return-value]
        segment = _Segment()
        queue.append(segment)
        return segment

    async def _submit(self, fn: Callable[..., T] | None, *args: Any) -> T:
        self._check_open()
        op = _Op(fn, args)
        self._queue.append(op)
        self._wake.set()
        await op.done.wait()
        if op.error is not None:
            raise op.error
        return op.result  # type: ignore[no-any-return]

    async def flush(self) -> None:
        self._check_open()
        if self._queue or self._in_flight:
            await self._submit(None)

    async def wait_for_room(self) -> None:
        """Wait until the event backlog is at most half of ``max_pending_events``."""
        while self._pending_events > self.max_pending_events // 2:
            self._check_open()
            await self._room.wait()
        self._check_open()

    def _take(self) -> list[_Segment | _Op]:
        batch: list[_Segment | _Op] = []
        room = self.batch_max
        queue = self._queue
        while queue and room > 0:
            head = queue[0]
            if type(head) is _Op:
                batch.append(queue.popleft())
                room -= 1
                continue
            assert isinstance(head, _Segment)
            if head.size() <= room:
                queue.popleft()
                part = head
            else:
                part = head.split(room)
            batch.append(part)
            room -= part.size()
            self._pending_events -= part.n_events
        return batch

    async def _run_writer(self) -> None:
        try:
            while True:
                if not self._queue:
                    if self._stopping:
                        return
                    await self._wake.wait()
                    self._wake = anyio.Event()
                    continue
                await self._write_next_batch()
        finally:
            # Stopping, or cancelled with the task group: either way, what was accepted is
            # written before the writer goes (shielded; the backlog is bounded). New writes are
            # refused from here on.
            self._writer_gone = True
            with anyio.CancelScope(shield=True):
                try:
                    while self._queue:
                        await self._write_next_batch()
                finally:
                    leftovers = list(self._queue)  # only if draining itself failed
                    self._queue.clear()
                    self._pending_events = 0
                    if leftovers:
                        self._batch_failed(leftovers, StoreClosedError("the store's writer stopped"))
                        for item in leftovers:
                            if type(item) is _Op:
                                item.done.set()
                    self._room.set()
                    self._writer_done.set()

    async def _write_next_batch(self) -> None:
        batch = self._take()
        self._in_flight = True
        try:
            # Shielded: the batch is already off the queue, so once taken it must be written. (The
            # thread could not be interrupted anyway; this also covers the checkpoint before it.)
            with anyio.CancelScope(shield=True):
                rows = await anyio.to_thread.run_sync(self._write_sync, batch, limiter=self._write_limiter)
        except Exception as exc:  # noqa: BLE001 - any failure is reported to the batch's waiters
            self._batch_failed(batch, exc)
        else:
            self._batches += 1
            self._rows += rows
        finally:
            self._in_flight = False
            for item in batch:
                if type(item) is _Op:
                    item.done.set()
            self._room.set()  # wake wait_for_room() callers; they re-check the backlog
            self._room = anyio.Event()

    def _batch_failed(self, batch: list[_Segment | _Op], exc: BaseException) -> None:
        self._failed_batches += 1
        if isinstance(exc, StoreError):
            error = exc
        elif isinstance(exc, sqlite3.Error):
            error = self._error("a write failed", exc)
        else:
            error = StoreError(f"a write to {self.location} failed: {exc!r}", location=self.location)
        lost = 0
        for item in batch:
            if type(item) is _Op:
                if item.error is None:
                    item.error = error
                    item.result = None
            else:
                assert isinstance(item, _Segment)
                lost += item.size()
        if lost:
            self._lost_records += lost
            log.error("%s: %d job records and events were not stored: %s", self.location, lost, error)

    def _write_sync(self, batch: list[_Segment | _Op]) -> int:
        """Write ``batch`` in one transaction (worker thread); returns the rows written."""
        conn = self._wconn
        assert conn is not None
        rows = 0
        touched: dict[str, int] = {}  # job -> highest seq written in this batch
        conn.execute("BEGIN IMMEDIATE")
        try:
            for item in batch:
                if type(item) is _Op:
                    rows += 1
                    if item.fn is None:
                        continue
                    conn.execute("SAVEPOINT op")
                    try:
                        item.result = item.fn(conn, *item.args)
                    except Exception as exc:  # noqa: BLE001 - the op's caller gets it
                        conn.execute("ROLLBACK TO op")
                        item.error = self._error("a write failed", exc) if isinstance(exc, sqlite3.Error) else exc
                    conn.execute("RELEASE op")
                    continue
                assert isinstance(item, _Segment)
                job_rows = []
                for record in item.jobs.values():
                    try:
                        job_rows.append(_job_row(record))
                    except (TypeError, ValueError, msgspec.EncodeError) as exc:
                        self._lost_records += 1
                        log.error("%s: job %s was not stored: %s", self.location, record.job_id, exc)
                conn.executemany(_UPSERT_JOB, job_rows)
                rows += len(job_rows)
                for job_id, events in item.events.items():
                    conn.executemany(_INSERT_EVENT, [(e.job_id, e.seq, e.type, e.payload) for e in events])
                    touched[job_id] = max(touched.get(job_id, 0), max(e.seq for e in events))
                    rows += len(events)
            for job_id, highest in touched.items():
                # seqs run 1, 2, 3...: a job can only be over the bound once its seq is
                if highest > self.events_per_job:
                    conn.execute(_PRUNE_EVENTS, (job_id, self.events_per_job))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return rows

    # -- reads -----------------------------------------------------------------------------
    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        self._check_open()
        self._active_reads += 1
        try:
            if self._memory:
                return await anyio.to_thread.run_sync(
                    self._read_sync, fn, self._wconn, args, limiter=self._write_limiter
                )
            async with self._read_slots:
                conn = self._readers.pop()
                try:
                    return await anyio.to_thread.run_sync(
                        self._read_sync, fn, conn, args, limiter=self._read_threads
                    )
                finally:
                    self._readers.append(conn)
        finally:
            self._active_reads -= 1
            if not self._active_reads and self._state != "open":
                self._reads_idle.set()

    def _read_sync(self, fn: Callable[..., T], conn: sqlite3.Connection, args: tuple[Any, ...]) -> T:
        try:
            return fn(conn, *args)
        except sqlite3.Error as exc:
            raise self._error("a read failed", exc) from None
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")

    # -- flows -----------------------------------------------------------------------------
    async def put_flow(self, record: FlowRecord, *, expected_revision: int | None = None) -> None:
        """See :meth:`Store.put_flow`. The revision check runs inside the writer's transaction,
        which holds SQLite's write lock (``BEGIN IMMEDIATE``) from before the check until after
        the write: no other connection, in this process or another, can write in between."""
        self._check_open()
        check_expected_revision(expected_revision)
        await self._submit(_put_flow, _codec.check_flow(record), expected_revision, self.location)

    async def get_flow(self, flow_id: str) -> FlowRecord | None:
        return await self._read(_get_flow, flow_id)

    async def list_flows(self) -> list[FlowRecord]:
        return await self._read(_list_flows)

    async def delete_flow(self, flow_id: str, expected_revision: int | None = None) -> bool:
        """Forget a flow. Its jobs stay: they are history. ``expected_revision`` is checked
        atomically, as in :meth:`put_flow`."""
        check_expected_revision(expected_revision)
        return await self._submit(_delete_flow, flow_id, expected_revision, self.location)

    # -- jobs ------------------------------------------------------------------------------
    def record_job(self, record: JobRecord) -> None:
        """Enqueue an upsert; a later record for the same job, not yet written, replaces it.

        The record is encoded in the writer's thread: do not mutate dicts inside it afterwards.
        """
        self._check_open()
        record = _codec.check_job(record)
        self._segment().jobs[record.job_id] = record
        self._wake.set()

    async def put_job(self, record: JobRecord) -> None:
        self._check_open()
        await self._submit(_put_job, _codec.check_job(record))

    async def get_job(self, job_id: str) -> JobRecord | None:
        return await self._read(_get_job, job_id)

    async def list_jobs(self, query: JobQuery) -> tuple[list[JobRecord], int]:
        return await self._read(_list_jobs, _codec.check_query(query))

    async def delete_jobs(self, job_ids: Sequence[str]) -> int:
        return await self._submit(_delete_jobs, sorted(set(job_ids)))

    async def prune_jobs(
        self, *, keep: int | None = None, ended_before: datetime | None = None, limit: int = PRUNE_BATCH
    ) -> list[str]:
        """See :meth:`Store.prune_jobs`: one short write transaction that reads the
        ``jobs_finished`` index and deletes by primary key (jobs) and key range (events)."""
        ended_before = _codec.check_prune(keep, ended_before, limit)
        return await self._submit(_prune_jobs, keep, _codec.opt_to_us(ended_before), limit)

    async def mark_interrupted(self, reason: str) -> list[str]:
        return await self._submit(_mark_interrupted, reason, datetime.now(UTC))

    async def counts(self) -> StoreCounts:
        return await self._read(_counts)

    # -- runtimes --------------------------------------------------------------------------
    async def put_runtime(self, record: RuntimeRecord) -> None:
        self._check_open()
        await self._submit(_put_runtime, _codec.check_runtime(record))

    async def list_runtimes(self) -> list[RuntimeRecord]:
        return await self._read(_list_runtimes)

    # -- events ----------------------------------------------------------------------------
    def record_events(self, events: Sequence[StoredEvent]) -> None:
        """Enqueue events; raises :class:`StoreOverloaded` (keeping none of them) when the
        backlog would exceed ``max_pending_events`` — see the module docstring."""
        self._check_open()
        checked = [_codec.check_event(event) for event in events]
        if not checked:
            return
        pending = self._pending_events
        if pending and pending + len(checked) > self.max_pending_events:
            self._rejected_events += len(checked)
            raise StoreOverloaded(
                f"the store at {self.location} has {pending} events waiting to be written "
                f"(limit {self.max_pending_events}); await store.wait_for_room() and retry",
                location=self.location,
                pending_events=pending,
            )
        segment = self._segment()
        per_job = segment.events
        added = 0
        for event in checked:
            kept = per_job.get(event.job_id)
            if kept is None:
                kept = per_job[event.job_id] = deque(maxlen=self.events_per_job)
            if len(kept) < self.events_per_job:
                added += 1
            kept.append(event)  # when full, the oldest goes: it would be pruned after insert anyway
        segment.n_events += added
        self._pending_events += added
        self._wake.set()

    async def events_since(self, job_id: str, since: int = 0, limit: int = 1000) -> list[StoredEvent]:
        _codec.check_limit(limit)
        return await self._read(_events_since, job_id, since, limit)

    # -- job metrics -----------------------------------------------------------------------
    async def put_job_metrics(self, items: Sequence[tuple[str, str, bytes]]) -> None:
        self._check_open()
        rows = [(job_id, flow_id, bytes(data)) for job_id, flow_id, data in items]
        if rows:
            await self._submit(_put_job_metrics, rows)

    async def get_job_metrics(self, job_id: str) -> bytes | None:
        return await self._read(_get_job_metrics, job_id)

    async def all_job_metrics(self) -> list[bytes]:
        return await self._read(_all_job_metrics)


# -- operations, run in a worker thread on the writer's connection -------------------------------
def _check_flow_revision(conn: sqlite3.Connection, flow_id: str, expected: int | None, location: str) -> None:
    """Raise :class:`FlowRevisionConflict` unless the stored flow matches ``expected``. Runs in
    the writer's ``BEGIN IMMEDIATE`` transaction, so the answer still holds when the op writes."""
    if expected is None:
        return
    row = conn.execute("SELECT revision FROM flows WHERE flow_id = ?", (flow_id,)).fetchone()
    FlowRevisionConflict.check(flow_id, expected, None if row is None else row[0], location=location)


def _put_flow(conn: sqlite3.Connection, r: FlowRecord, expected: int | None, location: str) -> None:
    _check_flow_revision(conn, r.flow_id, expected, location)
    row = (r.flow_id, _json(r.document), r.revision, _codec.to_us(r.created_at), _codec.to_us(r.updated_at), r.source)
    conn.execute(_UPSERT_FLOW, row)


def _delete_flow(conn: sqlite3.Connection, flow_id: str, expected: int | None, location: str) -> bool:
    _check_flow_revision(conn, flow_id, expected, location)
    return conn.execute("DELETE FROM flows WHERE flow_id = ?", (flow_id,)).rowcount > 0


def _put_job(conn: sqlite3.Connection, record: JobRecord) -> None:
    conn.execute(_UPSERT_JOB, _job_row(record))


def _delete_jobs(conn: sqlite3.Connection, job_ids: list[str]) -> int:
    params = [(job_id,) for job_id in job_ids]
    conn.executemany("DELETE FROM events WHERE job_id = ?", params)
    conn.executemany("DELETE FROM job_metrics WHERE job_id = ?", params)
    return conn.executemany("DELETE FROM jobs WHERE job_id = ?", params).rowcount


def _prune_jobs(conn: sqlite3.Connection, keep: int | None, ended_before: int | None, limit: int) -> list[str]:
    chosen: dict[str, None] = {}  # ordered, without duplicates
    if keep is not None:
        # The newest finished job beyond ``keep``: it and everything older goes.
        boundary = conn.execute(_PRUNE_BOUNDARY, (keep,)).fetchone()
        if boundary is not None:
            chosen.update((row[0], None) for row in conn.execute(_PRUNE_UP_TO, (*boundary, limit)))
    if ended_before is not None and len(chosen) < limit:
        # Both sets start at the oldest finished job, so their union is again the oldest ones.
        chosen.update((row[0], None) for row in conn.execute(_PRUNE_BEFORE, (ended_before, limit)))
    ids = list(chosen)[:limit]
    _delete_jobs(conn, ids)
    return ids


def _mark_interrupted(conn: sqlite3.Connection, reason: str, now: datetime) -> list[str]:
    ids = [
        row[0]
        for row in conn.execute(
            f"SELECT job_id FROM jobs WHERE status NOT IN ({_TERMINAL_SQL}) ORDER BY created_at, job_id"
        )
    ]
    error = _json({"type": "interrupted", "message": reason})
    conn.executemany(
        "UPDATE jobs SET status = 'failed', error = ?, completed_at = ? WHERE job_id = ?",
        [(error, _codec.to_us(now), job_id) for job_id in ids],
    )
    return ids


def _put_runtime(conn: sqlite3.Connection, r: RuntimeRecord) -> None:
    row = (r.runtime_id, r.thread_pool_size, 1 if r.is_default else 0, _codec.to_us(r.created_at), r.worker_group)
    conn.execute(_UPSERT_RUNTIME, row)


# -- reads, run in a worker thread on a read connection -----------------------------------------
_FLOW_SELECT = "SELECT flow_id, document, revision, created_at, updated_at, source FROM flows"


def _get_flow(conn: sqlite3.Connection, flow_id: str) -> FlowRecord | None:
    row = conn.execute(f"{_FLOW_SELECT} WHERE flow_id = ?", (flow_id,)).fetchone()
    return None if row is None else _flow_from_row(row)


def _list_flows(conn: sqlite3.Connection) -> list[FlowRecord]:
    return [_flow_from_row(row) for row in conn.execute(f"{_FLOW_SELECT} ORDER BY flow_id")]


def _get_job(conn: sqlite3.Connection, job_id: str) -> JobRecord | None:
    row = conn.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    return None if row is None else _job_from_row(row)


def _list_jobs(conn: sqlite3.Connection, query: JobQuery) -> tuple[list[JobRecord], int]:
    where: list[str] = []
    params: list[Any] = []
    for column in ("flow_id", "status", "runtime_id"):
        value = getattr(query, column)
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    conn.execute("BEGIN")  # one snapshot for the page and the total
    columns = _JOB_COLUMNS if query.with_state else _JOB_COLUMNS_NO_STATE
    page = conn.execute(
        f"SELECT {columns} FROM jobs{clause} ORDER BY created_at DESC, job_id LIMIT ? OFFSET ?",
        (*params, query.limit, query.offset),
    ).fetchall()
    total = conn.execute(f"SELECT COUNT(*) FROM jobs{clause}", params).fetchone()[0]
    conn.execute("COMMIT")
    return [_job_from_row(row) for row in page], total


def _counts(conn: sqlite3.Connection) -> StoreCounts:
    flows, jobs = conn.execute(
        "SELECT (SELECT COUNT(*) FROM flows), (SELECT COUNT(*) FROM jobs)"
    ).fetchone()
    return StoreCounts(flow_count=flows, job_count=jobs)


def _list_runtimes(conn: sqlite3.Connection) -> list[RuntimeRecord]:
    return [
        RuntimeRecord(
            runtime_id=runtime_id,
            thread_pool_size=size,
            is_default=bool(is_default),
            created_at=_codec.from_us(created),
            worker_group=group,
        )
        for runtime_id, size, is_default, created, group in conn.execute(
            "SELECT runtime_id, thread_pool_size, is_default, created_at, worker_group FROM runtimes "
            "ORDER BY created_at, runtime_id"
        )
    ]


def _events_since(conn: sqlite3.Connection, job_id: str, since: int, limit: int) -> list[StoredEvent]:
    return [
        StoredEvent(job_id=job_id, seq=seq, type=type_, payload=payload)
        for seq, type_, payload in conn.execute(
            "SELECT seq, type, payload FROM events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (job_id, since, limit),
        )
    ]


def _put_job_metrics(conn: sqlite3.Connection, rows: list[tuple[str, str, bytes]]) -> None:
    conn.executemany("DELETE FROM job_metrics WHERE job_id = ?", [(row[0],) for row in rows])
    conn.executemany("INSERT INTO job_metrics (job_id, flow_id, data) VALUES (?, ?, ?)", rows)


def _get_job_metrics(conn: sqlite3.Connection, job_id: str) -> bytes | None:
    row = conn.execute("SELECT data FROM job_metrics WHERE job_id = ?", (job_id,)).fetchone()
    return bytes(row[0]) if row is not None else None


def _all_job_metrics(conn: sqlite3.Connection) -> list[bytes]:
    return [bytes(row[0]) for row in conn.execute("SELECT data FROM job_metrics ORDER BY stored")]

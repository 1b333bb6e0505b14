"""The SQLite store: connections, the lock that keeps one process per file, and the contract's
methods, each a read function (:mod:`~routilux.store.sqlite.reads`) run in a worker thread or an
operation (:mod:`~routilux.store.sqlite.writes`) queued for the batch writer."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, TypeVar, cast

import anyio

from routilux.store import _codec
from routilux.store.base import (
    PRUNE_BATCH,
    CheckpointRecord,
    FlowRecord,
    JobQuery,
    JobRecord,
    RuntimeRecord,
    StoreCounts,
    StoredEvent,
    StoredPost,
)
from routilux.store.batch_writer import Op, Written
from routilux.store.batched import BatchedStore
from routilux.store.errors import StoreError, check_expected_revision
from routilux.store.segments import NewestEvents
from routilux.store.single_process import claim_store, release_store
from routilux.store.sqlite import reads, writes
from routilux.store.sqlite.errors import MEMORY, sqlite_error
from routilux.store.sqlite.schema import migrate

log = logging.getLogger("routilux.store")

T = TypeVar("T")


Synchronous = Literal["FULL", "NORMAL"]
#: The ``PRAGMA synchronous`` levels a store may run with (see :class:`SQLiteStore`).
SYNCHRONOUS_MODES: Final[tuple[Synchronous, ...]] = ("FULL", "NORMAL")


class SQLiteStore(BatchedStore[NewestEvents]):
    """The :class:`~routilux.store.base.Store` contract on SQLite (see :mod:`routilux.store.sqlite`).

    ``path`` is a file (its directory must exist) or ``":memory:"``. ``events_per_job`` bounds
    each job's stored events (newest kept); ``batch_max`` bounds the rows one transaction writes;
    ``max_pending_events`` bounds the events waiting for the writer; ``readers`` is the size of
    the read-connection pool (file databases); ``busy_timeout`` is how long, in seconds, to wait
    for a lock held by another process before failing.

    ``synchronous`` is SQLite's ``PRAGMA synchronous``: ``"FULL"`` (the default) syncs the
    write-ahead log to the disk at every commit, so a commit that returned survives an OS crash or
    a power cut — what a 2xx promises. ``"NORMAL"`` syncs only at checkpoints: commits are faster,
    and still survive the process being killed, but the last ones may be lost with the machine.
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
        synchronous: Synchronous = "FULL",
    ) -> None:
        if synchronous not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)} (got {synchronous!r})")
        self.synchronous = synchronous
        if events_per_job < 1 or batch_max < 1 or max_pending_events < 1 or readers < 1:
            raise ValueError("events_per_job, batch_max, max_pending_events and readers must be >= 1")
        self._memory = str(path) == MEMORY
        self.path: str | Path = MEMORY if self._memory else Path(path)
        super().__init__(str(self.path), NewestEvents, events_per_job=events_per_job, batch_max=batch_max,
                         max_pending_events=max_pending_events)
        self._n_readers = 1 if self._memory else readers
        self._busy_timeout = busy_timeout
        #: The file whose ``flock`` says "this process serves the store" (None: nothing to lock).
        self.lock_path: Path | None = None if self._memory else Path(f"{Path(path).resolve()}.lock")
        self._lock_fd: int | None = None

        self._wconn: sqlite3.Connection | None = None
        self._readers: list[sqlite3.Connection] = []
        self._write_limiter = anyio.CapacityLimiter(1)
        self._read_slots = anyio.CapacityLimiter(self._n_readers)
        self._read_threads = anyio.CapacityLimiter(self._n_readers)
        self._active_reads = 0
        self._reads_idle = anyio.Event()

    def __repr__(self) -> str:
        return f"SQLiteStore({self.location!r})"

    # -- connections -----------------------------------------------------------------------
    async def _connect(self) -> None:
        """Lock the store, open the database (creating or migrating its schema) and the readers."""
        try:
            await anyio.to_thread.run_sync(self._open_sync, limiter=self._write_limiter)
        except sqlite3.Error as exc:
            raise sqlite_error(self.location, "cannot open the store", exc) from None

    async def _until_idle(self) -> None:
        if self._active_reads:
            await self._reads_idle.wait()

    async def _disconnect(self) -> None:
        await anyio.to_thread.run_sync(self._close_sync, limiter=self._write_limiter)

    def _open_sync(self) -> None:
        try:
            # Before anything touches the database (migration, mark_interrupted): refuse with
            # StoreInUseError if another process serves this store.
            self._lock_fd = claim_store(self.location, self.lock_path)
            self._wconn = conn = self._new_connection()
            if not self._memory:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StoreError(
                        f"{self.location}: SQLite refused WAL mode (journal_mode is {mode!r}); "
                        "is it on a network filesystem?",
                        location=self.location,
                    )
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            migrate(conn, self.location)
            if not self._memory:
                for _ in range(self._n_readers):
                    reader = self._new_connection()
                    reader.execute("PRAGMA query_only = ON")
                    self._readers.append(reader)
        except BaseException:
            self._close_sync()
            raise

    def _new_connection(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.location, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
        return conn

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

    # -- writes ----------------------------------------------------------------------------
    async def _submit(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in the writer's transaction, behind everything queued."""
        return cast(T, await self._enqueue(fn, *args))

    async def _write_batch(self, batch: list[NewestEvents | Op]) -> Written:
        conn = self._wconn
        assert conn is not None
        return await anyio.to_thread.run_sync(
            writes.write_batch, conn, batch, self.events_per_job, self.location, limiter=self._write_limiter
        )

    def _write_error(self, exc: Exception) -> StoreError:
        if isinstance(exc, sqlite3.Error):
            return sqlite_error(self.location, "a write failed", exc)
        return StoreError(f"a write to {self.location} failed: {exc!r}", location=self.location)

    # -- reads -----------------------------------------------------------------------------
    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        self._check_open()
        self._active_reads += 1
        try:
            if self._memory:
                assert self._wconn is not None
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
            raise sqlite_error(self.location, "a read failed", exc) from None
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
        await self._submit(writes.put_flow, _codec.check_flow(record), expected_revision, self.location)

    async def get_flow(self, flow_id: str) -> FlowRecord | None:
        return await self._read(reads.get_flow, flow_id)

    async def list_flows(self) -> list[FlowRecord]:
        return await self._read(reads.list_flows)

    async def delete_flow(self, flow_id: str, expected_revision: int | None = None) -> bool:
        """Forget a flow. Its jobs stay: they are history. ``expected_revision`` is checked
        atomically, as in :meth:`put_flow`."""
        check_expected_revision(expected_revision)
        return await self._submit(writes.delete_flow, flow_id, expected_revision, self.location)

    # -- jobs ------------------------------------------------------------------------------
    async def put_job(self, record: JobRecord, *, checkpoint: CheckpointRecord | None = None) -> None:
        self._check_open()
        record = _codec.check_job(record)
        if checkpoint is None:
            await self._submit(writes.put_job, record)
        else:
            await self._submit(writes.put_job_with_checkpoint, record, _codec.check_checkpoint(checkpoint))

    async def get_job(self, job_id: str) -> JobRecord | None:
        return await self._read(reads.get_job, job_id)

    async def list_jobs(self, query: JobQuery) -> tuple[list[JobRecord], int]:
        return await self._read(reads.list_jobs, _codec.check_query(query))

    async def delete_jobs(self, job_ids: Sequence[str]) -> int:
        return await self._submit(writes.delete_jobs, sorted(set(job_ids)))

    async def prune_jobs(
        self, *, keep: int | None = None, ended_before: datetime | None = None, limit: int = PRUNE_BATCH
    ) -> list[str]:
        """See :meth:`Store.prune_jobs`: one short write transaction that reads the
        ``jobs_finished`` index and deletes by primary key (jobs) and key range (events)."""
        ended_before = _codec.check_prune(keep, ended_before, limit)
        return await self._submit(writes.prune_jobs, keep, _codec.opt_to_us(ended_before), limit)

    async def mark_interrupted(self, reason: str, *, keep: Collection[str] = ()) -> list[str]:
        return await self._submit(writes.mark_interrupted, reason, datetime.now(UTC), frozenset(keep))

    async def counts(self) -> StoreCounts:
        return await self._read(reads.counts)

    # -- runtimes --------------------------------------------------------------------------
    async def probe_writes(self) -> None:
        self._check_open()
        await self._submit(writes.probe)

    async def put_runtime(self, record: RuntimeRecord) -> None:
        self._check_open()
        await self._submit(writes.put_runtime, _codec.check_runtime(record))

    async def list_runtimes(self) -> list[RuntimeRecord]:
        return await self._read(reads.list_runtimes)

    # -- events ----------------------------------------------------------------------------
    async def events_since(self, job_id: str, since: int = 0, limit: int = 1000) -> list[StoredEvent]:
        _codec.check_limit(limit)
        return await self._read(reads.events_since, job_id, since, limit)

    async def last_event_seqs(self, job_ids: Collection[str]) -> dict[str, int]:
        return await self._read(reads.last_event_seqs, list(job_ids))

    # -- job metrics -----------------------------------------------------------------------
    async def put_job_metrics(self, items: Sequence[tuple[str, str, bytes]]) -> None:
        self._check_open()
        rows = [(job_id, flow_id, bytes(data)) for job_id, flow_id, data in items]
        if rows:
            await self._submit(writes.put_job_metrics, rows)

    async def get_job_metrics(self, job_id: str) -> bytes | None:
        return await self._read(reads.get_job_metrics, job_id)

    async def all_job_metrics(self) -> list[bytes]:
        return await self._read(reads.all_job_metrics)

    # -- checkpoints and posts -------------------------------------------------------------
    # Awaited operations of the batch writer: concurrent ones join one transaction (one commit,
    # one fsync). A job that ends loses both by trigger (see :mod:`~routilux.store.sqlite.schema`).
    async def put_checkpoint(self, record: CheckpointRecord) -> None:
        self._check_open()
        await self._submit(writes.put_checkpoint, _codec.check_checkpoint(record))

    async def get_checkpoint(self, job_id: str) -> CheckpointRecord | None:
        return await self._read(reads.get_checkpoint, job_id)

    async def list_checkpoints(self) -> list[CheckpointRecord]:
        return await self._read(reads.list_checkpoints)

    async def append_post(self, post: StoredPost) -> None:
        self._check_open()
        await self._submit(writes.append_post, _codec.check_post(post))

    async def posts_after(self, job_id: str, n: int) -> list[StoredPost]:
        return await self._read(reads.posts_after, job_id, n)

    async def posts_after_many(self, after: Mapping[str, int]) -> dict[str, list[StoredPost]]:
        return await self._read(reads.posts_after_many, dict(after))

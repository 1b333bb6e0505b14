"""The life cycle and hot-path writes shared by every store that writes through a
:class:`~routilux.store.batch_writer.BatchWriter` (SQLite, Redis).

A store is ``new`` → ``open`` → ``closing`` → ``closed``. :meth:`BatchedStore.open` connects
(the backend's :meth:`~BatchedStore._connect`) and starts the writer; :meth:`BatchedStore.close`
lets the writer write everything accepted, waits for the backend to be idle, then disconnects.
The writer's task group lives in the task that opened the store, so **open and close must be
called from the same task** — ``async with store:`` is the way to hold one. Reads and writes may
come from any task on the same event loop; after close every call raises
:class:`~routilux.store.errors.StoreClosedError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic

import anyio

from routilux.store import _codec
from routilux.store.base import JobRecord, StoredEvent, StoreLifetime
from routilux.store.batch_writer import BatchWriter, Op, S, StoreStats, Written
from routilux.store.errors import StoreClosedError, StoreError


class BatchedStore(StoreLifetime, Generic[S]):
    """What SQLite and Redis stores share. A subclass implements :meth:`_connect`,
    :meth:`_disconnect`, :meth:`_write_batch` and :meth:`_write_error`; ``segment`` is how it
    coalesces events (see :class:`~routilux.store.batch_writer.BatchWriter`)."""

    def __init__(self, location: str, segment: type[S], *, events_per_job: int, batch_max: int,
                 max_pending_events: int) -> None:
        # The writer calls back into this store (write, error_of): the backend writes, the writer
        # decides what and when.
        self.location = location
        self.events_per_job = events_per_job
        self._state = "new"  # new → open → closing → closed
        self._owner: int | None = None  # the id of the task that opened the store
        self._writer: BatchWriter[S] = BatchWriter(
            location=location,
            new_segment=lambda: segment(events_per_job),
            write=self._write_batch,
            error_of=self._write_error,
            batch_max=batch_max,
            max_pending_events=max_pending_events,
            retryable=self._retryable,
        )

    @property
    def batch_max(self) -> int:
        """The most rows (SQLite) or records (Redis) one batch writes."""
        return self._writer.batch_max

    @property
    def max_pending_events(self) -> int:
        """The most events waiting for the writer before ``record_events`` refuses more."""
        return self._writer.max_pending_events

    # -- the backend's part ----------------------------------------------------------------
    async def _write_batch(self, batch: list[S | Op]) -> Written:
        """Write ``batch`` (in the writer task); raise if the whole batch failed."""
        raise NotImplementedError

    def _retryable(self, exc: Exception) -> bool:
        """Whether a batch that failed with ``exc`` should be written again later (the backend
        is unreachable for now) rather than reported lost. None is, unless the backend says."""
        return False

    def _write_error(self, exc: Exception) -> StoreError:
        """Why a whole batch failed, naming the store (``exc`` is not a StoreError)."""
        raise NotImplementedError

    async def _connect(self) -> None:
        """Connect and prepare the backend; on failure, undo what was done and raise."""
        raise NotImplementedError

    async def _disconnect(self) -> None:
        """Release what :meth:`_connect` took (shielded by the caller; must not fail)."""
        raise NotImplementedError

    async def _until_idle(self) -> None:
        """Wait for the backend's own work in flight (reads) once the writer has returned."""

    # -- life cycle ------------------------------------------------------------------------
    async def open(self) -> None:
        """Connect and start the writer task. Must be awaited in the task that will later await
        :meth:`close`."""
        if self._state != "new":
            raise StoreError(f"{self!r} was already opened; make a new store", location=self.location)
        await self._connect()
        self._owner = anyio.get_current_task().id
        await self._writer.start()
        self._state = "open"

    async def close(self) -> None:
        """Write everything pending, stop the writer and disconnect. Idempotent.

        Shielded from cancellation: records already accepted are written (or reported lost)
        before it returns.
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
        try:
            with anyio.CancelScope(shield=True):
                await self._writer.stop()  # the writer drains the queue, then returns
                await self._until_idle()
            await self._writer.aclose()  # the writer has returned: this only exits its task group
        finally:
            with anyio.CancelScope(shield=True):
                await self._disconnect()
            self._state = "closed"

    def _check_open(self) -> None:
        if self._state != "open" or self._writer.gone:
            if self._state == "new":
                what = "not open yet (use `async with store:`)"
            elif self._state == "open":
                what = "unusable: its writer task was cancelled (close it)"
            else:
                what = "closed"
            raise StoreClosedError(f"the store at {self.location} is {what}", location=self.location)

    def stats(self) -> StoreStats:
        """What the writer is doing; cheap, meant for logs and /metrics."""
        return self._writer.stats()

    @property
    def write_error(self) -> StoreError | None:
        return self._writer.write_error

    # -- writes ----------------------------------------------------------------------------
    async def _enqueue(self, fn: Callable[..., Any] | None, *args: Any, alone: bool = False) -> Any:
        """Queue an operation behind everything enqueued so far and wait for its result
        (``alone``: in a batch of its own, see :class:`~routilux.store.batch_writer.Op`)."""
        self._check_open()
        return await self._writer.submit(fn, *args, alone=alone)

    async def flush(self) -> None:
        self._check_open()
        await self._writer.flush()

    async def wait_for_room(self) -> None:
        """Wait until the event backlog is at most half of ``max_pending_events``."""
        await self._writer.wait_for_room(self._check_open)

    def record_job(self, record: JobRecord) -> None:
        """Enqueue an upsert; a later record for the same job, not yet written, replaces it.

        The record is encoded by the writer: do not mutate dicts inside it afterwards.
        """
        self._check_open()
        self._writer.record_job(_codec.check_job(record))

    def record_events(self, events: Sequence[StoredEvent]) -> None:
        """Enqueue events; raises :class:`~routilux.store.errors.StoreOverloaded` (keeping none
        of them) when the backlog would exceed ``max_pending_events``."""
        self._check_open()
        checked = [_codec.check_event(event) for event in events]
        if checked:
            self._check_events(checked)
            self._writer.record_events(checked)

    def _check_events(self, events: list[StoredEvent]) -> None:
        """Refuse events this backend cannot store (raise before anything is kept)."""

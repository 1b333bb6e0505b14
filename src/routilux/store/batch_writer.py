"""The one queued, coalescing writer every batching store writes through (SQLite, Redis).

How writes flow
    Every write goes through one queue, in order, and is applied by one writer task. Between two
    awaited operations (:class:`Op`: ``put_flow``, ``delete_*``, ``flush``...), fire-and-forget
    writes are coalesced into a :class:`~routilux.store.segments.Segment`. The writer takes the
    head of the queue, at most ``batch_max`` rows, and hands it to the backend's ``write``
    callable, which writes it in one go (one SQLite transaction in a worker thread, one Redis
    pipeline) so the event loop never waits on the disk or the network. An awaited operation
    returns once the batch holding it is written; :meth:`BatchWriter.flush` returns once
    everything enqueued before it is.

    A batch holds operations and records alike, in queue order, up to ``batch_max`` rows: one
    SQLite transaction, one Redis pipeline. That is what keeps a busy server's writes cheap: each
    request's operation (a job start, a post) rides in the batch with the records of every job,
    instead of alternating with them (operation, records, operation...) one round trip each. An
    operation submitted ``alone`` (several dependent steps: ``mark_interrupted``) is a
    batch of its own.

    Records alone wait to gather: a batch of nothing but records starts at most once per
    ``GATHER_SECONDS`` (1 ms). A job logging thousands of events a second would otherwise cost a
    round trip (a Redis pipeline, a SQLite transaction) per event; gathered, it costs one per
    handful, its events reach the store at most 1 ms later, and a server relaying them to its
    watchers reads them in fewer, bigger chunks too. Slower than one event per millisecond, no
    event waits. An awaited operation (someone waits for it) or a stop never waits.

Memory bounds and overload (nothing is ever dropped silently)
    * Job records are coalesced, so pending job writes are bounded by the number of distinct
      jobs — ``record_job`` never fails for load.
    * Pending events are bounded by ``max_pending_events``. A ``record_events`` call that would
      go beyond it raises :class:`~routilux.store.errors.StoreOverloaded` and keeps none of its
      events, so the caller knows exactly what was not stored; it should ``await
      wait_for_room()`` (which returns once the backlog is at most half the limit) and retry.
    * If a batch of records fails because the backend is unreachable for now (``retryable``:
      Redis lost, restarting, loading its data), nothing of it is lost: it goes back to the head
      of the queue and is written again after a capped, jittered backoff, for as long as the
      store is open. Meanwhile the records keep coalescing behind it (still bounded as above),
      and every awaited operation fails at once with the error (the caller answers 503 now
      rather than wait for an outage of unknown length; nothing it asked for was written).
    * If a whole batch cannot be written otherwise, every awaited operation in it raises
      :class:`~routilux.store.errors.StoreError`, and the fire-and-forget records in it are
      reported in the log at ERROR level and counted in :meth:`BatchWriter.stats`. The events
      among them are remembered as seq ranges per job, and written as ``gap`` entries (see
      :func:`routilux.bus.encode_gap`) with the first batch that succeeds again: a job's history
      then names what it lost instead of silently skipping it.

Ownership: the writer task lives in a task group that :meth:`BatchWriter.start` enters and
:meth:`BatchWriter.aclose` exits (the store's ``open`` and ``close``, in one task). Stopping, or
cancelling the owner, still writes everything already accepted (shielded; the backlog is
bounded) before the writer returns.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from typing import Any, Generic, NamedTuple, TypeVar

import anyio
import msgspec

from routilux.bus.encoding import decode_gap, encode_gap
from routilux.store.backoff import Backoff
from routilux.store.base import JobRecord, StoredEvent
from routilux.store.errors import StoreClosedError, StoreError, StoreOverloaded
from routilux.store.segments import Segment

log = logging.getLogger("routilux.store")

#: The least time between the starts of two batches of records alone (see the module docstring).
GATHER_SECONDS = 0.001

#: The backend's segment type (how it coalesces events).
S = TypeVar("S", bound=Segment[Any])


class StoreStats(msgspec.Struct, frozen=True):
    """What the writer is doing; cheap to take, meant for logs and /metrics."""

    pending_jobs: int  # coalesced job upserts waiting to be written
    pending_events: int  # events waiting to be written
    pending_ops: int  # awaited operations (put_*, delete_*, flush...) waiting
    batches: int  # batches written (transactions committed, pipelines sent)
    rows: int  # job upserts + events + operations written
    failed_batches: int  # batches that could not be written
    lost_records: int  # fire-and-forget job records and events not written (all logged)
    rejected_events: int  # events refused with StoreOverloaded (the caller was told)


class Op:
    """One awaited operation, in queue order. The backend runs ``fn`` (its meaning is the
    backend's: SQLite calls ``fn(conn, *args)`` in its transaction; Redis adds an operation's
    script calls to the batch's pipeline, or awaits ``fn(*args)`` for one ``alone``) and sets
    ``result`` or ``error``; ``fn`` None is a flush barrier. ``alone``: written as a batch of its
    own, not with the records and operations beside it."""

    __slots__ = ("alone", "args", "committed", "done", "error", "fn", "result")

    def __init__(self, fn: Callable[..., Any] | None, args: tuple[Any, ...], *, alone: bool = False) -> None:
        self.fn = fn
        self.args = args
        self.alone = alone
        self.done = anyio.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        #: Set by a backend whose operations each commit on their own (Redis): a later failure in
        #: the same batch does not undo this one, so it is not reported as failed.
        self.committed = False


class Written(NamedTuple):
    """What the backend's ``write`` reports of a batch it wrote."""

    rows: int  # rows written (an operation counts as one)
    lost: int  # records it could not write, each already logged (unencodable, refused)


class BatchWriter(Generic[S]):
    """The write queue and its writer task (see the module docstring).

    ``write(batch)`` writes a batch (segments and operations, in order) and returns
    :class:`Written`; if it raises, the whole batch failed and ``error_of(exc)`` says why, as a
    :class:`StoreError` naming the store (``exc`` is never a ``StoreError`` there: those pass
    as they are). ``new_segment()`` makes an empty segment of the backend's kind.
    """

    def __init__(
        self,
        *,
        location: str,
        new_segment: Callable[[], S],
        write: Callable[[list[S | Op]], Awaitable[Written]],
        error_of: Callable[[Exception], StoreError],
        batch_max: int,
        max_pending_events: int,
        retryable: Callable[[Exception], bool] | None = None,
        gather_seconds: float = GATHER_SECONDS,
    ) -> None:
        self.location = location
        self._retryable = retryable
        self.batch_max = batch_max
        self.max_pending_events = max_pending_events
        self._new_segment = new_segment
        self._write = write
        self._error_of = error_of

        self._stack: AsyncExitStack | None = None
        self._queue: deque[S | Op] = deque()
        self._in_flight = False
        self._stopping = False
        self._gone = False
        self._done = anyio.Event()
        self._wake = anyio.Event()
        #: Set when an awaited operation is queued (or the writer must stop): no gathering then.
        self._urgent = anyio.Event()
        self._gather_seconds = gather_seconds
        self._last_start = -gather_seconds  # when the last batch started (event loop clock)
        self._room = anyio.Event()
        self._pending_events = 0
        self._batches = 0
        self._rows = 0
        self._failed_batches = 0
        self._lost_records = 0
        #: Why the last batch could not be written, until one is written again (health reads it).
        self.write_error: StoreError | None = None
        self._rejected_events = 0
        #: Per job, the seq ranges of events that could not be written, until their gap entries are.
        self._lost_ranges: dict[str, list[list[int]]] = {}
        #: The head of the queue is a batch of records waiting to be written again (see the module
        #: docstring); its delays. ``_stop_wanted`` cuts a wait short.
        self._retrying = False
        self._backoff = Backoff(cap=1.0)  # awaited writes fail at once until a retry succeeds
        self._stop_wanted = anyio.Event()
        self._retried_batches = 0

    @property
    def gone(self) -> bool:
        """The writer task has returned (stopped, or cancelled with its owner): writes are over."""
        return self._gone

    @property
    def pending_events(self) -> int:
        return self._pending_events

    # -- life cycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the writer task in a task group of its own, entered in the calling task."""
        stack = AsyncExitStack()
        task_group = await stack.enter_async_context(anyio.create_task_group())
        task_group.start_soon(self._run, name=f"routilux store writer ({self.location})")
        self._stack = stack

    async def stop(self) -> None:
        """Let the writer write everything queued and return; waits for it (shield the call)."""
        self._stopping = True
        self._wake.set()
        self._urgent.set()
        self._stop_wanted.set()
        await self._done.wait()

    async def aclose(self) -> None:
        """Exit the writer's task group (after :meth:`stop`: the writer has returned)."""
        assert self._stack is not None
        await self._stack.aclose()

    # -- enqueueing ------------------------------------------------------------------------
    def record_job(self, record: JobRecord) -> None:
        """Coalesce an upsert into the tail segment: a later record for the job replaces it."""
        self._segment().jobs[record.job_id] = record
        self._wake.set()

    def record_events(self, events: Sequence[StoredEvent]) -> None:
        """Coalesce checked ``events`` (not empty) into the tail segment, or raise
        :class:`StoreOverloaded` keeping none of them if the backlog would exceed the limit."""
        pending = self._pending_events
        if pending and pending + len(events) > self.max_pending_events:
            self._rejected_events += len(events)
            raise StoreOverloaded(
                f"the store at {self.location} has {pending} events waiting to be written "
                f"(limit {self.max_pending_events}); await store.wait_for_room() and retry",
                location=self.location,
                pending_events=pending,
            )
        self._pending_events += self._segment().add_events(events)
        self._wake.set()

    async def submit(self, fn: Callable[..., Any] | None, *args: Any, alone: bool = False) -> Any:
        """Queue an operation and wait until the batch holding it is written; its result, or
        its error raised here. ``alone``: see :class:`Op`."""
        if self._retrying and self.write_error is not None:
            raise self.write_error  # the backend is unreachable: fail now (see the module docstring)
        op = Op(fn, args, alone=alone)
        self._queue.append(op)
        self._wake.set()
        self._urgent.set()
        await op.done.wait()
        if op.error is not None:
            raise op.error
        return op.result

    async def flush(self) -> None:
        """Wait until everything enqueued before this call is written."""
        if self._queue or self._in_flight:
            await self.submit(None)

    async def wait_for_room(self, check_open: Callable[[], None]) -> None:
        """Wait until the event backlog is at most half of ``max_pending_events``;
        ``check_open`` raises if the store closed meanwhile."""
        while self._pending_events > self.max_pending_events // 2:
            check_open()
            await self._room.wait()
        check_open()

    def stats(self) -> StoreStats:
        pending_jobs = pending_ops = 0
        for item in self._queue:
            if isinstance(item, Op):
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

    def _segment(self) -> S:
        queue = self._queue
        if queue:
            tail = queue[-1]
            if not isinstance(tail, Op):
                return tail
        segment = self._new_segment()
        queue.append(segment)
        return segment

    # -- the writer task -------------------------------------------------------------------
    async def _run(self) -> None:
        try:
            while True:
                if not self._queue:
                    if self._stopping:
                        return
                    await self._wake.wait()
                    self._wake = anyio.Event()
                    continue
                await self._gather()
                await self._write_next()
        finally:
            # Stopping, or cancelled with the task group: either way, what was accepted is
            # written before the writer goes (shielded; the backlog is bounded). New writes are
            # refused from here on.
            self._gone = True
            with anyio.CancelScope(shield=True):
                try:
                    while self._queue:
                        await self._write_next()
                finally:
                    self._abandon(list(self._queue))
                    self._queue.clear()
                    self._pending_events = 0
                    self._room.set()
                    self._done.set()

    async def _gather(self) -> None:
        """Records alone: wait until ``gather_seconds`` after the last batch started, or until an
        operation is queued (see the module docstring)."""
        if not self._urgent.is_set():
            wait = self._last_start + self._gather_seconds - anyio.current_time()
            if wait > 0:
                with anyio.move_on_after(wait):
                    await self._urgent.wait()
        self._last_start = anyio.current_time()
        if not self._stopping:
            self._urgent = anyio.Event()

    def _take(self) -> list[S | Op]:
        """The next batch off the front of the queue: at most ``batch_max`` rows; an operation
        ``alone`` is a batch of its own."""
        batch: list[S | Op] = []
        room = self.batch_max
        queue = self._queue
        while queue and room > 0:
            head = queue[0]
            if isinstance(head, Op):
                if head.alone and batch:
                    break
                batch.append(queue.popleft())
                room -= 1
                if head.alone:
                    break
            else:
                if head.size() <= room:
                    queue.popleft()
                    part = head
                else:
                    part = head.split(room)
                batch.append(part)
                room -= part.size()
                self._pending_events -= part.n_events
        if any(isinstance(item, Op) for item in queue):  # left for the next batch (batch_max)
            self._urgent.set()
        return batch

    async def _write_next(self) -> None:
        batch = self._take()
        self._in_flight = True
        retry_in = 0.0
        try:
            # Shielded: the batch is already off the queue, so once taken it must be written (or
            # reported). A worker thread could not be interrupted anyway.
            with anyio.CancelScope(shield=True):
                written = await self._write(batch)
        except Exception as exc:  # noqa: BLE001 - any failure is reported to the batch's waiters
            error = exc if isinstance(exc, StoreError) else self._error_of(exc)
            if self._may_retry(batch, exc):
                retry_in = self._put_back(batch, error)
            else:
                self._batch_failed(batch, error)
                if self._retryable is not None and self._retryable(exc):
                    self._fail_waiting_ops(error)
        else:
            if self._retrying:
                log.warning("%s: the store is reachable again; %d batch(es) were written late, none lost",
                            self.location, self._retried_batches)
                self._retrying = False
                self._retried_batches = 0
                self._backoff.reset()
            self._batches += 1
            self._rows += written.rows
            self._lost_records += written.lost
            if self.write_error is not None:
                log.warning("%s: writes succeed again after: %s", self.location, self.write_error.message)
                self.write_error = None
            if self._lost_ranges and not self._gone:
                self._record_gaps()
        finally:
            self._in_flight = False
            for item in batch:
                if isinstance(item, Op):
                    item.done.set()
            self._room.set()  # wake wait_for_room() callers; they re-check the backlog
            self._room = anyio.Event()
        if retry_in:
            with anyio.move_on_after(retry_in):
                await self._stop_wanted.wait()

    def _may_retry(self, batch: list[S | Op], exc: Exception) -> bool:
        """The batch holds records, the backend is unreachable, and the store is not stopping
        (the final drain writes once, then reports)."""
        return (self._retryable is not None and not self._stopping and not self._gone
                and any(not isinstance(item, Op) for item in batch) and self._retryable(exc))

    def _put_back(self, batch: list[S | Op], error: StoreError) -> float:
        """Return the records of ``batch`` to the head of the queue, fail its operations and
        every one waiting (their callers hear "unavailable" now; nothing they asked for is
        acknowledged), and say how long to wait before the next attempt."""
        if not self._retrying:
            log.error("%s: writes fail, the store is unreachable: %s; keeping the records and retrying",
                      self.location, error.message)
        self._retrying = True
        self._retried_batches += 1
        self.write_error = error
        self._fail([item for item in batch if isinstance(item, Op)], error)
        for item in reversed(batch):
            if not isinstance(item, Op):
                self._queue.appendleft(item)
                self._pending_events += item.n_events
        self._fail_waiting_ops(error)
        return self._backoff.next()

    def _fail_waiting_ops(self, error: StoreError) -> None:
        """Fail every operation queued now: the backend is unreachable, and each would wait for
        the attempts ahead of it to time out before timing out itself (a request must hear
        "unavailable" within one attempt)."""
        waiting: list[S | Op] = [item for item in self._queue if isinstance(item, Op)]
        if waiting:
            self._queue = deque(item for item in self._queue if not isinstance(item, Op))
            self._fail(waiting, error)
            for op in waiting:
                assert isinstance(op, Op)
                op.done.set()

    def _batch_failed(self, batch: list[S | Op], error: StoreError) -> None:
        self._failed_batches += 1
        self.write_error = error
        self._fail(batch, error)

    def _note_lost_events(self, segment: S) -> None:
        """Remember the seq range of each job's events in ``segment`` (written in seq order, so
        one range per job per batch; a gap entry among them widens it to what it named)."""
        for job_id, kept in segment.events.items():
            events: Any = kept.values() if isinstance(kept, dict) else kept
            low = high = None
            for event in events:
                first = decode_gap(event.payload)[0] if event.type == "gap" else event.seq
                low = first if low is None else min(low, first)
                high = event.seq if high is None else max(high, event.seq)
            if low is None or high is None:
                continue
            ranges = self._lost_ranges.setdefault(job_id, [])
            if ranges and ranges[-1][1] + 1 >= low and low >= ranges[-1][0]:
                ranges[-1][1] = max(ranges[-1][1], high)
            else:
                ranges.append([low, high])

    def _record_gaps(self) -> None:
        """Queue a ``gap`` entry for every range of events that could not be written."""
        lost, self._lost_ranges = self._lost_ranges, {}
        gaps = [StoredEvent(job_id, high, "gap", encode_gap(job_id, low, high))
                for job_id, ranges in lost.items() for low, high in ranges]
        self._pending_events += self._segment().add_events(gaps)
        self._wake.set()

    def _abandon(self, leftovers: list[S | Op]) -> None:
        """Fail what could not even be attempted (only if draining itself failed)."""
        if leftovers:
            self._fail(leftovers, StoreClosedError(f"the writer of the store at {self.location} stopped",
                                                   location=self.location))
            for item in leftovers:
                if isinstance(item, Op):
                    item.done.set()

    def _fail(self, items: list[S | Op], error: StoreError) -> None:
        """Give ``error`` to the operations that have no result yet; count and log the records."""
        lost = 0
        for item in items:
            if isinstance(item, Op):
                if item.error is None and not item.committed:
                    item.error = error
                    item.result = None
            else:
                lost += item.size()
                self._note_lost_events(item)
        if lost:
            self._lost_records += lost
            log.error("%s: %d job records and events were not stored: %s", self.location, lost, error)


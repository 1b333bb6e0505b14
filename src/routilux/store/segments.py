"""What a batching store keeps of the fire-and-forget writes between two awaited operations.

``record_job`` and ``record_events`` are on the hot path: they only put the record into the
*segment* at the tail of the writer's queue (see :mod:`routilux.store.batch_writer`), and a
segment *coalesces*: the latest record per job, and per job only the events the store would keep
anyway (older ones would be deleted right after being written). That bounds the backlog by the
number of distinct jobs and ``events_per_job``, and saves writing rows only to delete them.

Two coalescing rules exist, because the backends store events differently:

* :class:`NewestEvents` (SQLite) keeps the newest ``events_per_job`` events of a job *in arrival
  order*, a bounded deque; a replayed seq is written again and ``INSERT OR REPLACE`` settles it.
* :class:`EventsBySeq` (Redis) keeps one event per seq (the last recorded wins), because a stream
  refuses a duplicate id; it cuts a job back to its newest ``events_per_job`` seqs once it holds
  twice that, so sorting stays rare.

A segment can be :meth:`~Segment.split` when it is larger than one batch: the front part is
written now, the rest stays queued (jobs first, then each job's oldest events).
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Sequence, Sized
from typing import Generic, Self, TypeVar

from routilux.store.base import JobRecord, StoredEvent

#: How a segment holds one job's pending events.
Kept = TypeVar("Kept", bound=Sized)


class Segment(ABC, Generic[Kept]):
    """The coalesced fire-and-forget writes between two operations; ``keep`` is the store's
    ``events_per_job``."""

    __slots__ = ("events", "jobs", "keep", "n_events")

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.jobs: dict[str, JobRecord] = {}
        self.events: dict[str, Kept] = {}
        self.n_events = 0

    def size(self) -> int:
        """Rows (job records + events) this segment would write."""
        return len(self.jobs) + self.n_events

    def split(self, n: int) -> Self:
        """Move up to ``n`` rows from the front of this segment into a new one."""
        part = type(self)(self.keep)
        for job_id in list(itertools.islice(self.jobs, n)):
            part.jobs[job_id] = self.jobs.pop(job_id)
        n -= len(part.jobs)
        while n > 0 and self.events:
            job_id = next(iter(self.events))
            kept = self.events[job_id]
            taken = self.events.pop(job_id) if len(kept) <= n else self._take_oldest(kept, n)
            part.events[job_id] = taken
            part.n_events += len(taken)
            self.n_events -= len(taken)
            n -= len(taken)
        return part

    def _kept(self, job_id: str) -> Kept:
        """The pending events of ``job_id`` (an empty holder if it has none yet)."""
        kept = self.events.get(job_id)
        if kept is None:
            kept = self.events[job_id] = self._empty()
        return kept

    @abstractmethod
    def _empty(self) -> Kept:
        """A new holder of one job's pending events."""

    @abstractmethod
    def _take_oldest(self, kept: Kept, n: int) -> Kept:
        """Remove and return the ``n`` oldest of a job's pending events (fewer than it holds)."""

    @abstractmethod
    def add_events(self, events: Sequence[StoredEvent]) -> int:
        """Coalesce ``events`` into this segment; returns the change in pending events."""


class NewestEvents(Segment["deque[StoredEvent]"]):
    """Per job, the newest ``keep`` events in arrival order (SQLite: this assumes ``seq`` grows
    per job, as the bus guarantees)."""

    __slots__ = ()

    def _empty(self) -> deque[StoredEvent]:
        return deque(maxlen=self.keep)

    def _take_oldest(self, kept: deque[StoredEvent], n: int) -> deque[StoredEvent]:
        return deque(kept.popleft() for _ in range(n))

    def add_events(self, events: Sequence[StoredEvent]) -> int:
        added = 0
        for event in events:
            kept = self._kept(event.job_id)
            if len(kept) < self.keep:
                added += 1
            kept.append(event)  # when full, the oldest goes: it would be pruned after insert anyway
        self.n_events += added
        return added


class EventsBySeq(Segment["dict[int, StoredEvent]"]):
    """Per job, one event per seq, the last recorded winning (Redis: a stream id is unique)."""

    __slots__ = ()

    def _empty(self) -> dict[int, StoredEvent]:
        return {}

    def _take_oldest(self, kept: dict[int, StoredEvent], n: int) -> dict[int, StoredEvent]:
        # A job's events leave in seq order, so each part appends to the stream in order.
        return {seq: kept.pop(seq) for seq in sorted(kept)[:n]}

    def add_events(self, events: Sequence[StoredEvent]) -> int:
        """A job's pending events are cut back to its newest ``keep`` once they reach twice that."""
        change = 0
        for event in events:
            kept = self._kept(event.job_id)
            before = len(kept)
            kept[event.seq] = event
            change += len(kept) - before
            if len(kept) >= 2 * self.keep:
                kept_now = newest(kept, self.keep)
                change -= len(kept) - len(kept_now)
                self.events[event.job_id] = {e.seq: e for e in kept_now}
        self.n_events += change
        return change


def newest(events: dict[int, StoredEvent], keep: int) -> list[StoredEvent]:
    """The events a job keeps of ``events``, in seq order: ``seq > max_seq - keep``."""
    seqs = sorted(events)
    floor = seqs[-1] - keep
    return [events[seq] for seq in seqs if seq > floor]

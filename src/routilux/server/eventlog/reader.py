"""The one reader of "a job's events after seq N", from wherever they are.

The newest events of a job are in memory (:class:`~.history.EventHistory`), older ones in the
store (both bounded, both contiguous up to now); a job another server runs is read from its Redis
stream. Whatever a reader cannot find any more is reported as one gap at the front, so a client
resuming with ``since`` learns exactly which seqs it will never get; what the recorder itself
could not store is a ``gap`` entry in the history (see :mod:`.recorder`), returned in its place
among the events.

The store is asked to flush its write queue only when memory does not reach back far enough — the
common case (a client a few events behind) never waits for the writer.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from routilux.bus import decode_gap, encode_gap
from routilux.server.eventlog.recorder import Recorder

if TYPE_CHECKING:
    from routilux.cluster.redis_events import RedisEventBridge

READ_BATCH = 1000

#: One event as read back: (seq, type, its JSON exactly as it was sent live). A ``gap`` entry
#: is held under its ``to_seq``, with the gap frame as its JSON.
StoredItem = tuple[int, str, bytes]

GAP = "gap"



def gap_range(item: StoredItem) -> tuple[int, int]:
    """The ``(from_seq, to_seq)`` a ``gap`` entry names."""
    return decode_gap(item[2])


@dataclass
class EventRange:
    """The events found after a seq (filtered by type if asked), and what is gone before them."""

    events: list[StoredItem] = field(default_factory=list)
    #: ``(from_seq, to_seq)`` of events after ``since`` that no longer exist anywhere.
    gap: tuple[int, int] | None = None

    def gaps(self) -> list[tuple[int, int]]:
        """Every range of seqs that will never be read: the front gap, then the recorded ones."""
        found = [self.gap] if self.gap is not None else []
        found.extend(gap_range(item) for item in self.events if item[1] == GAP)
        return found


class EventLog:
    def __init__(self, recorder: Recorder, *, bridge: RedisEventBridge | None = None) -> None:
        self.recorder = recorder
        self.store = recorder.store
        self.history = recorder.history
        self.bridge = bridge

    async def events_since(
        self,
        job_id: str,
        since: int,
        *,
        limit: int | None = None,
        types: Collection[str] | None = None,
        published_mark: int | None = None,
    ) -> EventRange:
        """Events of ``job_id`` with seq > ``since``, oldest first, at most ``limit`` of the wanted
        ``types``. Everything the bus had published when it counted ``published_mark`` (default:
        now) is included."""
        if self.bridge is not None and self.bridge.is_remote(job_id):
            found = await self._remote(job_id, since, limit)
        else:
            mark = self.recorder.bus.published if published_mark is None else published_mark
            await self.recorder.caught_up(mark)
            found = await self._local(job_id, since, limit if types is None else None)
        result = EventRange()
        if found:
            first = found[0]
            if first[1] == GAP:
                lost_from, lost_to = gap_range(first)
                if lost_from <= since:  # the reader starts inside the gap: name only what it misses
                    found[0] = (lost_to, GAP, encode_gap(job_id, since + 1, lost_to))
                elif lost_from > since + 1:
                    result.gap = (since + 1, lost_from - 1)
            elif first[0] > since + 1:
                result.gap = (since + 1, first[0] - 1)
        wanted = found if types is None else [e for e in found if e[1] in types or e[1] == GAP]
        result.events = wanted if limit is None else wanted[:limit]
        return result

    async def _local(self, job_id: str, since: int, limit: int | None) -> list[StoredItem]:
        history, store = self.history, self.store
        found: list[StoredItem] = []
        cursor = since
        flushed = False
        # Memory moves on while we await the store, so check it again after every read rather
        # than trusting an earlier boundary.
        while limit is None or len(found) < limit:
            first_held = history.first_seq(job_id)
            if first_held is not None and first_held <= cursor + 1:
                found.extend(history.since(job_id, cursor))
                break
            if not flushed:  # what memory no longer holds must be written before it is read
                await store.flush()
                flushed = True
            batch = await store.events_since(job_id, cursor, READ_BATCH)
            if not batch:
                found.extend(history.since(job_id, cursor))
                break
            found.extend((e.seq, e.type, e.payload) for e in batch)
            cursor = batch[-1].seq
        return found

    async def _remote(self, job_id: str, since: int, limit: int | None) -> list[StoredItem]:
        """Another server's job, from its Redis stream (by seq)."""
        assert self.bridge is not None
        found: list[StoredItem] = []
        cursor = since
        while limit is None or len(found) < limit:
            batch = await self.bridge.events_after(job_id, cursor)
            if not batch:
                break
            found.extend(batch)
            cursor = batch[-1][0]
        return found

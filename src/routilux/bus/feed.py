"""Fan-out without per-subscriber work at publish: one shared log per watched job.

A :class:`~routilux.bus.bus.Subscription` costs the publisher one buffer append per subscriber,
so a thousand sockets on one job made every event a thousand appends and a thousand wake-ups,
on the engine's own time. Sockets read through :class:`FeedReader` instead: the bus appends
each event of a watched job once to that job's :class:`Feed` (encoded once, O(1) however many
read it), and every reader walks the feed with its own cursor, at its own pace, a batch at a
time. Readers that have read everything *park* on the feed; the first event after that puts the
feed on the dirty list and calls :attr:`Feeds.on_data` once, and whoever serves the readers
(:mod:`routilux.api.ws.fanout`) wakes the parked ones — one wake-up per batch, not per event.

A feed keeps what its slowest reader has not read, and at most :data:`FEED_EVENTS`. A reader
that falls behind the feed's oldest entry, or is told to skip ahead (:meth:`FeedReader.skip_to_newest`,
for a client that stopped reading), loses events exactly as a subscription that overflowed: the
next thing it reads of that job is a gap naming every seq it missed, then the next event. A
reader that is *blocked* (its client takes nothing, :attr:`FeedReader.blocked_since`) holds at
most its ``capacity`` newest events in the feed; older ones are trimmed under it.

Memory: :attr:`Feeds.retained_bytes` is the size of every event kept for readers, each counted
once; the API caps it (with the sockets' own queues) and closes the slowest sockets past it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Container, Iterable
from typing import Final

from routilux.bus.encoding import decode_gap, encode_event, encode_gap
from routilux.bus.events import Event, Gap

#: Entries a feed keeps for a reader that is behind but not blocked (as a subscription's buffer).
FEED_EVENTS: Final[int] = 100_000
#: How long a reader's client may take nothing before the reader only holds its newest events.
BLOCKED_GRACE: Final[float] = 0.05
_GAP: Final[str] = "gap"
_TRIM_EVERY: Final[int] = 64  # a feed looks for entries every reader has read once it holds this many
_COMPACT: Final[int] = 32  # trimmed entries the list may keep before it is compacted (and at most half)

#: (ordinal on the bus, seq — a gap entry's last seq —, type, JSON payload, bytes appended through it)
Entry = tuple[int, int, str, bytes, int]


def _first_seq(entry: Entry) -> int:
    """The first seq an entry accounts for (a gap entry names a range ending at its seq)."""
    return decode_gap(entry[3])[0] if entry[2] == _GAP else entry[1]


class Feed:
    """One job's events since someone began to watch it, as long as a reader needs them."""

    __slots__ = ("_base", "_entries", "_trim_at", "appended_bytes", "dirty", "end", "feeds",
                 "first_seq", "flow_id", "job_id", "last_seq", "parked", "readers", "start")

    def __init__(self, feeds: Feeds, job_id: str, flow_id: str) -> None:
        self.feeds = feeds
        self.job_id = job_id
        self.flow_id = flow_id
        self._entries: list[Entry] = []
        self._base = 0  # position of _entries[0]
        self.start = 0  # position of the oldest entry kept
        self.end = 0  # position the next entry gets
        self.appended_bytes = 0
        self.first_seq: int | None = None  # the first seq (of the first entry) ever appended
        self.last_seq: int | None = None  # the last seq appended
        self.readers: dict[FeedReader, Cursor] = {}
        self.parked: set[FeedReader] = set()
        self.dirty = False
        self._trim_at = _TRIM_EVERY

    # -- writing (the bus) -----------------------------------------------------------------
    def _push(self, ordinal: int, seq: int, first: int, type_: str, payload: bytes) -> None:
        if self.first_seq is None:
            self.first_seq = first
        self.last_seq = seq
        self.appended_bytes += len(payload)
        self._entries.append((ordinal, seq, type_, payload, self.appended_bytes))
        self.end += 1
        self.feeds.retained_bytes += len(payload)
        if self.end - self.start > FEED_EVENTS:
            self.trim(self.end - FEED_EVENTS)
        elif self.end - self.start >= self._trim_at:
            self.trim(self.oldest_needed())
        if not self.dirty and self.parked:
            self.dirty = True
            self.feeds._dirty.append(self)
            if self.feeds.on_data is not None:
                self.feeds.on_data()

    # -- reading ---------------------------------------------------------------------------
    def at(self, pos: int) -> Entry:
        return self._entries[pos - self._base]

    def bytes_from(self, pos: int) -> int:
        """Bytes of the entries kept from ``pos`` on."""
        pos = max(pos, self.start)
        if pos >= self.end:
            return 0
        entry = self.at(pos)
        return self.appended_bytes - (entry[4] - len(entry[3]))

    def oldest_needed(self, now: float | None = None) -> int:
        """The oldest position a reader still needs: a blocked reader needs only its newest
        ``capacity`` entries."""
        now = time.monotonic() if now is None else now
        oldest = self.end
        for reader, cursor in self.readers.items():
            pos = cursor.pos
            if reader.blocked_since is not None and now - reader.blocked_since > BLOCKED_GRACE:
                pos = max(pos, self.end - reader.capacity)
            oldest = min(oldest, pos)
        return oldest

    def trim(self, pos: int) -> None:
        """Forget the entries before ``pos`` (readers still there will be told with a gap)."""
        pos = min(pos, self.end)
        if pos > self.start:
            freed = self.bytes_from(self.start) - self.bytes_from(pos)
            self.feeds.retained_bytes -= freed
            self.start = pos
            dropped = self.start - self._base
            if dropped >= _COMPACT and dropped >= len(self._entries) // 2:
                del self._entries[:dropped]
                self._base = self.start
        self._trim_at = max(_TRIM_EVERY, 2 * (self.end - self.start))

    def _retire(self) -> None:
        self.trim(self.end)
        self._entries.clear()
        self._base = self.start


class Cursor:
    """A reader's place in one feed: the position it reads next, and the seq it is due next (so
    a jump past entries it never read is told as a gap)."""

    __slots__ = ("feed", "next_seq", "pos")

    def __init__(self, feed: Feed) -> None:
        self.feed = feed
        self.pos = feed.end
        # Due next: what follows the feed's last entry; on a feed still empty, its first entry.
        self.next_seq: int | None = None if feed.last_seq is None else feed.last_seq + 1


class FeedReader:
    """One socket's view of the bus: the jobs and flows it follows, read through their feeds.

    ``job_ids``/``flow_ids`` name what it follows (a job of a followed flow is read from its
    first event after the reader began following it); ``types`` filters by event type (``None``:
    all). ``capacity`` is how many events it may hold back in a feed while blocked.
    """

    def __init__(self, feeds: Feeds, *, job_ids: Iterable[str] = (), flow_ids: Iterable[str] = (),
                 types: Iterable[str] | None = None, capacity: int = 1000) -> None:
        self._feeds = feeds
        self.job_ids: set[str] = set()
        self.flow_ids: set[str] = set()
        self.types: frozenset[str] | None = frozenset(types) if types is not None else None
        self.capacity = capacity
        self.cursors: dict[str, Cursor] = {}
        self.parked = False
        #: When the client last began to wait for its socket to take a batch (None: not waiting).
        self.blocked_since: float | None = None
        self.owner: object = None  # whoever serves this reader (a WebSocket session)
        self.delivered = 0
        self.dropped = 0
        #: Jobs whose ``job_end`` :meth:`take` has handed over (the caller clears it).
        self.ended: list[str] = []
        self.closed = False
        for job_id in job_ids:
            self.add_job(job_id)
        for flow_id in flow_ids:
            self.add_flow(flow_id)

    # -- what it follows --------------------------------------------------------------------
    def add_job(self, job_id: str) -> None:
        self.job_ids.add(job_id)
        if job_id not in self.cursors:
            feed = self._feeds._feed(job_id, None)
            self._attach(feed)
            self._feeds.interested(job_id, None)

    def remove_job(self, job_id: str) -> None:
        self.job_ids.discard(job_id)
        cursor = self.cursors.get(job_id)
        if cursor is not None and cursor.feed.flow_id not in self.flow_ids:
            self._detach(cursor)

    def add_flow(self, flow_id: str) -> None:
        if flow_id in self.flow_ids:
            return
        self.flow_ids.add(flow_id)
        self._feeds._follow_flow(self, flow_id)

    def remove_flow(self, flow_id: str) -> None:
        if flow_id not in self.flow_ids:
            return
        self.flow_ids.discard(flow_id)
        self._feeds._unfollow_flow(self, flow_id)
        for cursor in [c for c in self.cursors.values() if c.feed.flow_id == flow_id]:
            if cursor.feed.job_id not in self.job_ids:
                self._detach(cursor)

    def _attach(self, feed: Feed) -> None:
        cursor = Cursor(feed)
        self.cursors[feed.job_id] = cursor
        feed.readers[self] = cursor
        if self.parked:
            feed.parked.add(self)

    def _detach(self, cursor: Cursor) -> None:
        feed = cursor.feed
        del self.cursors[feed.job_id]
        feed.readers.pop(self, None)
        if not feed.readers:
            self._feeds._drop(feed)
        else:
            feed.trim(feed.oldest_needed())

    # -- reading ----------------------------------------------------------------------------
    def has_unread(self, held: Container[str] = ()) -> bool:
        return any(c.pos < c.feed.end for job_id, c in self.cursors.items() if job_id not in held)

    def pending(self) -> int:
        """Events (and gap entries) this reader has yet to read."""
        return sum(c.feed.end - max(c.pos, c.feed.start) for c in self.cursors.values())

    def backlog_bytes(self) -> int:
        """Bytes of events this reader has yet to read (shared with other readers of its feeds)."""
        return sum(c.feed.bytes_from(c.pos) for c in self.cursors.values())

    def park(self) -> None:
        """Nothing left to read: be woken (through :attr:`Feeds.on_data`) when there is."""
        if not self.parked:
            self.parked = True
            for cursor in self.cursors.values():
                cursor.feed.parked.add(self)

    def skip_to_newest(self, held: Container[str] = ()) -> None:
        """The client stopped taking events: keep only the newest ``capacity`` of each job; the
        rest will be told as a gap."""
        for job_id, cursor in self.cursors.items():
            feed = cursor.feed
            if job_id not in held and feed.end - cursor.pos > self.capacity:
                if cursor.next_seq is None:  # it read nothing yet: it was due the entry it is at
                    cursor.next_seq = feed.first_seq if cursor.pos < feed.start else _first_seq(feed.at(cursor.pos))
                cursor.pos = feed.end - self.capacity

    def take(self, out: list[bytes], sent: dict[str, int], max_bytes: int, held: Container[str] = ()) -> int:
        """Append to ``out`` the frames of the next events (no more bytes than ``max_bytes``
        after the first), in the order they were published, with a gap frame before an event
        wherever events were lost; returns the bytes appended. ``sent`` is the last seq the
        client was told of each job (sent, replayed, covered by its snapshot or a gap): older
        events are skipped and it is brought up to date. Jobs in ``held`` are not read (their
        replay is going on)."""
        cursors = [c for job_id, c in self.cursors.items() if c.pos < c.feed.end and job_id not in held]
        if len(cursors) == 1:
            return self._take_from(cursors[0], out, sent, max_bytes, 1 << 62)
        size = 0
        while cursors and size < max_bytes:  # several jobs: the one whose next event came first
            cursor = min(cursors, key=lambda c: c.feed.at(max(c.pos, c.feed.start))[0])
            size += self._take_from(cursor, out, sent, max_bytes - size, 1)
            if cursor.pos >= cursor.feed.end or cursor.feed.job_id not in self.cursors:
                cursors.remove(cursor)
        return size

    def _take_from(self, cursor: Cursor, out: list[bytes], sent: dict[str, int], max_bytes: int, limit: int) -> int:
        """:meth:`take` from one feed, at most ``limit`` entries."""
        feed = cursor.feed
        job_id = feed.job_id
        if cursor.pos < feed.start:
            cursor.pos = feed.start
            if cursor.next_seq is None:  # it began on the empty feed: it was due the first entry
                cursor.next_seq = feed.first_seq
        entries = feed._entries
        index = cursor.pos - feed._base
        stop = min(feed.end - feed._base, index + limit)
        due = cursor.next_seq
        told = sent.get(job_id, 0)
        types = self.types
        size = 0
        events = 0
        ended = False
        while index < stop and (size < max_bytes or not size):
            _ordinal, seq, type_, payload, _cum = entries[index]
            index += 1
            first = decode_gap(payload)[0] if type_ == _GAP else seq
            if due is not None and first > due:  # entries it never read are gone
                self.dropped += first - due
                if first - 1 > told:
                    out.append(encode_gap(job_id, max(due, told + 1), first - 1))
                    told = first - 1
            if due is None or seq >= due:
                due = seq + 1
            if type_ == _GAP:
                if seq > told:
                    out.append(payload if first > told else encode_gap(job_id, told + 1, seq))
                    told = seq
                continue
            if seq <= told or (types is not None and type_ not in types):
                continue
            told = seq
            out.append(payload)
            size += len(payload)
            events += 1
            if type_ == "job_end":
                ended = True
        cursor.pos = index + feed._base
        cursor.next_seq = due
        sent[job_id] = told
        self.delivered += events
        if ended:
            self.ended.append(job_id)
            if cursor.pos >= feed.end:  # nothing comes after a job's end: stop holding its feed
                self._detach(cursor)
        return size

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for flow_id in list(self.flow_ids):
            self._feeds._unfollow_flow(self, flow_id)
        for cursor in list(self.cursors.values()):
            self._detach(cursor)


class Feeds:
    """The feeds of every watched job, and who follows which flows (owned by the bus)."""

    def __init__(self) -> None:
        self._by_job: dict[str, Feed] = {}
        self._flow_readers: dict[str, set[FeedReader]] = {}
        self._dirty: list[Feed] = []
        self.retained_bytes = 0
        #: Called (once per batch of events) when a feed with parked readers gets an event.
        self.on_data: Callable[[], None] | None = None
        #: Called with ``(job_id, None)`` or ``(None, flow_id)`` when a reader begins to follow a
        #: job or a flow nobody followed: a cluster's relay starts reading a remote job then.
        self.on_interest: Callable[[str | None, str | None], None] | None = None

    def interested(self, job_id: str | None, flow_id: str | None) -> None:
        if self.on_interest is not None:
            self.on_interest(job_id, flow_id)

    def reader(self, **kwargs: object) -> FeedReader:
        return FeedReader(self, **kwargs)  # type: ignore[arg-type]

    def watches(self, job_id: str, flow_id: str) -> bool:
        return job_id in self._by_job or flow_id in self._flow_readers

    def __len__(self) -> int:
        return len(self._by_job)

    def all(self) -> list[Feed]:
        return list(self._by_job.values())

    def take_dirty(self) -> list[FeedReader]:
        """The parked readers of every feed that got events since the last call (unparked)."""
        woken: list[FeedReader] = []
        for feed in self._dirty:
            feed.dirty = False
            for reader in feed.parked:
                if reader.parked:
                    reader.parked = False
                    woken.append(reader)
            feed.parked.clear()
        self._dirty.clear()
        return woken

    # -- the bus's side ------------------------------------------------------------------------
    def append(self, event: Event, ordinal: int) -> None:
        if not self._by_job and not self._flow_readers:
            return
        feed = self._by_job.get(event.job_id)
        if feed is None:
            if event.flow_id not in self._flow_readers:
                return
            feed = self._feed(event.job_id, event.flow_id)
        if feed.flow_id != event.flow_id:
            self._learn_flow(feed, event.flow_id)
        feed._push(ordinal, event.seq, event.seq, event.type, encode_event(event))

    def append_gap(self, gap: Gap, flow_id: str, ordinal: int) -> None:
        feed = self._by_job.get(gap.job_id)
        if feed is None:
            if flow_id not in self._flow_readers:
                return
            feed = self._feed(gap.job_id, flow_id)
        feed._push(ordinal, gap.to_seq, gap.from_seq, _GAP, encode_gap(gap.job_id, gap.from_seq, gap.to_seq))

    # -- bookkeeping -----------------------------------------------------------------------------
    def _feed(self, job_id: str, flow_id: str | None) -> Feed:
        feed = self._by_job.get(job_id)
        if feed is None:
            feed = self._by_job[job_id] = Feed(self, job_id, flow_id or "")
            if flow_id:
                for reader in self._flow_readers.get(flow_id, ()):
                    if job_id not in reader.cursors:
                        reader._attach(feed)
        return feed

    def _learn_flow(self, feed: Feed, flow_id: str) -> None:
        """A feed opened for a job before its first event learns the job's flow from it; the
        readers of that flow read the job from then on."""
        feed.flow_id = flow_id
        for reader in self._flow_readers.get(flow_id, ()):
            if feed.job_id not in reader.cursors:
                reader._attach(feed)

    def _follow_flow(self, reader: FeedReader, flow_id: str) -> None:
        if flow_id not in self._flow_readers:
            self.interested(None, flow_id)
        self._flow_readers.setdefault(flow_id, set()).add(reader)
        for feed in list(self._by_job.values()):
            if feed.flow_id == flow_id and feed.job_id not in reader.cursors:
                reader._attach(feed)

    def _unfollow_flow(self, reader: FeedReader, flow_id: str) -> None:
        readers = self._flow_readers.get(flow_id)
        if readers is not None:
            readers.discard(reader)
            if not readers:
                del self._flow_readers[flow_id]

    def _drop(self, feed: Feed) -> None:
        if self._by_job.get(feed.job_id) is feed:
            del self._by_job[feed.job_id]
        feed._retire()

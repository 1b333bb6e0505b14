"""The event bus: every observation of a job goes through here.

Publishing never blocks and never waits for a subscriber. Each subscriber has a bounded buffer;
when it is full the newest events for that subscriber are not queued and, once it has room again,
the subscriber is handed a :class:`Gap` naming the ``seq`` range of each job it lost, just before
that job's next event. So a slow dashboard can lose events but always knows exactly which.

Back-pressure. A subscriber that must not lose events (the recorder, which keeps each job's
history) subscribes with ``presses=True``: once its buffer is half full the bus is
:attr:`EventBus.congested`, and producers that can wait (the engine, before it starts an
activation) ``await bus.wait_for_room(timeout)`` until every pressing subscriber is back under a
quarter. The wait is bounded, so a stuck subscriber slows jobs down without stopping them; what
still overflows reaches it as a :class:`Gap`, which it records.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Final

import anyio

from routilux.bus.events import Event, Gap
from routilux.bus.feed import Feeds

DEFAULT_SUBSCRIBER_BUFFER: Final[int] = 10_000


class SubscriptionClosed(Exception):
    """Raised by :meth:`Subscription.receive` once the subscription (or its bus) is closed."""


class Subscription:
    """One subscriber's filtered, bounded view of the bus.

    Filters: ``job_ids`` and ``flow_ids`` (an event matches if either names it; both empty means
    every job), and ``types`` (``None`` means every type). Job and flow filters can change while
    the subscription is open, which is what a multiplexing WebSocket needs.
    """

    def __init__(
        self,
        bus: EventBus,
        *,
        job_ids: Iterable[str] = (),
        flow_ids: Iterable[str] = (),
        types: Iterable[str] | None = None,
        buffer: int = DEFAULT_SUBSCRIBER_BUFFER,
        empty_means_all: bool = True,
        presses: bool = False,
    ) -> None:
        if buffer < 1:
            raise ValueError("a subscription buffer holds at least one event")
        self._bus = bus
        #: Whether a full-ish buffer holds producers back (see the module docstring).
        self.presses = presses
        self._high_water = max(1, buffer // 2) if presses else buffer + 1
        self._low_water = buffer // 4
        self.job_ids: set[str] = set(job_ids)
        self.flow_ids: set[str] = set(flow_ids)
        self.types: frozenset[str] | None = frozenset(types) if types is not None else None
        self.empty_means_all = empty_means_all
        self.capacity = buffer
        self._items: deque[Event | Gap] = deque()
        self._lost: dict[str, list[int]] = {}
        self._ready = anyio.Event()
        self._waiting = False  # a reader is parked on _ready: only then is it worth setting
        self._closed = False
        self.delivered = 0
        self.dropped = 0

    # -- filters ---------------------------------------------------------------------------
    @property
    def is_wildcard(self) -> bool:
        """No job or flow filter. Such a subscription sees every job, unless it was made with
        ``empty_means_all=False`` (a multiplexing socket that has not subscribed to anything)."""
        return not self.job_ids and not self.flow_ids

    def add_job(self, job_id: str) -> None:
        self._bus._reindex(self, lambda: self.job_ids.add(job_id))

    def remove_job(self, job_id: str) -> None:
        self._bus._reindex(self, lambda: self.job_ids.discard(job_id))

    def add_flow(self, flow_id: str) -> None:
        self._bus._reindex(self, lambda: self.flow_ids.add(flow_id))

    def remove_flow(self, flow_id: str) -> None:
        self._bus._reindex(self, lambda: self.flow_ids.discard(flow_id))

    # -- delivery (called by the bus on the loop thread) -----------------------------------
    def _offer(self, event: Event) -> None:
        if self.types is not None and event.type not in self.types:
            return
        items = self._items
        lost = self._lost.get(event.job_id)
        if lost is not None:
            if len(items) + 2 > self.capacity:
                lost[1] = event.seq
                self.dropped += 1
                return
            del self._lost[event.job_id]
            items.append(Gap(job_id=event.job_id, from_seq=lost[0], to_seq=lost[1]))
        elif len(items) >= self.capacity:
            self._lost[event.job_id] = [event.seq, event.seq]
            self.dropped += 1
            return
        items.append(event)
        if len(items) >= self._high_water:
            self._bus._congest()
        if self._waiting:
            self._waiting = False
            self._ready.set()

    def _offer_gap(self, gap: Gap) -> None:
        # A gap the publisher itself suffered (e.g. a cluster bridge that fell behind): merge it
        # with what this subscriber already lost of that job, so it still sees one exact range.
        lost = self._lost.get(gap.job_id)
        if lost is not None:
            lost[0] = min(lost[0], gap.from_seq)
            lost[1] = max(lost[1], gap.to_seq)
            return
        if len(self._items) >= self.capacity:
            self._lost[gap.job_id] = [gap.from_seq, gap.to_seq]
            return
        self._items.append(gap)
        if self._waiting:
            self._waiting = False
            self._ready.set()

    # -- consumption ------------------------------------------------------------------------
    def pending(self) -> int:
        """How many events (and gap notices) are waiting to be received."""
        return len(self._items)

    def receive_nowait(self) -> Event | Gap | None:
        """The next buffered item, or ``None`` if there is none right now."""
        if self._items:
            self.delivered += 1
            item = self._items.popleft()
            if self.presses and self._bus.congested and len(self._items) <= self._low_water:
                self._bus._relieve()
            return item
        if self._closed:
            raise SubscriptionClosed
        return None

    async def receive_batch(self) -> list[Event | Gap]:
        """Wait for at least one item, then take everything buffered, in order (one wake-up and
        no per-item call for a subscriber that works in batches)."""
        while not self._items:
            if self._closed:
                raise SubscriptionClosed
            self._ready = anyio.Event()
            self._waiting = True
            await self._ready.wait()
        batch = list(self._items)
        self._items.clear()
        self.delivered += len(batch)
        if self.presses and self._bus.congested:
            self._bus._relieve()
        return batch

    async def batches(self) -> AsyncIterator[list[Event | Gap]]:
        """:meth:`receive_batch` until the subscription closes (then the iteration ends)."""
        try:
            while True:
                yield await self.receive_batch()
        except SubscriptionClosed:
            return

    async def receive(self) -> Event | Gap:
        """Wait for the next event (or gap notice) for this subscriber."""
        while True:
            item = self.receive_nowait()
            if item is not None:
                return item
            self._ready = anyio.Event()
            self._waiting = True
            await self._ready.wait()

    def __aiter__(self) -> AsyncIterator[Event | Gap]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event | Gap]:
        try:
            while True:
                yield await self.receive()
        except SubscriptionClosed:
            return

    # -- lifetime ---------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop receiving; buffered items can still be read, then receive raises."""
        if not self._closed:
            self._closed = True
            self._bus._detach(self)
            self._ready.set()
            if self._bus.congested:
                self._bus._relieve()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class EventBus:
    """In-process pub/sub of :class:`Event`, indexed by job and flow so a publish costs only
    the subscribers that want it. All methods run on the event loop thread."""

    def __init__(self) -> None:
        self._wildcard: list[Subscription] = []
        self._by_job: dict[str, list[Subscription]] = {}
        self._by_flow: dict[str, list[Subscription]] = {}
        self._subscriptions: set[Subscription] = set()
        self.published = 0
        #: A pressing subscriber is over its high-water mark: producers that can wait should.
        self.congested = False
        self._room: anyio.Event | None = None
        #: How many times producers found the bus congested (for /metrics and tests).
        self.congestions = 0
        #: The shared per-job logs that sockets read (:mod:`routilux.bus.feed`): a publish
        #: appends to one of them once, however many sockets watch the job.
        self.feeds = Feeds()

    def subscribe(
        self,
        *,
        job_ids: Iterable[str] = (),
        flow_ids: Iterable[str] = (),
        types: Iterable[str] | None = None,
        buffer: int = DEFAULT_SUBSCRIBER_BUFFER,
        empty_means_all: bool = True,
        presses: bool = False,
    ) -> Subscription:
        sub = Subscription(
            self, job_ids=job_ids, flow_ids=flow_ids, types=types, buffer=buffer,
            empty_means_all=empty_means_all, presses=presses,
        )
        self._subscriptions.add(sub)
        self._index(sub)
        return sub

    @property
    def subscriber_count(self) -> int:
        return len(self._subscriptions)

    def has_subscribers(self, job_id: str, flow_id: str) -> bool:
        """Whether anyone would receive an event of this job (lets callers skip building it)."""
        return bool(self._wildcard or job_id in self._by_job or flow_id in self._by_flow) or self.feeds.watches(
            job_id, flow_id
        )

    def watches(self, job_id: str, flow_id: str) -> bool:
        """Whether someone asked for this job's events by name — its id or its flow's, through a
        socket's feed or a subscription; subscribers to everything (the recorder, the metrics
        aggregator) do not count. A cluster's relay follows another server's job only while this
        holds (:mod:`routilux.cluster.redis_events`)."""
        return job_id in self._by_job or flow_id in self._by_flow or self.feeds.watches(job_id, flow_id)

    def watches_flow(self, flow_id: str) -> bool:
        """Whether someone follows every job of ``flow_id`` (see :meth:`watches`)."""
        return flow_id in self._by_flow or flow_id in self.feeds._flow_readers

    def watches_any_flow(self) -> bool:
        """Whether someone follows every job of some flow (see :meth:`watches`)."""
        return bool(self._by_flow) or bool(self.feeds._flow_readers)

    def publish(self, event: Event) -> None:
        """Offer ``event`` to every matching subscriber. Never blocks, never raises for them."""
        self.published += 1
        self.feeds.append(event, self.published)
        wildcard = self._wildcard
        by_job = self._by_job.get(event.job_id)
        by_flow = self._by_flow.get(event.flow_id)
        for sub in wildcard:
            sub._offer(event)
        if by_job is None and by_flow is None:
            return
        if by_job is not None and by_flow is not None:
            for sub in by_job:
                sub._offer(event)
            for sub in by_flow:
                if event.job_id not in sub.job_ids:
                    sub._offer(event)
            return
        for sub in by_job if by_job is not None else by_flow:  # type: ignore[union-attr]
            sub._offer(event)

    def publish_gap(self, gap: Gap, flow_id: str) -> None:
        """Tell every subscriber that would have received them that the events ``gap`` names
        will never come.

        Events of this process's own jobs never need it (they are published here first), but a
        job running elsewhere reaches this bus through a relay (:mod:`routilux.cluster`) that can
        itself fall behind; its subscribers must learn the lost range exactly as if they had
        dropped it themselves. ``published`` counts each lost seq, so a reader that waits for the
        bus's count (the recorder's ``caught_up``) does not wait for events that will not come.
        """
        self.published += gap.to_seq - gap.from_seq + 1
        targets = [*self._wildcard]
        seen = set(map(id, targets))
        for sub in (*self._by_job.get(gap.job_id, ()), *self._by_flow.get(flow_id, ())):
            if id(sub) not in seen:
                seen.add(id(sub))
                targets.append(sub)
        for sub in targets:
            sub._offer_gap(gap)
        self.feeds.append_gap(gap, flow_id, self.published)

    # -- back-pressure -------------------------------------------------------------------------
    async def wait_for_room(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds) until no pressing subscriber is congested; whether
        there is room now. Returns at once when the bus is not congested."""
        if not self.congested:
            return True
        self.congestions += 1
        with anyio.move_on_after(timeout):
            while self.congested:
                if self._room is None:
                    self._room = anyio.Event()
                await self._room.wait()
        return not self.congested

    def _congest(self) -> None:
        self.congested = True

    def _relieve(self) -> None:
        """A pressing subscriber drained: lift the congestion once all of them are low enough."""
        for sub in self._subscriptions:
            if sub.presses and not sub.closed and len(sub._items) > sub._low_water:
                return
        self.congested = False
        if self._room is not None:
            self._room.set()
            self._room = None

    def close(self) -> None:
        """Close every subscription (their readers see the end of the stream)."""
        for sub in list(self._subscriptions):
            sub.close()

    # -- index maintenance -------------------------------------------------------------------
    def _index(self, sub: Subscription) -> None:
        if sub.is_wildcard:
            if sub.empty_means_all:
                self._wildcard.append(sub)
            return
        for job_id in sub.job_ids:
            if job_id not in self._by_job:
                self.feeds.interested(job_id, None)
            self._by_job.setdefault(job_id, []).append(sub)
        for flow_id in sub.flow_ids:
            if flow_id not in self._by_flow:
                self.feeds.interested(None, flow_id)
            self._by_flow.setdefault(flow_id, []).append(sub)

    def _unindex(self, sub: Subscription) -> None:
        if sub in self._wildcard:
            self._wildcard.remove(sub)
        for index, keys in ((self._by_job, sub.job_ids), (self._by_flow, sub.flow_ids)):
            for key in keys:
                subs = index.get(key)
                if subs is not None and sub in subs:
                    subs.remove(sub)
                    if not subs:
                        del index[key]

    def _reindex(self, sub: Subscription, change: Callable[[], None]) -> None:
        if sub.closed:
            raise SubscriptionClosed
        self._unindex(sub)
        change()
        self._index(sub)

    def _detach(self, sub: Subscription) -> None:
        self._unindex(sub)
        self._subscriptions.discard(sub)

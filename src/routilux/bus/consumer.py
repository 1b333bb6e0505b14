"""The skeleton of a bus subscriber that works in batches: the metrics aggregator, the recorder.

Such a subscriber owns one subscription with a large buffer, and its :meth:`BatchConsumer.run`
(started in the owner's task group) takes everything buffered at each wake-up and hands it to
:meth:`BatchConsumer.consume` until the bus closes, then sets :attr:`BatchConsumer.finished`.
A batch holds :class:`~routilux.bus.events.Event` s and, where the subscriber fell behind,
:class:`~routilux.bus.events.Gap` s naming exactly what it lost; :meth:`BatchConsumer.count_lost`
is the one way to account for a gap. Nothing here looks at an event: per-item work stays in the
subscriber's own loop, where it costs a few operations per event.
"""

from __future__ import annotations

import logging
from typing import ClassVar

import anyio

from routilux.bus.bus import DEFAULT_SUBSCRIBER_BUFFER, EventBus, Subscription
from routilux.bus.events import Event, Gap


class BatchConsumer:
    """Drain one subscription of ``bus`` in batches; subclasses implement :meth:`consume`."""

    #: Where lost ranges and failed batches are logged.
    log: ClassVar[logging.Logger] = logging.getLogger("routilux.bus")
    #: Logged for each gap, with ``from_seq, to_seq, job_id``.
    lost_message: ClassVar[str] = "lost events %s..%s of job %s"
    #: If set, a batch whose :meth:`consume` raises is logged with this message (``%d``: the
    #: batch's size), counted in :attr:`failed_batches`, and the consumer goes on. If None, the
    #: exception ends :meth:`run` (and, with it, the owner's task group).
    failed_batch_message: ClassVar[str | None] = None

    def __init__(self, bus: EventBus, *, buffer: int = DEFAULT_SUBSCRIBER_BUFFER, presses: bool = False) -> None:
        #: ``presses``: hold producers back when behind (see :mod:`routilux.bus.bus`) — for a
        #: consumer whose losses cost more than a slower job (the recorder).
        self._subscription: Subscription = bus.subscribe(buffer=buffer, presses=presses)
        #: Events this consumer will never see (the gaps it was handed), counted by seq.
        self.lost = 0
        self.failed_batches = 0
        #: Set when :meth:`run` returns: the subscription closed and every batch was consumed.
        self.finished = anyio.Event()

    @property
    def pending(self) -> int:
        """Events published and not yet taken (the consumer's lag)."""
        return self._subscription.pending()

    @property
    def dropped(self) -> int:
        """Events the bus could not queue for this consumer (its buffer was full)."""
        return self._subscription.dropped

    def close(self) -> None:
        """Stop: what is buffered is still consumed, then :meth:`run` returns."""
        self._subscription.close()

    async def run(self) -> None:
        """Consume batches until the subscription (or the bus) closes."""
        try:
            async for batch in self._subscription.batches():
                if self.failed_batch_message is None:
                    await self.consume(batch)
                    continue
                try:
                    await self.consume(batch)
                except Exception:  # a bug in a consumer must cost its figures, not the server
                    self.failed_batches += 1
                    self.log.exception(self.failed_batch_message, len(batch))
        finally:
            self.finished.set()

    async def consume(self, batch: list[Event | Gap]) -> None:
        """Handle one batch, in order."""
        raise NotImplementedError

    def count_lost(self, gap: Gap) -> int:
        """Account for a gap (logged, added to :attr:`lost`); returns how many events it names."""
        lost = gap.to_seq - gap.from_seq + 1
        self.lost += lost
        self.log.warning(self.lost_message, gap.from_seq, gap.to_seq, gap.job_id)
        return lost

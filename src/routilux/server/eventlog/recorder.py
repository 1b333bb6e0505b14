"""Job history for the control plane: a bus subscriber that writes events and job records.

The engine knows nothing of storage. This subscriber turns what jobs publish into rows: every
event (so ``GET /api/jobs/{id}/events?since=`` and trace/log views work after the in-memory job
is gone or the server restarted), and a job record on each status change (with the full state
once the job ends). Writes are enqueued to the store's single writer, in batches, off the hot
path.

A job's history never loses entries silently. The recorder's bus subscription presses (see
:mod:`routilux.bus.bus`): when it falls behind, new activations wait for it, within a bound. What
overflows even so reaches it as a :class:`~routilux.bus.events.Gap`, and is recorded in the job's
history as a ``gap`` entry under the seq ``to_seq`` (the frame a socket gets for what it missed),
so every reader of the history — REST, a WebSocket replay — sees exactly which seqs are gone.

Finished jobs stay in memory for quick reads up to ``keep_finished``; older ones are
dropped from memory and served from the store.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable

import anyio

from routilux.bus import Event, EventBus, Gap, encode_event, encode_gap
from routilux.bus.consumer import BatchConsumer
from routilux.engine import Engine
from routilux.server.eventlog.history import EventHistory
from routilux.server.jobs import job_record
from routilux.store.base import Store, StoredEvent
from routilux.store.errors import StoreOverloaded

log = logging.getLogger("routilux.server")

STATUS_EVENTS = frozenset({"job_start", "job_idle", "job_pause", "job_resume", "job_end"})


class Recorder(BatchConsumer):
    log = log
    lost_message = "event history lost %s..%s of job %s"

    def __init__(
        self,
        engine: Engine,
        store: Store,
        history: EventHistory | None = None,
        *,
        keep_finished: int = 1000,
        buffer: int = 200_000,
        is_remote: Callable[[str], bool] | None = None,
        on_forget: Callable[[str], None] | None = None,
        on_job_end: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(engine.bus, buffer=buffer, presses=True)
        #: Jobs set aside by a graceful stop (checkpointed to resume after the restart): what the
        #: engine's shutdown does to them is not their history, and must not end their record.
        self._suspended: set[str] = set()
        self.engine = engine
        self.store = store
        self.history = history if history is not None else EventHistory()
        self.keep_finished = keep_finished
        self.processed = 0
        self._progressed = anyio.Event()
        self._finished: deque[str] = deque()
        #: Called once per ``job_end`` recorded (the job pruner counts them to wake up early).
        self.on_job_end = on_job_end
        #: Whether a job runs on another server (``ROUTILUX_REDIS_URL``): its events reach this
        #: bus for live observers, but its history is its owner's, kept in Redis — not recorded
        #: here, where nothing would ever prune it.
        self.is_remote = is_remote
        #: Called with each finished job the engine forgets (in a cluster: its owner lets go).
        self.on_forget = on_forget

    @property
    def bus(self) -> EventBus:
        return self.engine.bus

    async def caught_up(self, published: int) -> None:
        """Wait until every event the bus had published when it counted ``published`` is recorded:
        in the in-memory history, and queued for the store (written with its next batch, before
        anything queued after this returns)."""
        while self.processed < published:
            await self._progressed.wait()

    def suspend(self, job_ids: Iterable[str]) -> None:
        """Record nothing more of ``job_ids``: the server is stopping and they will resume, or
        (a cluster) they moved to another server."""
        self._suspended.update(job_ids)

    def unsuspend(self, job_ids: Iterable[str]) -> None:
        """Record ``job_ids`` again: they came back to this server."""
        self._suspended.difference_update(job_ids)

    async def consume(self, batch: list[Event | Gap]) -> None:
        events = self._record(batch)
        while events:
            try:
                self.store.record_events(events)
                break
            except StoreOverloaded:
                # The store is behind: wait for it rather than drop anything. Meanwhile our own
                # bus buffer absorbs new events, and if it overflows the bus tells us exactly
                # which seqs were lost (counted in ``lost``).
                await self.store.wait_for_room()
        # Only now: "caught up" means in memory AND queued for the store, in order, so a write
        # queued after it (a checkpoint) commits after these events.
        self._progressed.set()
        self._progressed = anyio.Event()

    def _record(self, batch: list[Event | Gap]) -> list[StoredEvent]:
        events: list[StoredEvent] = []
        encode = encode_event
        add_to_history = self.history.add
        # A job's record is rebuilt on each status change; within one batch only its last change
        # matters (the store would replace the earlier records before writing them anyway), and
        # a short job's start, idle and end usually arrive together.
        status_changes: dict[str, Event] = {}
        is_remote = self.is_remote
        suspended = self._suspended
        for item in batch:
            if (is_remote is not None and is_remote(item.job_id)) or (suspended and item.job_id in suspended):
                self.processed += item.to_seq - item.from_seq + 1 if isinstance(item, Gap) else 1
                continue
            if isinstance(item, Gap):
                self.processed += self.count_lost(item)
                payload = encode_gap(item.job_id, item.from_seq, item.to_seq)
                add_to_history(item.job_id, item.to_seq, "gap", payload)
                events.append(StoredEvent(item.job_id, item.to_seq, "gap", payload))
                continue
            self.processed += 1
            payload = encode(item)
            add_to_history(item.job_id, item.seq, item.type, payload)
            events.append(StoredEvent(item.job_id, item.seq, item.type, payload))
            if item.type in STATUS_EVENTS:
                status_changes[item.job_id] = item
        for event in status_changes.values():
            self._record_job(event)
        return events

    def _record_job(self, event: Event) -> None:
        job = self.engine.get_job(event.job_id)
        if job is None:
            return
        ended = event.type == "job_end"
        self.store.record_job(job_record(job, with_state=ended))
        if ended:
            self._finished.append(job.job_id)
            while len(self._finished) > self.keep_finished:
                forgotten = self._finished.popleft()
                self.engine.forget_job(forgotten)
                if self.on_forget is not None:
                    self.on_forget(forgotten)
            if self.on_job_end is not None:
                self.on_job_end()

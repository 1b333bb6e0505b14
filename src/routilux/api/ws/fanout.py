"""Fair fan-out: every socket's live events, served in bounded slices that leave the event loop
to HTTP requests and the engine between them, and a cap on what all sockets may hold.

The bus appends each event of a watched job once to the job's feed (:mod:`routilux.bus.feed`);
nothing per socket happens at publish. A socket whose sender has read everything parks on its
feeds; the first event after that makes the bus call :meth:`Fanout.wake` once, and the fan-out
task puts the parked sockets in its queue. It then grants *turns*, first come first served:
each turn lets one socket's sender write what it had queued (replies, snapshots, replay, metrics)
and what it had to read when the turn was granted, up to one batch
(:data:`~routilux.api.ws.stream.BATCH_BYTES`), from its feeds to its socket. Turns worth
at most :data:`SLICE_BYTES` are granted at a time, then the task yields
(``anyio.lowlevel.checkpoint``), so the loop runs the senders it woke and whatever else is ready
— requests, the engine — before the next slice. A socket that has more to read asks for another
turn and queues behind the others: a burst to a thousand sockets costs each a few short turns in
rotation, not the loop for seconds.

A socket whose client takes nothing is not waited for: its sender waits for the socket alone,
and after :data:`~routilux.bus.feed.BLOCKED_GRACE` its feeds keep only its newest
``ROUTILUX_WS_SEND_QUEUE`` events; when it reads again it is told the rest with a gap frame,
exactly as a socket whose queue overflowed.

Memory: the bytes held for sockets — each feed's retained events, counted once, and every
socket's own queue — are capped by ``ROUTILUX_WS_MAX_QUEUED_BYTES``. Past it, the sockets
furthest behind are closed with 1013 (try again later) and a reason, until the rest fit.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Final, Protocol

import anyio
import anyio.lowlevel

from routilux.api.ws.stream import BATCH_BYTES, QueuedBytes
from routilux.bus.feed import FeedReader, Feeds

log = logging.getLogger("routilux.api")

#: Bytes of frames the sockets woken in one slice may send at most, before the loop runs others.
SLICE_BYTES: Final[int] = 64 * 1024
#: What one turn costs the slice besides its bytes (waking a sender, one write to its socket).
TURN_COST: Final[int] = 2048
TRY_AGAIN_LATER: Final[int] = 1013


class Served(Protocol):
    """What the fan-out needs of a socket's session."""

    reader: FeedReader

    @property
    def queued_bytes(self) -> int: ...

    def grant(self, allowance: int) -> None: ...

    def ask_for_turn(self) -> None: ...

    def overflow(self, code: int, reason: str) -> None: ...


class Fanout:
    """The one task that hands out turns (see the module docstring); owned by the app's lifespan."""

    def __init__(self, feeds: Feeds, max_queued_bytes: int, queued: QueuedBytes | None = None) -> None:
        self.feeds = feeds
        self.max_queued_bytes = max_queued_bytes
        self.queued = queued if queued is not None else QueuedBytes()
        self._turns: deque[Served] = deque()
        self._wake = anyio.Event()
        self._waiting = False
        self.slices = 0
        self.turns = 0
        self.closed_for_overflow = 0
        self._sessions: Callable[[], Iterable[Served]] = lambda: ()

    def serve(self, sessions: Callable[[], Iterable[Served]]) -> None:
        """Where the open sessions are found when the cap must close some."""
        self._sessions = sessions

    @property
    def held_bytes(self) -> int:
        """Bytes held for sockets now: every feed's retained events and every socket's queue."""
        return self.feeds.retained_bytes + self.queued.total

    def request(self, session: Served) -> None:
        """``session`` has events to read: queue it for a turn."""
        self._turns.append(session)
        self.wake()

    def wake(self) -> None:
        if self._waiting:
            self._waiting = False
            self._wake.set()

    async def run(self) -> None:
        feeds = self.feeds
        feeds.on_data = self.wake
        try:
            while True:
                for reader in feeds.take_dirty():
                    owner = reader.owner
                    if owner is not None:
                        owner.ask_for_turn()  # type: ignore[attr-defined]
                if self.held_bytes > self.max_queued_bytes:
                    self.shed()
                if not self._turns:
                    self._wake = anyio.Event()
                    self._waiting = True
                    await self._wake.wait()
                    continue
                self._grant_slice()
                await anyio.lowlevel.checkpoint()
        finally:
            feeds.on_data = None

    def _grant_slice(self) -> None:
        budget = SLICE_BYTES
        turns = self._turns
        self.slices += 1
        while turns and budget > 0:
            session = turns.popleft()
            # What it may send on this turn: what it had to read now, up to a batch. Events that
            # arrive before its sender runs wait for its next turn, so a slice never grows by
            # itself (a burst published at once must not make every turn of the slice a batch).
            allowance = max(1, min(BATCH_BYTES, session.reader.backlog_bytes() + session.queued_bytes))
            session.grant(allowance)
            self.turns += 1
            budget -= allowance + TURN_COST

    def shed(self) -> None:
        """Over the cap: let every feed forget what no reader needs, then close the sockets
        furthest behind until the rest fit."""
        for feed in self.feeds.all():
            feed.trim(feed.oldest_needed())
        if self.held_bytes <= self.max_queued_bytes:
            return
        behind = sorted(((s.reader.backlog_bytes() + s.queued_bytes, s) for s in self._sessions()),
                        key=lambda pair: pair[0], reverse=True)
        for backlog, session in behind:
            if self.held_bytes <= self.max_queued_bytes:
                break
            self.closed_for_overflow += 1
            log.warning("closing a WebSocket %d bytes behind: sockets hold %d bytes, over "
                        "ROUTILUX_WS_MAX_QUEUED_BYTES=%d", backlog, self.held_bytes, self.max_queued_bytes)
            session.overflow(TRY_AGAIN_LATER, f"server overloaded: this client was {backlog} bytes behind, "
                             "the slowest of all")

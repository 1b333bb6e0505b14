"""One client socket's outgoing side: the frames about to be sent, and exact gap notices.

Live events wait in their job's shared feed (:mod:`routilux.bus.feed`) until the socket's turn
comes (:mod:`routilux.api.ws.fanout`), and then go straight from the feed to the socket, after
whatever is queued here. What is queued here is what only this socket gets: control frames
(snapshots, replies, pings: never dropped) and replayed history. At most ``capacity`` events are
queued; past that the oldest are dropped, and before that job's next event (or when the queue
empties) the client gets ``{"type": "gap", "job_id", "from_seq", "to_seq"}`` naming exactly what
it lost. Lost ranges are kept apart, in order, so a gap never names an event that was sent.

The sender takes everything queued at once (:meth:`OutgoingStream.take`, up to
:data:`BATCH_BYTES`) and writes it with one system call, so the busier a socket is, the less each
frame costs.

Replay is merged with the live stream per job: while a job's history is being read, its live
events are held back (its feed is not read); afterwards only those newer than the last replayed
one are queued, so the client sees every event once, in order.

Every byte queued here is also counted in a :class:`QueuedBytes` shared by all sockets, which
the server caps (``ROUTILUX_WS_MAX_QUEUED_BYTES``).
"""

from __future__ import annotations

from bisect import insort
from collections import deque
from collections.abc import Callable
from typing import Final

import anyio

from routilux.api.ws.frames import gap

#: A batch stops growing past this (it holds at least one frame). Small enough that a socket
#: whose client stopped reading holds little: what the server writes past the socket's
#: high-water mark is at most one batch.
BATCH_BYTES: Final[int] = 16 * 1024


class QueuedBytes:
    """Bytes queued in every socket's stream (one counter for the server)."""

    __slots__ = ("total",)

    def __init__(self) -> None:
        self.total = 0


class OutgoingStream:
    def __init__(
        self, capacity: int, queued: QueuedBytes | None = None, on_frame: Callable[[], None] | None = None
    ) -> None:
        self.capacity = capacity
        #: Called whenever something is queued (the session then asks for a turn to send it).
        self.on_frame = on_frame
        self._frames: deque[tuple[str | None, int, bytes]] = deque()
        self._events = 0
        self._lost: dict[str, list[list[int]]] = {}  # per job: lost ranges, in order, not yet told
        self._ready = anyio.Event()
        self._room = anyio.Event()
        self._replaying: dict[str, list[tuple[int, bytes]]] = {}
        self._last_seq: dict[str, int] = {}
        self._queued = queued if queued is not None else QueuedBytes()
        self.queued_bytes = 0
        self.dropped = 0

    # -- producers (the feed, replies, replay) ---------------------------------------------
    def control(self, payload: bytes) -> None:
        self._append(None, 0, payload)
        self._ready.set()
        if self.on_frame is not None:
            self.on_frame()

    def event(self, job_id: str, seq: int, payload: bytes) -> None:
        held = self._replaying.get(job_id)
        if held is not None:
            held.append((seq, payload))
            return
        self._enqueue(job_id, seq, payload)

    def _append(self, job_id: str | None, seq: int, payload: bytes) -> None:
        self._frames.append((job_id, seq, payload))
        self.queued_bytes += len(payload)
        self._queued.total += len(payload)

    def _enqueue(self, job_id: str, seq: int, payload: bytes) -> None:
        if seq <= self._last_seq.get(job_id, 0):
            return  # already sent (replayed)
        self._last_seq[job_id] = seq
        self._append(job_id, seq, payload)
        self._events += 1
        if self._events > self.capacity:
            self._drop_oldest_event()
        self._ready.set()
        if self.on_frame is not None:
            self.on_frame()

    def lost(self, job_id: str, from_seq: int, to_seq: int) -> None:
        """Events that will not come (the feed moved on without this client, or replay found
        history gone)."""
        self._note_lost(job_id, from_seq, to_seq)
        self._last_seq[job_id] = max(self._last_seq.get(job_id, 0), to_seq)
        self._ready.set()
        if self.on_frame is not None:
            self.on_frame()

    def skip_through(self, job_id: str, seq: int) -> None:
        """Events of ``job_id`` up to ``seq`` are already told (by the snapshot): drop them if
        they still arrive (relayed from another server, they can lag behind its snapshot)."""
        self._last_seq[job_id] = max(self._last_seq.get(job_id, 0), seq)

    def begin_replay(self, job_id: str) -> None:
        self._replaying.setdefault(job_id, [])

    @property
    def replaying(self) -> dict[str, list[tuple[int, bytes]]]:
        """The jobs whose history is being replayed (their live events wait in the feed)."""
        return self._replaying

    @property
    def sent(self) -> dict[str, int]:
        """Per job, the last seq the client was told of (sent, replayed, in its snapshot or a
        gap): live events read from the feed up to it are not sent again."""
        return self._last_seq

    async def wait_for_room(self) -> None:
        """Wait until the sender has taken an event off a full queue. Every waiter waits on the
        same event, which the sender sets and then replaces: two waiters at once (a replay and
        another) are both woken, never the second one only."""
        while self.full:
            await self._room.wait()

    async def end_replay(self, job_id: str, replayed: list[tuple[int, bytes]], after: int) -> None:
        """Queue ``replayed`` (events after seq ``after``) as fast as the client reads them —
        replay is asked for, so it is never dropped — then the live events held meanwhile."""
        self._last_seq[job_id] = max(self._last_seq.get(job_id, 0), after)
        for seq, payload in replayed:
            await self.wait_for_room()
            self._enqueue(job_id, seq, payload)
        for seq, payload in self._replaying.pop(job_id, []):
            self._enqueue(job_id, seq, payload)
        self._ready.set()  # the job's feed may be read again
        if self.on_frame is not None:
            self.on_frame()

    def discard(self) -> None:
        """The socket is being closed: drop whatever is queued (and its bytes from the count)."""
        self._queued.total -= self.queued_bytes
        self.queued_bytes = 0
        self._frames.clear()
        self._lost.clear()
        self._replaying.clear()
        self._events = 0
        self._room.set()

    def forget(self, job_id: str) -> None:
        """Unsubscribed: stop tracking the job (a later subscribe starts afresh)."""
        self._replaying.pop(job_id, None)
        self._last_seq.pop(job_id, None)
        self._lost.pop(job_id, None)

    def _drop_oldest_event(self) -> None:
        for index, (job_id, seq, payload) in enumerate(self._frames):
            if job_id is not None:
                del self._frames[index]
                self._events -= 1
                self.queued_bytes -= len(payload)
                self._queued.total -= len(payload)
                self.dropped += 1
                self._note_lost(job_id, seq, seq)
                return

    def _note_lost(self, job_id: str, from_seq: int, to_seq: int) -> None:
        """Record a lost range, merged with those it touches or overlaps (no seq lies between
        them); ranges stay apart otherwise, so each gap frame names only seqs that were not sent."""
        ranges = self._lost.setdefault(job_id, [])
        insort(ranges, [from_seq, to_seq])
        merged: list[list[int]] = []
        for span in ranges:
            if merged and span[0] <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], span[1])
            else:
                merged.append(span)
        self._lost[job_id] = merged

    # -- the consumer (the sender task) ------------------------------------------------------
    def has_frames(self) -> bool:
        return bool(self._frames or self._lost)

    def wake(self) -> None:
        """Wake the sender (its turn to read its feeds has come)."""
        self._ready.set()

    async def wait(self) -> None:
        """Wait until a frame is queued or :meth:`wake` is called (from now on: whatever is
        queued already does not end the wait)."""
        self._ready = anyio.Event()
        await self._ready.wait()

    async def next_batch(self) -> list[bytes]:
        """:meth:`take`, waiting while there is nothing to send."""
        while not self._frames and not self._lost:
            await self.wait()
        return self.take()

    def take(self) -> list[bytes]:
        """Every frame queued now (up to :data:`BATCH_BYTES`), oldest first, each gap notice
        placed before the event it precedes (and the rest once the queue is empty)."""
        batch: list[bytes] = []
        size = 0
        frames = self._frames
        lost = self._lost
        taken = 0
        while frames and size < BATCH_BYTES:
            job_id, seq, payload = frames[0]
            if job_id is not None:
                if lost:
                    ranges = lost.get(job_id)
                    while ranges and ranges[0][1] < seq:
                        first, last = ranges.pop(0)
                        batch.append(gap(job_id, first, last))
                    if ranges == []:
                        del lost[job_id]
                taken += 1
            frames.popleft()
            batch.append(payload)
            size += len(payload)
        if not frames:
            for job_id, ranges in lost.items():
                batch += [gap(job_id, first, last) for first, last in ranges]
            lost.clear()
        self.queued_bytes -= size
        self._queued.total -= size
        if taken:
            self._events -= taken
            self._room.set()
            self._room = anyio.Event()
        return batch

    def pending(self) -> int:
        return len(self._frames)

    @property
    def full(self) -> bool:
        return self._events >= self.capacity

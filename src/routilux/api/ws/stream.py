"""One client socket's outgoing side: a bounded queue that never slows anyone else down.

Events go into a queue of at most ``capacity`` frames. When a client reads too slowly the oldest
events are dropped, and before that job's next event (or when the queue empties) the client gets
``{"type": "gap", "job_id", "from_seq", "to_seq"}`` naming exactly what it lost. Control frames
(snapshots, replies, pings) are never dropped. The engine, other clients and the API never wait
for a socket: the only thing that waits for a slow client is its own sender task.

The sender takes everything queued at once (:meth:`OutgoingStream.next_batch`) and writes it
with one system call, so the busier a socket is, the less each frame costs.

Replay is merged with the live stream per job: while a job's history is being read, its live
events are held back; afterwards only those newer than the last replayed one are queued, so the
client sees every event once, in order.
"""

from __future__ import annotations

from collections import deque
from typing import Final

import anyio

from routilux.api.ws.frames import gap

BATCH_BYTES: Final[int] = 256 * 1024  # a batch stops growing past this (it holds at least one frame)


class OutgoingStream:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._frames: deque[tuple[str | None, int, bytes]] = deque()
        self._events = 0
        self._lost: dict[str, list[int]] = {}
        self._ready = anyio.Event()
        self._room = anyio.Event()
        self._replaying: dict[str, list[tuple[int, bytes]]] = {}
        self._last_seq: dict[str, int] = {}
        self.dropped = 0

    # -- producers (the pump, replies, replay) ---------------------------------------------
    def control(self, payload: bytes) -> None:
        self._frames.append((None, 0, payload))
        self._ready.set()

    def event(self, job_id: str, seq: int, payload: bytes) -> None:
        held = self._replaying.get(job_id)
        if held is not None:
            held.append((seq, payload))
            return
        self._enqueue(job_id, seq, payload)

    def _enqueue(self, job_id: str, seq: int, payload: bytes) -> None:
        if seq <= self._last_seq.get(job_id, 0):
            return  # already sent (replayed)
        self._last_seq[job_id] = seq
        self._frames.append((job_id, seq, payload))
        self._events += 1
        if self._events > self.capacity:
            self._drop_oldest_event()
        self._ready.set()

    def lost(self, job_id: str, from_seq: int, to_seq: int) -> None:
        """Events the bus could not hand us (our subscription overflowed)."""
        self._note_lost(job_id, from_seq, to_seq)
        self._last_seq[job_id] = max(self._last_seq.get(job_id, 0), to_seq)
        self._ready.set()

    def skip_through(self, job_id: str, seq: int) -> None:
        """Events of ``job_id`` up to ``seq`` are already told (by the snapshot): drop them if
        they still arrive (relayed from another server, they can lag behind its snapshot)."""
        self._last_seq[job_id] = max(self._last_seq.get(job_id, 0), seq)

    def begin_replay(self, job_id: str) -> None:
        self._replaying.setdefault(job_id, [])

    async def wait_for_room(self) -> None:
        """Wait until the sender has taken an event off a full queue. Every waiter waits on the
        same event, which the sender sets and then replaces: two waiters at once (the pump and a
        replay) are both woken, never the second one only."""
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

    def forget(self, job_id: str) -> None:
        """Unsubscribed: stop tracking the job (a later subscribe starts afresh)."""
        self._replaying.pop(job_id, None)
        self._last_seq.pop(job_id, None)
        self._lost.pop(job_id, None)

    def _drop_oldest_event(self) -> None:
        for index, (job_id, seq, _payload) in enumerate(self._frames):
            if job_id is not None:
                del self._frames[index]
                self._events -= 1
                self.dropped += 1
                self._note_lost(job_id, seq, seq)
                return

    def _note_lost(self, job_id: str, from_seq: int, to_seq: int) -> None:
        current = self._lost.get(job_id)
        if current is None:
            self._lost[job_id] = [from_seq, to_seq]
        else:
            current[0] = min(current[0], from_seq)
            current[1] = max(current[1], to_seq)

    # -- the consumer (the sender task) ------------------------------------------------------
    async def next_batch(self) -> list[bytes]:
        """Every frame queued now (up to :data:`BATCH_BYTES`), oldest first, each gap notice
        placed before the event it precedes; waits while there is nothing to send."""
        while not self._frames and not self._lost:
            self._ready = anyio.Event()
            await self._ready.wait()
        batch: list[bytes] = []
        size = 0
        frames = self._frames
        lost = self._lost
        taken = 0
        while frames and size < BATCH_BYTES:
            job_id, seq, payload = frames[0]
            if job_id is not None:
                if lost:
                    missing = lost.get(job_id)
                    if missing is not None and missing[1] < seq:
                        del lost[job_id]
                        batch.append(gap(job_id, missing[0], missing[1]))
                taken += 1
            frames.popleft()
            batch.append(payload)
            size += len(payload)
        if not frames:
            for job_id, (first, last) in lost.items():
                batch.append(gap(job_id, first, last))
            lost.clear()
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

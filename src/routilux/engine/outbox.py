"""How a worker thread's emissions reach the event loop: in batches, in order, with back-pressure.

A blocking round trip to the loop per ``emit`` would cap sync routines at a few thousand items a
second, all of it spent waking threads. Instead each sync activation gets an :class:`Outbox`: the
thread appends operations (emit, log, progress) and carries on; the loop is woken once per batch
and a pump task delivers the batch with the usual back-pressure. The outbox itself is bounded, so
a thread that outruns its consumers blocks in ``emit`` exactly as an async routine would wait.

If delivery fails (a slot stayed full, the job ended), the outbox is aborted: the thread's next
``emit`` raises that error, and the activation reports it even if the logic swallowed it, so an
emission is never lost silently.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING, Any, Final

import anyio

if TYPE_CHECKING:
    from routilux.engine.handoff import ThreadHandoff

DEFAULT_OUTBOX_LIMIT: Final[int] = 256

Op = tuple[str, Any, Any, Any]  # (kind, a, b, c)


class Outbox:
    """A bounded, thread-to-loop queue of one activation's operations."""

    def __init__(self, handoff: ThreadHandoff, limit: int = DEFAULT_OUTBOX_LIMIT) -> None:
        self._handoff = handoff
        self._limit = limit
        self._ops: deque[Op] = deque()
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._wake_requested = False
        self._ready = anyio.Event()
        self._closed = False
        self.error: BaseException | None = None

    # -- thread side -----------------------------------------------------------------------
    def put(self, op: Op) -> None:
        """Queue ``op``; blocks while the outbox is full; raises if delivery has failed."""
        with self._lock:
            while len(self._ops) >= self._limit and self.error is None:
                self._room.wait()
            if self.error is not None:
                raise self.error
            if self._closed:
                raise RuntimeError("emit after the activation ended (a context must not outlive its logic call)")
            self._ops.append(op)
            wake = not self._wake_requested
            self._wake_requested = True
        if wake:
            self._handoff.submit(self._wake)

    # -- loop side -------------------------------------------------------------------------
    def _wake(self) -> None:
        self._ready.set()

    def close(self) -> None:
        """The thread is done (or abandoned): the pump delivers what is left, then stops."""
        self._closed = True
        self._ready.set()

    def abort(self, error: BaseException) -> None:
        """Delivery failed: drop nothing silently — the thread's next ``put`` raises ``error``."""
        with self._lock:
            if self.error is None:
                self.error = error
            self._room.notify_all()

    def take(self) -> list[Op]:
        """Everything queued so far, oldest first (frees room for the thread)."""
        with self._lock:
            ops = list(self._ops)
            self._ops.clear()
            self._wake_requested = False
            self._room.notify_all()
        return ops

    async def wait(self) -> bool:
        """Wait for operations; ``False`` once the outbox is closed and empty."""
        while True:
            with self._lock:
                if self._ops:
                    return True
                if self._closed:
                    return False
            self._ready = anyio.Event()
            with self._lock:
                pending = bool(self._ops)
            if pending or self._closed:
                continue
            await self._ready.wait()

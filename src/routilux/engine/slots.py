"""Slots: a routine's named inputs. Declared once per routine class (:class:`SlotSpec`), and
materialised once per job as a bounded FIFO (:class:`SlotQueue`) so jobs never share data.

A full slot makes the emitter wait (back-pressure) rather than drop anything; the wait is bounded
so that a cycle that fills itself ends in a :class:`~routilux.engine.errors.SlotFull` error the
routine's error strategy handles, instead of a silent deadlock.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Final, Literal

import anyio
import msgspec

from routilux.engine.errors import JobTerminated, SlotFull

DEFAULT_SLOT_CAPACITY: Final[int] = 1000
DEFAULT_PUT_TIMEOUT: Final[float] = 60.0

Pressure = Literal["low", "medium", "high", "critical"]


class SlotSpec(msgspec.Struct, frozen=True):
    """How a slot is declared on a routine class. ``None`` means the engine default."""

    capacity: int | None = None
    put_timeout: float | None = None
    description: str = ""


class QueueStatus(msgspec.Struct, frozen=True):
    """What an observer sees of one slot of one job."""

    slot: str
    routine_id: str
    unconsumed: int
    capacity: int
    usage: float
    pressure: Pressure


def pressure_of(usage: float) -> Pressure:
    """Usage bands: under 50% low, under 80% medium, under 95% high, else critical."""
    if usage < 0.5:
        return "low"
    if usage < 0.8:
        return "medium"
    if usage < 0.95:
        return "high"
    return "critical"


class SlotQueue:
    """One slot of one job: a bounded FIFO with an awaitable "has room" signal.

    Used only on the event-loop thread; worker threads reach it through the loop.
    """

    __slots__ = ("routine_id", "name", "capacity", "put_timeout", "_items", "_room", "_closed")

    def __init__(self, routine_id: str, name: str, capacity: int, put_timeout: float) -> None:
        if capacity < 1:
            raise ValueError(f"slot {routine_id}.{name}: capacity must be at least 1")
        self.routine_id = routine_id
        self.name = name
        self.capacity = capacity
        self.put_timeout = put_timeout
        self._items: deque[Any] = deque()
        self._room: anyio.Event | None = None
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def full(self) -> bool:
        return len(self._items) >= self.capacity

    def put_nowait(self, item: Any) -> bool:
        """Append ``item`` if there is room; ``False`` (and nothing changed) if the slot is full."""
        if self._closed:
            raise JobTerminated(f"slot {self.routine_id}.{self.name} belongs to a job that ended")
        if len(self._items) >= self.capacity:
            return False
        self._items.append(item)
        return True

    async def wait_for_room(self, timeout: float | None = None) -> None:
        """Wait until the slot has room, for at most ``timeout`` seconds (default: its own)."""
        limit = self.put_timeout if timeout is None else timeout
        deadline = anyio.current_time() + limit if math.isfinite(limit) else math.inf
        while len(self._items) >= self.capacity:
            if self._closed:
                raise JobTerminated(f"slot {self.routine_id}.{self.name} belongs to a job that ended")
            if self._room is None:
                self._room = anyio.Event()
            room = self._room
            with anyio.move_on_after(deadline - anyio.current_time()) as scope:
                await room.wait()
            if scope.cancelled_caught and len(self._items) >= self.capacity:
                raise SlotFull(
                    f"slot {self.routine_id}.{self.name} stayed full ({self.capacity} items) "
                    f"for {limit:g}s",
                    routine_id=self.routine_id,
                    slot=self.name,
                    capacity=self.capacity,
                )
        if self._closed:
            raise JobTerminated(f"slot {self.routine_id}.{self.name} belongs to a job that ended")

    def take(self, count: int | None = None) -> list[Any]:
        """Remove and return up to ``count`` items (all if ``None``), oldest first."""
        items = self._items
        if count is None or count >= len(items):
            taken = list(items)
            items.clear()
        else:
            taken = [items.popleft() for _ in range(count)]
        if taken and self._room is not None:
            self._room.set()
            self._room = None
        return taken

    def refill(self, items: list[Any]) -> None:
        """Put back what a checkpoint held, in order, before anything new arrives.

        Capacity is not applied: items re-queued from activations in flight may take a full slot
        past it for a while, and refusing them would lose data; emitters wait until it drains.
        """
        self._items.extend(items)

    def peek(self) -> list[Any]:
        """A copy of what is queued, oldest first (for debuggers and state views)."""
        return list(self._items)

    def close(self) -> None:
        """The job ended: wake every waiting emitter so it fails instead of hanging."""
        self._closed = True
        if self._room is not None:
            self._room.set()
            self._room = None

    def status(self) -> QueueStatus:
        usage = len(self._items) / self.capacity
        return QueueStatus(
            slot=self.name,
            routine_id=self.routine_id,
            unconsumed=len(self._items),
            capacity=self.capacity,
            usage=round(usage, 4),
            pressure=pressure_of(usage),
        )

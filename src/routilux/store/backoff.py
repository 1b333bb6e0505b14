"""Capped, jittered exponential backoff for loops that retry a lost connection.

Why jitter: after Redis comes back, every server's every loop (channel, event bridge, lease,
store writer) reconnects; with plain doubling they would all knock at the same instants. Each
delay is drawn from the upper half of its step (``[d/2, d]``), so retries spread out while the
wait still grows; ``cap`` bounds how late a loop notices that Redis is back.
"""

from __future__ import annotations

import random
from typing import Final

import anyio

INITIAL_SECONDS: Final = 0.05
CAP_SECONDS: Final = 2.0


class Backoff:
    """The delays of one retrying loop: ``next()`` after each failure, ``reset()`` after a success."""

    def __init__(self, initial: float = INITIAL_SECONDS, cap: float = CAP_SECONDS, factor: float = 2.0) -> None:
        if initial <= 0 or cap < initial or factor < 1:
            raise ValueError("need 0 < initial <= cap and factor >= 1")
        self.initial = initial
        self.cap = cap
        self.factor = factor
        self.failures = 0  # in a row, since the last reset

    def next(self) -> float:
        """The delay before the next attempt (and count one more failure)."""
        step = min(self.cap, self.initial * self.factor ** min(self.failures, 64))
        self.failures += 1
        return random.uniform(step / 2, step)

    def reset(self) -> None:
        self.failures = 0

    async def sleep(self) -> None:
        """Wait :meth:`next` seconds."""
        await anyio.sleep(self.next())

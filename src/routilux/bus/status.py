"""The life of a job, as every layer spells it: the engine sets it, events and stored records
carry it, the API and the store filter on it.

:data:`TERMINAL_STATUSES` is the one set of statuses a job never leaves. Its members are
:class:`JobStatus` values, which are ``str``: ``"failed" in TERMINAL_STATUSES`` holds as well as
``JobStatus.FAILED in TERMINAL_STATUSES``, so a stored record's plain string is checked the same way.
"""

from __future__ import annotations

import enum
from typing import Final


class JobStatus(enum.StrEnum):
    """The life of a job. ``running`` ⇄ ``idle`` follows whether work is queued or active."""

    PENDING = "pending"
    RUNNING = "running"
    IDLE = "idle"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


#: The statuses a job ends in and never leaves.
TERMINAL_STATUSES: Final[frozenset[JobStatus]] = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})

#: The statuses a job can still leave (the complement of :data:`TERMINAL_STATUSES`).
LIVE_STATUSES: Final[frozenset[JobStatus]] = frozenset(JobStatus) - TERMINAL_STATUSES

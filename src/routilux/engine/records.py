"""What a job remembers about itself: routine states, execution history, errors, pause points.

These are msgspec Structs so the API, the store and the debugger read them without conversion.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

import msgspec

from routilux.bus.payloads import ActivationStatus
from routilux.bus.status import JobStatus as JobStatus  # re-exported: routilux.api and the store tests import it here

RoutineStatus = Literal["pending", "running", "idle", "completed", "failed", "skipped", "cancelled"]


class RoutineState(msgspec.Struct):
    """One routine's state within one job."""

    status: RoutineStatus = "pending"
    execution_count: int = 0
    error_count: int = 0
    active: int = 0
    last_execution: datetime | None = None
    error: dict[str, Any] | None = None


class ExecutionRecord(msgspec.Struct, frozen=True, gc=False):
    """One activation (one attempt) of one routine."""

    routine_id: str
    status: ActivationStatus
    started_at: datetime
    ended_at: datetime
    duration: float
    items: int
    attempt: int = 1
    error: str | None = None


class ErrorRecord(msgspec.Struct, frozen=True):
    """An error raised by a routine's logic (or the job's own timeout), with its traceback."""

    routine_id: str | None
    type: str
    message: str
    traceback: str | None
    timestamp: datetime
    attempt: int = 1
    strategy: str | None = None

    def job_error(self) -> dict[str, Any]:
        """The job's (or a routine state's) ``error`` when this error is what it ended with."""
        return {"type": self.type, "message": self.message, "routine_id": self.routine_id, "traceback": self.traceback}


class PausePoint(msgspec.Struct, frozen=True):
    """When and why a job was paused, and what was in flight at that moment."""

    paused_at: datetime
    reason: str | None
    active_routines: list[str]
    resumed_at: datetime | None = None
    #: The routine the pause is about, when it has one (a breakpoint's or a step's).
    routine_id: str | None = None


def error_summary(error: Mapping[str, Any] | None) -> str | None:
    """A job's or a routine's error as one line, ``"<Type>: <message>"`` (what clients show; the
    object itself is shown beside it). The same form as :attr:`ExecutionRecord.error`."""
    if error is None:
        return None
    return f"{error.get('type', 'error')}: {error.get('message', '')}"

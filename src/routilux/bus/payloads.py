"""The ``data`` of each event type: the documented schema of what an event carries.

The engine publishes ``data`` as a plain ``dict`` and every in-process subscriber reads it as one
(``event.data["slot"]``), and events relayed from another server arrive decoded as dicts too, so
the bus carries dicts whatever their origin. These Structs are the contract those dicts keep:
:func:`payload_of` reads any event's ``data`` as its typed payload, and the engine's tests check
that every event it publishes decodes with ``forbid_unknown_fields`` — a key added, renamed or
dropped on one side shows up as a failed test, not as a surprised consumer.

Captured values (``slot_call.data``, ``event_emit.data``, ``log.fields``, the debugger's
``data``) are what :func:`routilux.bus.encoding.capture` made: the value itself as JSON, or
:class:`Truncated` when it was larger than the job's preview limit.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, Literal

import msgspec

from routilux.bus.encoding import encode_json
from routilux.bus.events import Event
from routilux.bus.status import JobStatus

#: How one attempt of one activation ended (``retrying``: it failed and will be tried again).
ActivationStatus = Literal["completed", "failed", "skipped", "retrying", "cancelled"]


class Payload(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Base of every event payload."""


class Truncated(Payload, frozen=True):
    """A captured value that was larger than the preview limit."""

    truncated: Literal[True]
    size: int  # bytes of the whole value's JSON
    preview: str  # its first bytes


class ErrorSummary(Payload, frozen=True):
    """Why an attempt failed: the exception's type name and message."""

    type: str
    message: str


class JobError(Payload, frozen=True):
    """Why a job ended failed or cancelled (``routine_id`` and ``traceback`` when a routine's
    error ended it)."""

    type: str
    message: str
    routine_id: str | None = None
    traceback: str | None = None


class JobStart(Payload, frozen=True):
    runtime_id: str
    timeout: float | None


class JobIdle(Payload, frozen=True):
    pass


class JobPause(Payload, frozen=True):
    reason: str | None
    active_routines: list[str]  # routines with an activation in flight at the pause


class JobResume(Payload, frozen=True):
    """The job runs on after a pause, or (``reason == "restart"``) it was restored from a
    checkpoint in a new process: the boundary in its events, with the status it is in again."""

    reason: str | None = None  # "restart"; absent for a resume after a pause
    status: JobStatus | None = None  # on a restart: running, idle or paused (a paused job stays so)


class JobEnd(Payload, frozen=True):
    status: JobStatus
    error: JobError | None
    unconsumed: int  # items left in slot queues


class RoutineStart(Payload, frozen=True):
    attempt: int  # 1 for the first attempt; more is a retry of the same items
    items: dict[str, int]  # items taken from each slot
    thread: bool  # the logic runs in a worker thread


class RoutineEnd(Payload, frozen=True):
    status: ActivationStatus
    duration: float  # seconds
    attempt: int
    error: ErrorSummary | None


class SlotCall(Payload, frozen=True):
    slot: str
    source: str | None  # "routine.event" that sent it; None when posted from outside
    data: Any  # captured


class EventEmit(Payload, frozen=True):
    event: str
    data: Any  # captured
    targets: int  # connections it was delivered to


class Log(Payload, frozen=True):
    level: str
    message: str
    fields: Any  # captured


class Progress(Payload, frozen=True):
    fraction: float  # 0 to 1
    message: str | None


class DebugStep(Payload, frozen=True):
    """A debugger stop after a step (published by :mod:`routilux.debug`)."""

    breakpoint_id: str | None
    type: str  # the breakpoint's kind, or "step"
    routine_id: str | None
    slot: str | None
    event: str | None
    reason: str | None
    at: datetime
    data: Any  # captured: the held item(s)


class BreakpointHit(DebugStep, frozen=True):
    """A debugger stop at a breakpoint."""

    hit_count: int


PAYLOADS: Final[dict[str, type[Payload]]] = {
    "job_start": JobStart,
    "job_idle": JobIdle,
    "job_pause": JobPause,
    "job_resume": JobResume,
    "job_end": JobEnd,
    "routine_start": RoutineStart,
    "routine_end": RoutineEnd,
    "slot_call": SlotCall,
    "event_emit": EventEmit,
    "breakpoint_hit": BreakpointHit,
    "debug_step": DebugStep,
    "progress": Progress,
    "log": Log,
}


def payload_of(event: Event) -> Payload:
    """``event.data`` as its typed payload (captured values decoded). Raises
    :class:`msgspec.ValidationError` if the data does not have the documented shape."""
    return msgspec.json.decode(encode_json(event.data), type=PAYLOADS[event.type])

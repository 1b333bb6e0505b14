"""The events every observer of Routilux sees, as msgspec Structs.

One schema serves the in-process subscribers (metrics, debugger), the WebSocket frames and the
persisted event log, so an event is encoded exactly once no matter how many places read it.
Payloads are captured as pre-encoded JSON (:class:`msgspec.Raw`) at publish time: that snapshots
the data (a routine that mutates an item afterwards does not rewrite history), bounds its size,
and costs nothing more when the event is later encoded for a client (:mod:`routilux.bus.encoding`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final, Literal

import msgspec

from routilux.bus.encoding import DEFAULT_PREVIEW_BYTES, capture, decode_captured, encode_json, event_to_builtins

__all__ = [
    "DEFAULT_PREVIEW_BYTES",
    "EVENT_TYPES",
    "Event",
    "EventType",
    "Gap",
    "utc_now",
    # at home in routilux.bus.encoding; importable from here as before
    "capture",
    "decode_captured",
    "encode_json",
    "event_to_builtins",
]

EventType = Literal[
    "job_start",
    "job_idle",
    "job_pause",
    "job_resume",
    "job_end",
    "routine_start",
    "routine_end",
    "slot_call",
    "event_emit",
    "breakpoint_hit",
    "debug_step",
    "progress",
    "log",
]

EVENT_TYPES: Final[frozenset[str]] = frozenset(EventType.__args__)  # type: ignore[attr-defined]


class Event(msgspec.Struct, frozen=True, gc=False):
    """One step of one job. ``seq`` increases by one per job, from 1, with no holes."""

    seq: int
    type: EventType
    job_id: str
    flow_id: str
    routine_id: str | None
    timestamp: datetime
    data: dict[str, Any]


class Gap(msgspec.Struct, frozen=True, gc=False, tag="gap", tag_field="type"):
    """Told to a subscriber in place of the events of ``job_id`` it lost (``from_seq..to_seq``)."""

    job_id: str
    from_seq: int
    to_seq: int


def utc_now() -> datetime:
    """The timestamp used for every event; msgspec encodes it as ISO 8601 with ``Z``."""
    return datetime.now(UTC)

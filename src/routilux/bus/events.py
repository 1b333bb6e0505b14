"""The events every observer of Routilux sees, as msgspec Structs.

One schema serves the in-process subscribers (metrics, debugger), the WebSocket frames and the
persisted event log, so an event is encoded exactly once no matter how many places read it.
Payloads are captured as pre-encoded JSON (:class:`msgspec.Raw`) at publish time: that snapshots
the data (a routine that mutates an item afterwards does not rewrite history), bounds its size,
and costs nothing more when the event is later encoded for a client.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final, Literal

import msgspec

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

DEFAULT_PREVIEW_BYTES: Final[int] = 4096


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


def _encode_fallback(obj: Any) -> str:
    # Routines written in Python may pass objects JSON cannot hold; show them rather than fail.
    return repr(obj)


_encoder = msgspec.json.Encoder(enc_hook=_encode_fallback)


def encode_json(value: Any) -> bytes:
    """Encode any value a routine may produce as JSON, using ``repr`` for unknown types."""
    return _encoder.encode(value)


def capture(value: Any, limit: int = DEFAULT_PREVIEW_BYTES) -> Any:
    """Snapshot ``value`` for an event payload, truncated to ``limit`` bytes of JSON.

    Small values become :class:`msgspec.Raw` (already encoded). A larger one becomes
    ``{"truncated": true, "size": <bytes>, "preview": "<first bytes of its JSON>"}`` so a reader
    always knows it is not looking at the whole value.
    """
    raw = _encoder.encode(value)
    if len(raw) <= limit:
        return msgspec.Raw(raw)
    preview = raw[:limit].decode("utf-8", errors="ignore")
    return {"truncated": True, "size": len(raw), "preview": preview}


def decode_captured(value: Any) -> Any:
    """Turn a :func:`capture` result back into plain Python data (for in-process readers)."""
    if isinstance(value, msgspec.Raw):
        return msgspec.json.decode(value)
    return value


def event_to_builtins(event: Event | Gap) -> dict[str, Any]:
    """The JSON form of an event as plain Python objects (tests, debugger, history views)."""
    return msgspec.json.decode(_encoder.encode(event))

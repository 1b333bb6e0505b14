"""The event bus and the event types every observer of a job receives."""

from routilux.bus.bus import EventBus, Subscription, SubscriptionClosed
from routilux.bus.encoding import (
    capture,
    decode_captured,
    decode_gap,
    encode_event,
    encode_gap,
    encode_json,
    event_to_builtins,
)
from routilux.bus.events import EVENT_TYPES, Event, EventType, Gap, utc_now
from routilux.bus.status import LIVE_STATUSES, TERMINAL_STATUSES, JobStatus

__all__ = [
    "EVENT_TYPES",
    "Event",
    "EventBus",
    "EventType",
    "Gap",
    "JobStatus",
    "LIVE_STATUSES",
    "Subscription",
    "SubscriptionClosed",
    "TERMINAL_STATUSES",
    "capture",
    "decode_captured",
    "decode_gap",
    "encode_event",
    "encode_gap",
    "encode_json",
    "event_to_builtins",
    "utc_now",
]

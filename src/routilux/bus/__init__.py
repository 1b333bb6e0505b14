"""The event bus and the event types every observer of a job receives."""

from routilux.bus.bus import EventBus, Subscription, SubscriptionClosed
from routilux.bus.events import (
    EVENT_TYPES,
    Event,
    EventType,
    Gap,
    capture,
    decode_captured,
    encode_json,
    event_to_builtins,
    utc_now,
)

__all__ = [
    "EVENT_TYPES",
    "Event",
    "EventBus",
    "EventType",
    "Gap",
    "Subscription",
    "SubscriptionClosed",
    "capture",
    "decode_captured",
    "encode_json",
    "event_to_builtins",
    "utc_now",
]

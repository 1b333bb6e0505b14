"""What travels on a socket. Events are sent exactly as the bus encodes them; the rest are small
control frames (``snapshot``, ``gap``, ``ping``/``pong``, ``subscribed``/``unsubscribed``, ``error``).

Frames are UTF-8 JSON ``bytes``. An event is encoded once, however many sockets watch its job and
whether or not the recorder stores it: :func:`routilux.bus.encode_event` keeps the most recent
encodings.
"""

from __future__ import annotations

from typing import Any

from routilux.bus import encode_event, encode_gap, encode_json

__all__ = ["control", "encode_event", "gap"]

def control(type_: str, **fields: Any) -> bytes:
    return encode_json({"type": type_, **fields})


#: ``{"type": "gap", "job_id", "from_seq", "to_seq"}``, as a stored history keeps it too.
gap = encode_gap

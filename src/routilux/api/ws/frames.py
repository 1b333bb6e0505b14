"""What travels on a socket. Events are sent exactly as the bus encodes them; the rest are small
control frames (``snapshot``, ``gap``, ``ping``/``pong``, ``subscribed``/``unsubscribed``, ``error``).

Frames are UTF-8 JSON ``bytes``. An event is encoded once, however many sockets watch its job and
whether or not the recorder stores it: :func:`encode_event` keeps the most recent encodings.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Final

import msgspec

from routilux.bus import Event

_encoder = msgspec.json.Encoder(enc_hook=repr)
_CACHE_SIZE: Final[int] = 8192
_cache: OrderedDict[tuple[str, int], bytes] = OrderedDict()


def encode_event(event: Event) -> bytes:
    """The event's JSON, as the recorder stores it and every socket sends it."""
    key = (event.job_id, event.seq)
    payload = _cache.get(key)
    if payload is None:
        payload = _encoder.encode(event)
        _cache[key] = payload
        if len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return payload


def control(type_: str, **fields: Any) -> bytes:
    return _encoder.encode({"type": type_, **fields})


def gap(job_id: str, from_seq: int, to_seq: int) -> bytes:
    return control("gap", job_id=job_id, from_seq=from_seq, to_seq=to_seq)

"""What travels on a socket. Events are sent exactly as the bus encodes them; the rest are small
control frames (``snapshot``, ``gap``, ``ping``/``pong``, ``subscribed``/``unsubscribed``, ``error``).

Frames are text (``str``), the form uvicorn sends. Encoding is cached per event, so a hundred
sockets watching one job encode — and decode to text — each event once.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Final

import msgspec

from routilux.bus import Event

_encoder = msgspec.json.Encoder(enc_hook=repr)
_CACHE_SIZE: Final[int] = 8192
_cache: OrderedDict[tuple[str, int], str] = OrderedDict()


def encode_event(event: Event) -> str:
    key = (event.job_id, event.seq)
    payload = _cache.get(key)
    if payload is None:
        payload = _encoder.encode(event).decode()
        _cache[key] = payload
        if len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return payload


def control(type_: str, **fields: Any) -> str:
    return _encoder.encode({"type": type_, **fields}).decode()


def gap(job_id: str, from_seq: int, to_seq: int) -> str:
    return control("gap", job_id=job_id, from_seq=from_seq, to_seq=to_seq)

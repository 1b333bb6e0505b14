"""The one JSON encoding of events and of what routines put in them.

Every reader of an event — the recorder that stores it, each WebSocket that sends it, the cluster
relay — gets the same bytes from :func:`encode_event`, which encodes an event once and keeps the
most recent encodings, however many readers ask. Payloads are snapshotted at publish time by
:func:`capture` with the same encoder, so a value a routine produced is encoded the same way
whether it travels inside an event or alone (:func:`encode_json`).

Routines written in Python may produce objects JSON cannot hold (a ``set``, a custom class):
those are shown as their ``repr`` rather than failing the publish.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Final, Protocol

import msgspec

DEFAULT_PREVIEW_BYTES: Final[int] = 4096
#: Encodings :func:`encode_event` keeps: enough for every reader of a burst to find it.
EVENT_CACHE_SIZE: Final[int] = 8192


def _encode_fallback(obj: Any) -> str:
    return repr(obj)


class Numbered(Protocol):
    """What :func:`encode_event` needs of an event: which job it belongs to and its place there.

    Spelled out here so the encoding stays below the event schema (:mod:`routilux.bus.events`
    imports this module, not the other way round); :class:`~routilux.bus.events.Event` fits it.
    """

    @property
    def job_id(self) -> str: ...

    @property
    def seq(self) -> int: ...


_encoder: Final = msgspec.json.Encoder(enc_hook=_encode_fallback)
_encoded: OrderedDict[tuple[str, int], bytes] = OrderedDict()


def encode_json(value: Any) -> bytes:
    """Encode any value a routine may produce as JSON, using ``repr`` for unknown types."""
    return _encoder.encode(value)


def encode_event(event: Numbered) -> bytes:
    """The event's JSON, as the recorder stores it and every socket sends it (encoded once)."""
    key = (event.job_id, event.seq)
    payload = _encoded.get(key)
    if payload is None:
        payload = _encoder.encode(event)
        _encoded[key] = payload
        if len(_encoded) > EVENT_CACHE_SIZE:
            _encoded.popitem(last=False)
    return payload


def encode_gap(job_id: str, from_seq: int, to_seq: int) -> bytes:
    """The ``gap`` frame naming events of a job that will never be delivered: what a socket sends
    when it fell behind, and what a job's stored history keeps where events could not be stored
    (under the seq ``to_seq``, so a reader paging by seq passes it in order)."""
    return _encoder.encode({"type": "gap", "job_id": job_id, "from_seq": from_seq, "to_seq": to_seq})


class _GapRange(msgspec.Struct):
    from_seq: int
    to_seq: int


_decode_gap = msgspec.json.Decoder(_GapRange).decode


def decode_gap(payload: bytes) -> tuple[int, int]:
    """The ``(from_seq, to_seq)`` of a frame made by :func:`encode_gap`."""
    found = _decode_gap(payload)
    return found.from_seq, found.to_seq


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


def event_to_builtins(event: msgspec.Struct) -> dict[str, Any]:
    """The JSON form of an event (an :class:`~routilux.bus.events.Event` or ``Gap``) as plain
    Python objects (tests, debugger, history views)."""
    decoded: dict[str, Any] = msgspec.json.decode(_encoder.encode(event))
    return decoded

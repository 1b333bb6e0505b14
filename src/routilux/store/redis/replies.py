"""Redis replies as Routilux's clients receive them: bytes, never ``str``.

redis-py types every reply for any client: ``bytes | str`` (a client may decode responses),
``None`` where an entry may be missing, and both the RESP2 and the RESP3 shape of a stream read.
Every Routilux client is made by :mod:`routilux.store.redis.connection`, which never asks for
decoded responses, and speaks RESP2 (redis-py's default); the store refuses a client that decodes
(:func:`~routilux.store.redis.connection.decodes_responses`). These helpers narrow a reply to
that one shape, once, where it is read, and raise :class:`TypeError` naming what came instead —
a misconfigured client fails loudly at the first reply rather than with an ``AttributeError``
somewhere downstream.
"""

from __future__ import annotations

from typing import TypeAlias

from redis.typing import StreamRangeResponse, XReadResponse

#: One stream entry: its id (``b"<ms>-<n>"``) and its fields.
StreamEntry: TypeAlias = tuple[bytes, dict[bytes, bytes]]


def _unexpected(what: str, value: object) -> TypeError:
    return TypeError(
        f"expected {what} from Redis, got {type(value).__name__}: Routilux's clients must not decode "
        "responses and must speak RESP2 (see routilux.store.redis.connection)"
    )


def as_bytes(value: bytes | str | None) -> bytes:
    """``value``, a reply that is bytes for a client that does not decode responses."""
    if isinstance(value, bytes):
        return value
    raise _unexpected("bytes", value)


def as_text(value: bytes | str | None) -> str:
    """``value``, a bytes reply that holds UTF-8 text (a key, an id, a field), as ``str``."""
    return as_bytes(value).decode()


def stream_entries(reply: StreamRangeResponse | None) -> list[StreamEntry]:
    """The entries of an XRANGE/XREVRANGE reply (or of one stream in an XREAD reply), in order."""
    entries: list[StreamEntry] = []
    for entry_id, fields in reply or ():
        if fields is None:  # only XREADGROUP/XCLAIM report deleted entries, which we never send
            raise _unexpected("a stream entry's fields", fields)
        entries.append((as_bytes(entry_id), {as_bytes(k): as_bytes(v) for k, v in fields.items()}))
    return entries


def stream_reads(reply: XReadResponse | None) -> list[tuple[bytes, list[StreamEntry]]]:
    """An XREAD reply as ``(stream key, entries)`` per stream that had new entries (none after a
    timeout)."""
    if not reply:
        return []
    if isinstance(reply, dict):  # RESP3's shape
        raise _unexpected("a RESP2 list", reply)
    return [(as_bytes(key), stream_entries(entries)) for key, entries in reply]

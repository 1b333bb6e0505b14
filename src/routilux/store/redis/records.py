"""How records look in Redis: msgspec JSON, a job record stored apart from its ``state``, the
index entry of a job, and events as the event bridge reads them.

A stored job record is the record's JSON with an empty state (valid JSON, readable with
redis-cli); the full record is that with the state spliced in before its last brace, so
``list_jobs(with_state=False)`` neither transfers nor decodes the states (most of a record's
bytes).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from routilux.bus.status import TERMINAL_STATUSES
from routilux.store import _codec
from routilux.store.base import CheckpointRecord, FlowRecord, JobRecord, RuntimeRecord, StoredEvent, StoredPost

encode = msgspec.json.encode
decode_job = msgspec.json.Decoder(JobRecord).decode
decode_jobs = msgspec.json.Decoder(list[JobRecord]).decode
decode_flow = msgspec.json.Decoder(FlowRecord).decode
decode_runtime = msgspec.json.Decoder(RuntimeRecord).decode
decode_checkpoint = msgspec.json.Decoder(CheckpointRecord).decode

#: Arguments per job of the upsert script (see ``UPSERT_JOBS`` in :mod:`~routilux.store.redis.scripts`).
UPSERT_ARGS: Final = 5

#: How a stored job record ends: ``state`` is JobRecord's last field and is stored empty, so the
#: full record is ``record[:-3] + state + b"}"`` (the listing script does the same in Lua).
_STATE_TAIL: Final = b'"state":{}}'
if not encode(JobRecord("j", "f", "r", "s", datetime(2000, 1, 1, tzinfo=UTC))).endswith(_STATE_TAIL):
    raise RuntimeError("JobRecord.state must stay its last field: RedisStore splices states into stored records")


def with_state(record: bytes, state: bytes) -> bytes:
    """A stored record (empty state) with ``state`` spliced in: the record's full JSON."""
    return record[:-3] + state + b"}"


def job_args(record: JobRecord, cas: bytes = b"", with_state: bool = True) -> list[Any]:
    """The upsert script's arguments for one job: id, cas, index, record, state (raises if the
    record cannot be encoded)."""
    created = _codec.to_us(record.created_at)
    terminal = record.status in TERMINAL_STATUSES
    ended = str(_codec.to_us(record.completed_at or record.created_at)) if terminal else ""
    index = encode([record.flow_id, record.status, record.runtime_id, str(-created), str(created), ended])
    state = encode(record.state) if with_state else b""
    return [record.job_id, cas, index, encode(msgspec.structs.replace(record, state={})), state]


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class EventHead(msgspec.Struct):
    """The two fields of an event's JSON the store needs (msgspec skips the rest unread)."""

    type: str = ""
    flow_id: str = ""


decode_head = msgspec.json.Decoder(EventHead).decode


def event_type(payload: bytes) -> str:
    try:
        return decode_head(payload).type
    except msgspec.DecodeError:
        return ""


def parse_events(job_id: str, blob: bytes) -> list[StoredEvent]:
    """The events ``READ_EVENTS`` packed into one string (``<seq>:<length>:<payload>``...)."""
    out: list[StoredEvent] = []
    pos, end = 0, len(blob)
    while pos < end:
        colon = blob.index(b":", pos)
        size_end = blob.index(b":", colon + 1)
        start = size_end + 1
        stop = start + int(blob[colon + 1 : size_end])
        payload = blob[start:stop]
        out.append(StoredEvent(job_id=job_id, seq=int(blob[pos:colon]), type=event_type(payload), payload=payload))
        pos = stop
    return out


def posts_after(job_id: str, stored: dict[bytes, bytes], n: int) -> list[StoredPost]:
    """The posts of a job's hash (post number → data) numbered above ``n``, by number."""
    numbered = sorted((int(k), bytes(v)) for k, v in stored.items())
    return [StoredPost(job_id=job_id, n=k, data=data) for k, data in numbered if k > n]


def stream_seq(entry_id: bytes) -> int:
    """The seq of a job's stream entry (its id is ``<seq>-0``)."""
    return int(entry_id.split(b"-", 1)[0])

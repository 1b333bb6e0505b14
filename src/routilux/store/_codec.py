"""Checks and conversions both stores share, so they accept and return exactly the same values.

Datetimes must be timezone-aware; they come back in UTC (same instant, ``tzinfo=UTC``). A naive
datetime is refused when it is handed to the store, not when it is written, because "which zone
was that?" has no good answer later. In SQLite they are stored as integer microseconds since the
Unix epoch: exact, compact, and ordered correctly by an index (ISO text is not: msgspec writes
``…:00Z`` for a whole second and ``…:00.5Z`` otherwise, and ``.`` sorts before ``Z``).
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from routilux.store.base import (
    CheckpointRecord,
    FlowRecord,
    JobQuery,
    JobRecord,
    RuntimeRecord,
    StoredEvent,
    StoredPost,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def utc(value: datetime, what: str) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{what} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (use datetime.now(UTC)); got {value!r}")
    return value if value.tzinfo is UTC else value.astimezone(UTC)


def to_us(value: datetime) -> int:
    return (value - _EPOCH) // _MICROSECOND


def opt_to_us(value: datetime | None) -> int | None:
    return None if value is None else to_us(value)


def from_us(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def opt_from_us(value: int | None) -> datetime | None:
    return None if value is None else from_us(value)


def _plain(value: Any) -> Any:
    # JobStatus is a str enum: store its value, so reads give back a plain string.
    return value.value if isinstance(value, enum.Enum) else value


def check_flow(record: FlowRecord) -> FlowRecord:
    if not isinstance(record, FlowRecord):
        raise TypeError(f"expected a FlowRecord, got {type(record).__name__}")
    return msgspec.structs.replace(
        record,
        created_at=utc(record.created_at, "FlowRecord.created_at"),
        updated_at=utc(record.updated_at, "FlowRecord.updated_at"),
    )


def check_job(record: JobRecord) -> JobRecord:
    if not isinstance(record, JobRecord):
        raise TypeError(f"expected a JobRecord, got {type(record).__name__}")
    if (  # the hot path: already plain and in UTC, nothing to copy
        type(record.status) is str
        and getattr(record.created_at, "tzinfo", None) is UTC
        and (record.started_at is None or record.started_at.tzinfo is UTC)
        and (record.completed_at is None or record.completed_at.tzinfo is UTC)
        and isinstance(record.created_at, datetime)
    ):
        return record
    return msgspec.structs.replace(
        record,
        status=_plain(record.status),
        created_at=utc(record.created_at, "JobRecord.created_at"),
        started_at=None if record.started_at is None else utc(record.started_at, "JobRecord.started_at"),
        completed_at=(
            None if record.completed_at is None else utc(record.completed_at, "JobRecord.completed_at")
        ),
    )


def check_runtime(record: RuntimeRecord) -> RuntimeRecord:
    if not isinstance(record, RuntimeRecord):
        raise TypeError(f"expected a RuntimeRecord, got {type(record).__name__}")
    return msgspec.structs.replace(record, created_at=utc(record.created_at, "RuntimeRecord.created_at"))


def check_event(event: StoredEvent) -> StoredEvent:
    if not isinstance(event, StoredEvent):
        raise TypeError(f"expected a StoredEvent, got {type(event).__name__}")
    if not isinstance(event.seq, int) or isinstance(event.seq, bool):
        raise TypeError(f"StoredEvent.seq must be an int, not {type(event.seq).__name__}")
    if not isinstance(event.payload, bytes):
        raise TypeError(f"StoredEvent.payload must be bytes, not {type(event.payload).__name__}")
    return event


def _whole(value: Any, what: str, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{what} must be >= {minimum} (got {value})")


def _blob(value: Any, what: str) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(f"{what} must be bytes, not {type(value).__name__}")
    return bytes(value)


def check_checkpoint(record: CheckpointRecord) -> CheckpointRecord:
    if not isinstance(record, CheckpointRecord):
        raise TypeError(f"expected a CheckpointRecord, got {type(record).__name__}")
    _whole(record.posts, "CheckpointRecord.posts", 0)
    return msgspec.structs.replace(
        record,
        data=_blob(record.data, "CheckpointRecord.data"),
        taken_at=utc(record.taken_at, "CheckpointRecord.taken_at"),
    )


def check_post(post: StoredPost) -> StoredPost:
    if not isinstance(post, StoredPost):
        raise TypeError(f"expected a StoredPost, got {type(post).__name__}")
    _whole(post.n, "StoredPost.n", 1)
    return msgspec.structs.replace(post, data=_blob(post.data, "StoredPost.data"))


def check_query(query: JobQuery) -> JobQuery:
    if query.limit < 0 or query.offset < 0:
        raise ValueError(f"limit and offset must not be negative (got {query.limit}, {query.offset})")
    return msgspec.structs.replace(query, status=_plain(query.status))


def check_limit(limit: int) -> None:
    if limit < 0:
        raise ValueError(f"limit must not be negative (got {limit})")


def check_prune(keep: int | None, ended_before: datetime | None, limit: int) -> datetime | None:
    """Refuse prune arguments that would delete by accident (a negative ``keep`` or ``limit``);
    returns ``ended_before`` in UTC."""
    if keep is not None and (not isinstance(keep, int) or isinstance(keep, bool) or keep < 0):
        raise ValueError(f"keep must be None or a whole number >= 0 (got {keep!r})")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ValueError(f"limit must be a whole number >= 1 (got {limit!r})")
    return None if ended_before is None else utc(ended_before, "ended_before")

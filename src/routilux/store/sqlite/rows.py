"""How records map to SQLite rows, and back: the column lists and upserts every query shares.

Documents, errors and states are stored as JSON text (lossless, readable with the ``sqlite3``
shell); datetimes as integer microseconds since the epoch (see :mod:`routilux.store._codec`).
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from routilux.store import _codec
from routilux.store.base import FlowRecord, JobRecord

JOB_COLUMNS: Final = (
    "job_id, flow_id, runtime_id, status, created_at, started_at, completed_at, error, timeout, "
    "complete_when_idle, state"
)
#: The job columns with an empty state: what ``list_jobs(with_state=False)`` reads.
JOB_COLUMNS_NO_STATE: Final = JOB_COLUMNS.replace("complete_when_idle, state", "complete_when_idle, '{}'")
FLOW_SELECT: Final = "SELECT flow_id, document, revision, created_at, updated_at, source FROM flows"

UPSERT_JOB: Final = f"""
    INSERT INTO jobs ({JOB_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (job_id) DO UPDATE SET
        flow_id = excluded.flow_id, runtime_id = excluded.runtime_id, status = excluded.status,
        created_at = excluded.created_at, started_at = excluded.started_at,
        completed_at = excluded.completed_at, error = excluded.error, timeout = excluded.timeout,
        complete_when_idle = excluded.complete_when_idle, state = excluded.state
"""
UPSERT_FLOW: Final = """
    INSERT INTO flows (flow_id, document, revision, created_at, updated_at, source)
    VALUES (?, ?, ?, ?, ?, ?)
    ON CONFLICT (flow_id) DO UPDATE SET
        document = excluded.document, revision = excluded.revision,
        created_at = excluded.created_at, updated_at = excluded.updated_at, source = excluded.source
"""
UPSERT_RUNTIME: Final = """
    INSERT INTO runtimes (runtime_id, thread_pool_size, is_default, created_at, worker_group)
    VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (runtime_id) DO UPDATE SET
        thread_pool_size = excluded.thread_pool_size, is_default = excluded.is_default,
        created_at = excluded.created_at, worker_group = excluded.worker_group
"""
INSERT_EVENT: Final = "INSERT OR REPLACE INTO events (job_id, seq, type, payload) VALUES (?, ?, ?, ?)"


def to_json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def from_json(text: str) -> Any:
    return msgspec.json.decode(text)


def job_row(r: JobRecord) -> tuple[Any, ...]:
    """The values of :data:`UPSERT_JOB` for ``r`` (raises if ``r`` cannot be encoded)."""
    return (
        r.job_id,
        r.flow_id,
        r.runtime_id,
        r.status,
        _codec.to_us(r.created_at),
        _codec.opt_to_us(r.started_at),
        _codec.opt_to_us(r.completed_at),
        None if r.error is None else to_json(r.error),
        r.timeout,
        1 if r.complete_when_idle else 0,
        to_json(r.state),
    )


def job_from_row(row: tuple[Any, ...]) -> JobRecord:
    job_id, flow_id, runtime_id, status, created, started, completed, error, timeout, cwi, state = row
    return JobRecord(
        job_id=job_id,
        flow_id=flow_id,
        runtime_id=runtime_id,
        status=status,
        created_at=_codec.from_us(created),
        started_at=_codec.opt_from_us(started),
        completed_at=_codec.opt_from_us(completed),
        error=None if error is None else from_json(error),
        timeout=timeout,
        complete_when_idle=bool(cwi),
        state=from_json(state),
    )


def flow_row(r: FlowRecord) -> tuple[Any, ...]:
    """The values of :data:`UPSERT_FLOW` for ``r``."""
    return r.flow_id, to_json(r.document), r.revision, _codec.to_us(r.created_at), _codec.to_us(r.updated_at), r.source


def flow_from_row(row: tuple[Any, ...]) -> FlowRecord:
    flow_id, document, revision, created, updated, source = row
    return FlowRecord(
        flow_id=flow_id,
        document=from_json(document),
        revision=revision,
        created_at=_codec.from_us(created),
        updated_at=_codec.from_us(updated),
        source=source,
    )

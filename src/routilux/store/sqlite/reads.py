"""The SQLite reads: plain functions of a read connection, run in a worker thread.

They run on read-only connections of their own (WAL lets them proceed while the writer writes),
or on the writer's connection for ``:memory:``, and see what has been committed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Mapping
from typing import Any

import msgspec

from routilux.store import _codec
from routilux.store.base import (
    CheckpointRecord,
    FlowRecord,
    JobQuery,
    JobRecord,
    RuntimeRecord,
    StoreCounts,
    StoredEvent,
    StoredPost,
)
from routilux.store.sqlite.rows import FLOW_SELECT, JOB_COLUMNS, JOB_COLUMNS_NO_STATE, flow_from_row, job_from_row
from routilux.store.sqlite.schema import TERMINAL_SQL


def get_flow(conn: sqlite3.Connection, flow_id: str) -> FlowRecord | None:
    row = conn.execute(f"{FLOW_SELECT} WHERE flow_id = ?", (flow_id,)).fetchone()
    return None if row is None else flow_from_row(row)


def list_flows(conn: sqlite3.Connection) -> list[FlowRecord]:
    return [flow_from_row(row) for row in conn.execute(f"{FLOW_SELECT} ORDER BY flow_id")]


def get_job(conn: sqlite3.Connection, job_id: str) -> JobRecord | None:
    row = conn.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    return None if row is None else job_from_row(row)


def list_jobs(conn: sqlite3.Connection, query: JobQuery) -> tuple[list[JobRecord], int]:
    where: list[str] = []
    params: list[Any] = []
    for column in ("flow_id", "status", "runtime_id"):
        value = getattr(query, column)
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if query.exclude:
        where.append("job_id NOT IN (SELECT value FROM json_each(?))")
        params.append(msgspec.json.encode(sorted(query.exclude)).decode())
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    conn.execute("BEGIN")  # one snapshot for the page and the total
    columns = JOB_COLUMNS if query.with_state else JOB_COLUMNS_NO_STATE
    page = conn.execute(
        f"SELECT {columns} FROM jobs{clause} ORDER BY created_at DESC, job_id LIMIT ? OFFSET ?",
        (*params, query.limit, query.offset),
    ).fetchall()
    total: int = conn.execute(f"SELECT COUNT(*) FROM jobs{clause}", params).fetchone()[0]
    conn.execute("COMMIT")
    return [job_from_row(row) for row in page], total


def counts(conn: sqlite3.Connection) -> StoreCounts:
    flows, jobs = conn.execute(
        "SELECT (SELECT COUNT(*) FROM flows), (SELECT COUNT(*) FROM jobs)"
    ).fetchone()
    return StoreCounts(flow_count=flows, job_count=jobs)


def list_runtimes(conn: sqlite3.Connection) -> list[RuntimeRecord]:
    return [
        RuntimeRecord(
            runtime_id=runtime_id,
            thread_pool_size=size,
            is_default=bool(is_default),
            created_at=_codec.from_us(created),
            worker_group=group,
        )
        for runtime_id, size, is_default, created, group in conn.execute(
            "SELECT runtime_id, thread_pool_size, is_default, created_at, worker_group FROM runtimes "
            "ORDER BY created_at, runtime_id"
        )
    ]


def events_since(conn: sqlite3.Connection, job_id: str, since: int, limit: int) -> list[StoredEvent]:
    return [
        StoredEvent(job_id=job_id, seq=seq, type=type_, payload=payload)
        for seq, type_, payload in conn.execute(
            "SELECT seq, type, payload FROM events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (job_id, since, limit),
        )
    ]


def last_event_seqs(conn: sqlite3.Connection, job_ids: Collection[str]) -> dict[str, int]:
    """One index seek per job (``MAX`` over the primary key), all in one thread hop and one read
    transaction."""
    found: dict[str, int] = {}
    conn.execute("BEGIN")
    for job_id in job_ids:
        seq = conn.execute("SELECT MAX(seq) FROM events WHERE job_id = ?", (job_id,)).fetchone()[0]
        if seq is not None:
            found[job_id] = seq
    conn.execute("COMMIT")
    return found


def get_job_metrics(conn: sqlite3.Connection, job_id: str) -> bytes | None:
    row = conn.execute("SELECT data FROM job_metrics WHERE job_id = ?", (job_id,)).fetchone()
    return bytes(row[0]) if row is not None else None


def all_job_metrics(conn: sqlite3.Connection) -> list[bytes]:
    return [bytes(row[0]) for row in conn.execute("SELECT data FROM job_metrics ORDER BY stored")]


def _checkpoint(job_id: str, posts: int, taken_at: int, data: bytes) -> CheckpointRecord:
    return CheckpointRecord(job_id=job_id, posts=posts, data=bytes(data), taken_at=_codec.from_us(taken_at))


def get_checkpoint(conn: sqlite3.Connection, job_id: str) -> CheckpointRecord | None:
    row = conn.execute("SELECT job_id, posts, taken_at, data FROM checkpoints WHERE job_id = ?", (job_id,)).fetchone()
    return None if row is None else _checkpoint(*row)


def list_checkpoints(conn: sqlite3.Connection) -> list[CheckpointRecord]:
    return [
        _checkpoint(*row)
        for row in conn.execute(
            "SELECT c.job_id, c.posts, c.taken_at, c.data FROM checkpoints AS c JOIN jobs AS j ON j.job_id = c.job_id"
            f" WHERE j.status NOT IN ({TERMINAL_SQL}) ORDER BY j.created_at, j.job_id"
        )
    ]


def posts_after(conn: sqlite3.Connection, job_id: str, n: int) -> list[StoredPost]:
    return [
        StoredPost(job_id=job_id, n=k, data=bytes(data))
        for k, data in conn.execute("SELECT n, data FROM posts WHERE job_id = ? AND n > ? ORDER BY n", (job_id, n))
    ]


def posts_after_many(conn: sqlite3.Connection, after: Mapping[str, int]) -> dict[str, list[StoredPost]]:
    """One range scan per job, in one snapshot (the posts of one job never straddle a commit)."""
    conn.execute("BEGIN")
    found = {job_id: posts for job_id, n in after.items() if (posts := posts_after(conn, job_id, n))}
    conn.execute("COMMIT")
    return found

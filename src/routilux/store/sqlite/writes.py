"""Everything the SQLite writer runs on its connection, in a worker thread: one batch in one
transaction, and the awaited operations (``put_flow``, ``prune_jobs``...) inside it.

A batch is ONE ``BEGIN IMMEDIATE`` transaction: it holds SQLite's write lock from its first
statement to ``COMMIT``, so an operation's check (a flow's revision) still holds when it writes,
against other connections and processes too. Each operation runs in a savepoint, so one that
fails (a revision conflict, an unencodable document) is rolled back alone and its caller gets
the error, while the rest of the batch commits.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Collection
from datetime import datetime
from typing import Final

import msgspec

from routilux.store import _codec
from routilux.store.base import CheckpointRecord, FlowRecord, JobRecord, RuntimeRecord, StoredPost
from routilux.store.batch_writer import Op, Written
from routilux.store.errors import FlowRevisionConflict
from routilux.store.segments import NewestEvents
from routilux.store.sqlite.errors import sqlite_error
from routilux.store.sqlite.rows import (
    INSERT_EVENT,
    UPSERT_FLOW,
    UPSERT_JOB,
    UPSERT_RUNTIME,
    flow_row,
    job_row,
    to_json,
)
from routilux.store.sqlite.schema import ENDED, SCHEMA_VERSION, TERMINAL_SQL

log = logging.getLogger("routilux.store")

PRUNE_EVENTS: Final = """
    DELETE FROM events WHERE job_id = ?1
    AND seq <= (SELECT MAX(seq) FROM events WHERE job_id = ?1) - ?2
"""
# Pruning reads the partial index ``jobs_finished`` (INDEXED BY: without ANALYZE statistics the
# planner would pick jobs_by_status and sort every finished job).
_FINISHED: Final = f"FROM jobs INDEXED BY jobs_finished WHERE status IN ({TERMINAL_SQL})"
PRUNE_BOUNDARY: Final = f"SELECT {ENDED}, job_id {_FINISHED} ORDER BY {ENDED} DESC, job_id DESC LIMIT 1 OFFSET ?"
PRUNE_UP_TO: Final = f"""SELECT job_id {_FINISHED}
    AND ({ENDED} < ?1 OR ({ENDED} = ?1 AND job_id <= ?2)) ORDER BY {ENDED}, job_id LIMIT ?3"""
PRUNE_BEFORE: Final = f"SELECT job_id {_FINISHED} AND {ENDED} < ? ORDER BY {ENDED}, job_id LIMIT ?"


def write_batch(
    conn: sqlite3.Connection, batch: list[NewestEvents | Op], events_per_job: int, location: str
) -> Written:
    """Write ``batch`` in one transaction; each job keeps its newest ``events_per_job`` events."""
    rows = lost = 0
    touched: dict[str, int] = {}  # job -> highest seq written in this batch
    conn.execute("BEGIN IMMEDIATE")
    try:
        for item in batch:
            if isinstance(item, Op):
                rows += 1
                if item.fn is not None:
                    _run_op(conn, item, location)
                continue
            job_rows = []
            for record in item.jobs.values():
                try:
                    job_rows.append(job_row(record))
                except (TypeError, ValueError, msgspec.EncodeError) as exc:
                    lost += 1
                    log.error("%s: job %s was not stored: %s", location, record.job_id, exc)
            conn.executemany(UPSERT_JOB, job_rows)
            rows += len(job_rows)
            for job_id, events in item.events.items():
                conn.executemany(INSERT_EVENT, [(e.job_id, e.seq, e.type, e.payload) for e in events])
                touched[job_id] = max(touched.get(job_id, 0), max(e.seq for e in events))
                rows += len(events)
        for job_id, highest in touched.items():
            # seqs run 1, 2, 3...: a job can only be over the bound once its seq is
            if highest > events_per_job:
                conn.execute(PRUNE_EVENTS, (job_id, events_per_job))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return Written(rows, lost)


def _run_op(conn: sqlite3.Connection, op: Op, location: str) -> None:
    """Run ``op`` in a savepoint: its failure is its caller's, not the batch's."""
    assert op.fn is not None
    conn.execute("SAVEPOINT op")
    try:
        op.result = op.fn(conn, *op.args)
    except Exception as exc:  # noqa: BLE001 - the op's caller gets it
        conn.execute("ROLLBACK TO op")
        op.error = sqlite_error(location, "a write failed", exc) if isinstance(exc, sqlite3.Error) else exc
    conn.execute("RELEASE op")


# -- operations: ``fn(conn, *args)`` of an Op ----------------------------------------------------
def _check_flow_revision(conn: sqlite3.Connection, flow_id: str, expected: int | None, location: str) -> None:
    """Raise :class:`FlowRevisionConflict` unless the stored flow matches ``expected``. Runs in
    the writer's ``BEGIN IMMEDIATE`` transaction, so the answer still holds when the op writes."""
    if expected is None:
        return
    row = conn.execute("SELECT revision FROM flows WHERE flow_id = ?", (flow_id,)).fetchone()
    FlowRevisionConflict.check(flow_id, expected, None if row is None else row[0], location=location)


def put_flow(conn: sqlite3.Connection, r: FlowRecord, expected: int | None, location: str) -> None:
    _check_flow_revision(conn, r.flow_id, expected, location)
    conn.execute(UPSERT_FLOW, flow_row(r))


def delete_flow(conn: sqlite3.Connection, flow_id: str, expected: int | None, location: str) -> bool:
    _check_flow_revision(conn, flow_id, expected, location)
    return conn.execute("DELETE FROM flows WHERE flow_id = ?", (flow_id,)).rowcount > 0


def put_job(conn: sqlite3.Connection, record: JobRecord) -> None:
    conn.execute(UPSERT_JOB, job_row(record))


def delete_jobs(conn: sqlite3.Connection, job_ids: list[str]) -> int:
    params = [(job_id,) for job_id in job_ids]
    conn.executemany("DELETE FROM events WHERE job_id = ?", params)
    conn.executemany("DELETE FROM job_metrics WHERE job_id = ?", params)
    conn.executemany("DELETE FROM checkpoints WHERE job_id = ?", params)
    conn.executemany("DELETE FROM posts WHERE job_id = ?", params)
    return conn.executemany("DELETE FROM jobs WHERE job_id = ?", params).rowcount


def prune_jobs(conn: sqlite3.Connection, keep: int | None, ended_before: int | None, limit: int) -> list[str]:
    chosen: dict[str, None] = {}  # ordered, without duplicates
    if keep is not None:
        # The newest finished job beyond ``keep``: it and everything older goes.
        boundary = conn.execute(PRUNE_BOUNDARY, (keep,)).fetchone()
        if boundary is not None:
            chosen.update((row[0], None) for row in conn.execute(PRUNE_UP_TO, (*boundary, limit)))
    if ended_before is not None and len(chosen) < limit:
        # Both sets start at the oldest finished job, so their union is again the oldest ones.
        chosen.update((row[0], None) for row in conn.execute(PRUNE_BEFORE, (ended_before, limit)))
    ids = list(chosen)[:limit]
    delete_jobs(conn, ids)
    return ids


def mark_interrupted(conn: sqlite3.Connection, reason: str, now: datetime, keep: Collection[str]) -> list[str]:
    """The UPDATE fires the ``job_ends_on_update`` trigger: the jobs lose checkpoints and posts."""
    ids = [
        row[0]
        for row in conn.execute(
            f"SELECT job_id FROM jobs WHERE status NOT IN ({TERMINAL_SQL}) ORDER BY created_at, job_id"
        )
        if row[0] not in keep
    ]
    error = to_json({"type": "interrupted", "message": reason})
    conn.executemany(
        "UPDATE jobs SET status = 'failed', error = ?, completed_at = ? WHERE job_id = ?",
        [(error, _codec.to_us(now), job_id) for job_id in ids],
    )
    return ids


def probe(conn: sqlite3.Connection) -> None:
    """The smallest real write: the database header's ``user_version``, set to what it is. It
    appends a page to the write-ahead log, so it fails as any write would (disk full or
    read-only) and succeeds once writes work again."""
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def put_runtime(conn: sqlite3.Connection, r: RuntimeRecord) -> None:
    row = (r.runtime_id, r.thread_pool_size, 1 if r.is_default else 0, _codec.to_us(r.created_at), r.worker_group)
    conn.execute(UPSERT_RUNTIME, row)


def put_job_metrics(conn: sqlite3.Connection, rows: list[tuple[str, str, bytes]]) -> None:
    conn.executemany("DELETE FROM job_metrics WHERE job_id = ?", [(row[0],) for row in rows])
    conn.executemany("INSERT INTO job_metrics (job_id, flow_id, data) VALUES (?, ?, ?)", rows)


# Dropped when the job's record is terminal: checked in the statement itself, inside the writer's
# transaction, so no terminal record can be written in between.
_UNLESS_ENDED: Final = f"WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE job_id = ?1 AND status IN ({TERMINAL_SQL}))"
PUT_CHECKPOINT: Final = (
    f"INSERT OR REPLACE INTO checkpoints (job_id, posts, taken_at, data) SELECT ?1, ?2, ?3, ?4 {_UNLESS_ENDED}"
)
PUT_POST: Final = f"INSERT OR REPLACE INTO posts (job_id, n, data) SELECT ?1, ?2, ?3 {_UNLESS_ENDED}"


def put_checkpoint(conn: sqlite3.Connection, r: CheckpointRecord) -> None:
    conn.execute(PUT_CHECKPOINT, (r.job_id, r.posts, _codec.to_us(r.taken_at), r.data))


def put_job_with_checkpoint(conn: sqlite3.Connection, record: JobRecord, checkpoint: CheckpointRecord) -> None:
    """One op (one savepoint): the job's record and its checkpoint stand or fall together."""
    put_job(conn, record)
    put_checkpoint(conn, checkpoint)


def append_post(conn: sqlite3.Connection, post: StoredPost) -> None:
    conn.execute(PUT_POST, (post.job_id, post.n, post.data))

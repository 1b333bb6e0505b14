"""The SQLite schema: its tables and indexes, and the migrations from every older version.

The schema version is ``PRAGMA user_version``. A database older than :data:`SCHEMA_VERSION` is
migrated step by step in one ``BEGIN IMMEDIATE`` transaction when the store opens (so two
processes never migrate at once, and a failed migration leaves the file as it was); a newer one
is refused, since this code would misread it.

Why a job's checkpoint and posts are deleted by triggers (version 5)
    "A job that ends loses its checkpoint and posts" must hold however the record becomes
    terminal: a batch of coalesced upserts (``record_job``), ``put_job``, ``mark_interrupted``'s
    UPDATE, and any write added later. Triggers on ``jobs`` (AFTER INSERT, AFTER UPDATE OF
    status, each WHEN the new status is terminal) run inside the very statement that writes the
    record, so the deletion is in the same transaction by construction, and no write path can
    forget it; on the hot path (a running job's state update) they cost one WHEN test per row.
    Doing it in the writes instead would need the same rule repeated in the batch upsert, put_job
    and mark_interrupted. ``delete_jobs`` (and ``prune_jobs``, through it) delete checkpoints and
    posts explicitly, like events and metrics, so ids without a job record are cleaned up too.
    Like the ``jobs_finished`` index, the triggers spell the terminal statuses as they were when
    the migration ran: a change of :data:`TERMINAL_STATUSES` needs a migration that recreates
    them.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from routilux.bus.status import TERMINAL_STATUSES
from routilux.store.errors import StoreError

#: The schema version this code writes (``PRAGMA user_version``).
SCHEMA_VERSION: Final[int] = 5

#: The terminal statuses as an SQL list, for ``status IN (...)``.
TERMINAL_SQL: Final = ", ".join(f"'{status}'" for status in sorted(TERMINAL_STATUSES))
#: When a finished job ended, as the ``jobs_finished`` index orders it (queries must spell it alike).
ENDED: Final = "COALESCE(completed_at, created_at)"

#: ``MIGRATIONS[n]`` takes a database from version ``n`` to ``n + 1``; a future change appends.
MIGRATIONS: Final[list[list[str]]] = [
    [
        """CREATE TABLE IF NOT EXISTS flows (
            flow_id    TEXT PRIMARY KEY,
            document   TEXT NOT NULL,
            revision   INTEGER NOT NULL,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            source     TEXT
        )""",
        """CREATE TABLE IF NOT EXISTS jobs (
            job_id             TEXT PRIMARY KEY,
            flow_id            TEXT NOT NULL,
            runtime_id         TEXT NOT NULL,
            status             TEXT NOT NULL,
            created_at         INTEGER NOT NULL,
            started_at         INTEGER,
            completed_at       INTEGER,
            error              TEXT,
            timeout            REAL,
            complete_when_idle INTEGER NOT NULL,
            state              TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS jobs_newest ON jobs (created_at DESC, job_id)",
        "CREATE INDEX IF NOT EXISTS jobs_by_flow ON jobs (flow_id, created_at DESC, job_id)",
        "CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, created_at DESC, job_id)",
        "CREATE INDEX IF NOT EXISTS jobs_by_runtime ON jobs (runtime_id, created_at DESC, job_id)",
        """CREATE TABLE IF NOT EXISTS runtimes (
            runtime_id       TEXT PRIMARY KEY,
            thread_pool_size INTEGER NOT NULL,
            is_default       INTEGER NOT NULL,
            created_at       INTEGER NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS events (
            job_id  TEXT NOT NULL,
            seq     INTEGER NOT NULL,
            type    TEXT NOT NULL,
            payload BLOB NOT NULL,
            PRIMARY KEY (job_id, seq)
        ) WITHOUT ROWID""",
    ],
    [
        # 1 -> 2: finished jobs in the order they ended, so pruning reads only what it deletes
        # (plus the ``keep`` newest entries of this index) instead of every job.
        f"""CREATE INDEX IF NOT EXISTS jobs_finished ON jobs ({ENDED}, job_id)
            WHERE status IN ({TERMINAL_SQL})""",
    ],
    [
        # 2 -> 3: what the metrics aggregator keeps of each finished job (deleted with the job).
        """CREATE TABLE IF NOT EXISTS job_metrics (
            stored  INTEGER PRIMARY KEY AUTOINCREMENT,
            job_id  TEXT NOT NULL UNIQUE,
            flow_id TEXT NOT NULL,
            data    BLOB NOT NULL
        )""",
    ],
    [
        # 3 -> 4: the worker group a runtime's jobs are placed on in a cluster (NULL: any).
        "ALTER TABLE runtimes ADD COLUMN worker_group TEXT",
    ],
    [
        # 4 -> 5: what a job needs to outlive the process: its last checkpoint (one row per job,
        # a rowid table: the blob can be large, and WITHOUT ROWID suits small rows) and its posts
        # (WITHOUT ROWID, clustered by (job_id, n) like events: posts_after is one range scan).
        """CREATE TABLE IF NOT EXISTS checkpoints (
            job_id   TEXT PRIMARY KEY,
            posts    INTEGER NOT NULL,
            taken_at INTEGER NOT NULL,
            data     BLOB NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS posts (
            job_id TEXT NOT NULL,
            n      INTEGER NOT NULL,
            data   BLOB NOT NULL,
            PRIMARY KEY (job_id, n)
        ) WITHOUT ROWID""",
        # A job that ends loses both, in the statement that ends it (see the module docstring).
        f"""CREATE TRIGGER IF NOT EXISTS job_ends_on_insert AFTER INSERT ON jobs
            WHEN NEW.status IN ({TERMINAL_SQL})
            BEGIN
                DELETE FROM checkpoints WHERE job_id = NEW.job_id;
                DELETE FROM posts WHERE job_id = NEW.job_id;
            END""",
        f"""CREATE TRIGGER IF NOT EXISTS job_ends_on_update AFTER UPDATE OF status ON jobs
            WHEN NEW.status IN ({TERMINAL_SQL})
            BEGIN
                DELETE FROM checkpoints WHERE job_id = NEW.job_id;
                DELETE FROM posts WHERE job_id = NEW.job_id;
            END""",
    ],
]
assert len(MIGRATIONS) == SCHEMA_VERSION


def migrate(conn: sqlite3.Connection, location: str) -> None:
    """Bring the database on ``conn`` to :data:`SCHEMA_VERSION`, or refuse a newer one."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{location} has schema version {version}, but this Routilux only knows up to "
            f"{SCHEMA_VERSION}; upgrade Routilux or use another database file",
            location=location,
        )
    if version == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for step in MIGRATIONS[version:]:
            for statement in step:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise

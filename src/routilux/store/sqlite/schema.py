"""The SQLite schema: its tables and indexes, and the migrations from every older version.

The schema version is ``PRAGMA user_version``. A database older than :data:`SCHEMA_VERSION` is
migrated step by step in one ``BEGIN IMMEDIATE`` transaction when the store opens (so two
processes never migrate at once, and a failed migration leaves the file as it was); a newer one
is refused, since this code would misread it.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from routilux.bus.status import TERMINAL_STATUSES
from routilux.store.errors import StoreError

#: The schema version this code writes (``PRAGMA user_version``).
SCHEMA_VERSION: Final[int] = 4

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

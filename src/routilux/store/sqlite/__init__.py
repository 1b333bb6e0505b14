"""The default store: one SQLite file (or ``:memory:``), written by a single batching writer.

How writes flow
    Every write goes through the store's :class:`~routilux.store.batch_writer.BatchWriter`:
    fire-and-forget writes are coalesced (``record_job`` keeps only the latest record per
    ``job_id``, ``record_events`` per job only the newest ``events_per_job`` events), and the
    writer takes up to ``batch_max`` rows — operations and records alike — off the front of the
    queue and writes them in ONE transaction (:mod:`~routilux.store.sqlite.writes`) in a worker
    thread (``anyio.to_thread.run_sync`` with a dedicated ``CapacityLimiter(1)``), so the event
    loop never waits on the disk. An awaited operation returns once the transaction holding it
    commits; ``flush`` returns once everything enqueued before it has committed. Backlog bounds,
    ``StoreOverloaded`` and failed batches are the writer's (see its module).

Reads (:mod:`~routilux.store.sqlite.reads`) run in worker threads too, on their own read-only
connections (WAL lets them proceed while the writer writes). A ``:memory:`` database exists per
connection, so there the reads share the writer's single connection and its
``CapacityLimiter(1)``. Reads see what has been committed: after ``record_*``, ``await
store.flush()`` before reading it back.

Ownership: open and close from the same task (``async with SQLiteStore(path) as store:``; see
:mod:`routilux.store.batched`). Closing waits for reads in flight before the connections close.

One process per store
    See :mod:`routilux.store.single_process`: :meth:`SQLiteStore.open` locks ``<db>.lock`` (or,
    for ``:memory:`` in a server's worker, a lock per server) before it touches the database.

Modules: :mod:`~routilux.store.sqlite.schema` (tables, migrations), :mod:`~routilux.store.sqlite.rows`
(records as rows), :mod:`~routilux.store.sqlite.writes`, :mod:`~routilux.store.sqlite.reads`,
:mod:`~routilux.store.sqlite.errors` and :mod:`~routilux.store.sqlite.store` (the class).
"""

from __future__ import annotations

from routilux.store.sqlite.schema import SCHEMA_VERSION
from routilux.store.sqlite.store import SQLiteStore

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

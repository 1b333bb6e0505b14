"""Persistence: flows, job history, runtimes and each job's recent events, behind one interface.

``open_store`` picks the implementation from a URL or path (the value of ``ROUTILUX_DB``); the
store it returns is not open yet — hold it with ``async with open_store(url) as store:``.
"""

from __future__ import annotations

from routilux.store.base import (
    TERMINAL_STATUSES,
    FlowRecord,
    JobQuery,
    JobRecord,
    RuntimeRecord,
    Store,
    StoreCounts,
    StoredEvent,
)
from routilux.store.errors import StoreClosedError, StoreError, StoreInUseError, StoreOverloaded
from routilux.store.memory import MemoryStore
from routilux.store.sqlite import SQLiteStore, StoreStats

__all__ = [
    "TERMINAL_STATUSES",
    "FlowRecord",
    "JobQuery",
    "JobRecord",
    "MemoryStore",
    "RuntimeRecord",
    "SQLiteStore",
    "Store",
    "StoreClosedError",
    "StoreCounts",
    "StoreError",
    "StoreInUseError",
    "StoreOverloaded",
    "StoreStats",
    "StoredEvent",
    "open_store",
]

MEMORY_URL = "memory://"


def open_store(url_or_path: str, *, events_per_job: int = 10_000) -> MemoryStore | SQLiteStore:
    """The store named by ``url_or_path``, not yet opened.

    ``"memory://"`` is a :class:`MemoryStore` (dicts, nothing on disk); ``":memory:"`` is a
    :class:`SQLiteStore` on an in-memory SQLite database (the real code path, nothing on disk);
    anything else is the path of a SQLite file, created if missing (its directory must exist).
    """
    if not url_or_path:
        raise ValueError("a store needs a path, ':memory:' or 'memory://'")
    if url_or_path == MEMORY_URL:
        return MemoryStore(events_per_job=events_per_job)
    return SQLiteStore(url_or_path, events_per_job=events_per_job)

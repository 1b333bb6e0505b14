"""Persistence: flows, job history, runtimes and each job's recent events, behind one interface.

``open_store`` picks the implementation from a URL or path (the value of ``ROUTILUX_DB``); the
store it returns is not open yet — hold it with ``async with open_store(url) as store:``.
``RedisStore`` is imported on first use, so a single server never imports a Redis client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from routilux.bus.status import TERMINAL_STATUSES
from routilux.store.base import (
    CheckpointRecord,
    FlowRecord,
    JobQuery,
    JobRecord,
    RuntimeRecord,
    Store,
    StoreCounts,
    StoredEvent,
    StoredPost,
)
from routilux.store.batch_writer import StoreStats
from routilux.store.errors import (
    FlowRevisionConflict,
    StoreClosedError,
    StoreError,
    StoreInUseError,
    StoreOverloaded,
)
from routilux.store.memory import MemoryStore
from routilux.store.sqlite import SQLiteStore
from routilux.store.sqlite.store import Synchronous

if TYPE_CHECKING:
    from routilux.store.redis import RedisStore

__all__ = [
    "TERMINAL_STATUSES",
    "CheckpointRecord",
    "FlowRecord",
    "FlowRevisionConflict",
    "JobQuery",
    "JobRecord",
    "MemoryStore",
    "RedisStore",
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
    "StoredPost",
    "open_store",
]

MEMORY_URL = "memory://"
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def __getattr__(name: str) -> Any:
    if name == "RedisStore":  # imported on first use: redis is only needed by a cluster
        from routilux.store.redis import RedisStore

        return RedisStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_store(
    url_or_path: str, *, events_per_job: int = 10_000, synchronous: Synchronous = "FULL"
) -> MemoryStore | SQLiteStore | RedisStore:
    """The store named by ``url_or_path``, not yet opened.

    ``"memory://"`` is a :class:`MemoryStore` (dicts, nothing on disk); ``":memory:"`` is a
    :class:`SQLiteStore` on an in-memory SQLite database (the real code path, nothing on disk);
    a ``redis://``, ``rediss://`` or ``unix://`` URL is a :class:`RedisStore` shared by every
    process that names it; anything else is the path of a SQLite file, created if missing (its
    directory must exist). ``synchronous`` is a SQLite store's durability level (see
    :class:`SQLiteStore`).
    """
    if not url_or_path:
        raise ValueError("a store needs a path, ':memory:' or 'memory://'")
    if url_or_path == MEMORY_URL:
        return MemoryStore(events_per_job=events_per_job)
    if url_or_path.startswith(REDIS_SCHEMES):
        from routilux.store.redis import RedisStore

        return RedisStore(url_or_path, events_per_job=events_per_job)
    return SQLiteStore(url_or_path, events_per_job=events_per_job, synchronous=synchronous)

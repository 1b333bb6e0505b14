"""Helpers for the store suite: build a store of a given kind, and hold it open in one task.

A store's writer task lives in a task group that ``open`` enters and ``close`` exits, so both must
run in one task. pytest-asyncio runs a fixture's setup and teardown in different tasks, so
:func:`held` hands the store to a small owner task that does ``async with store:`` and waits.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

from routilux.store import FlowRecord, JobRecord, MemoryStore, SQLiteStore, StoredEvent
from routilux.store.redis import RedisStore

KINDS = ["memory", "sqlite-file", "sqlite-memory", "redis"]

#: The URL of the session's redis-server: conftest's ``kind`` fixture sets it before a "redis"
#: test runs (so only a run that has such tests starts the server).
redis_url: str | None = None
_REDIS_OPTIONS = frozenset({"events_per_job", "batch_max", "max_pending_events", "node_id"})


def build(kind: str, tmp_path: Path, **options: Any) -> MemoryStore | SQLiteStore | RedisStore:
    if kind == "memory":
        return MemoryStore(**{k: v for k, v in options.items() if k == "events_per_job"})
    if kind == "sqlite-file":
        return SQLiteStore(tmp_path / "x.db", **options)
    if kind == "redis":
        return build_redis(**{k: v for k, v in options.items() if k in _REDIS_OPTIONS})
    return SQLiteStore(":memory:", **options)


def build_redis(**options: Any) -> RedisStore:
    """A store on the session's redis-server, in a namespace (key prefix) of its own: each test
    starts from an empty store without flushing what another test may still read."""
    if redis_url is None:
        raise RuntimeError("no redis-server: request the `redis_server` fixture first")
    return RedisStore(redis_url, prefix=f"test-{uuid.uuid4().hex}", **options)


@asynccontextmanager
async def held(store: Any) -> AsyncIterator[Any]:
    """Open ``store`` in an owner task, yield it, then close it in that same task."""
    opened = asyncio.Event()
    release = asyncio.Event()

    async def owner() -> None:
        async with store:
            opened.set()
            await release.wait()

    task = asyncio.create_task(owner())
    waiter = asyncio.create_task(opened.wait())
    await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiter.cancel()
        task.result()  # open failed: raise its error here
    try:
        yield store
    finally:
        release.set()
        await task


# -- record builders --------------------------------------------------------------------------
T0 = datetime(2026, 1, 18, 12, 0, 0, 123456, tzinfo=UTC)

NESTED: dict[str, Any] = {
    "unicode": "héllo wörld — 日本語 🚀 \u0000 nul and \\ backslash \"quotes\"",
    "nested": {"list": [1, 2.5, -3, None, True, False, {"deep": ["x", {"y": []}]}], "empty": {}},
    "float": 0.1 + 0.2,
    "big": 2**62,
    "negative": -(2**40),
    "ключ": "значение",
}


def flow(flow_id: str = "etl", **changes: Any) -> FlowRecord:
    base = FlowRecord(
        flow_id=flow_id,
        document={"flow_id": flow_id, "routines": {"src": {"class": "DataSource"}}, "extra": NESTED},
        revision=1,
        created_at=T0,
        updated_at=T0 + timedelta(seconds=1),
        source="flows/etl.yaml",
    )
    return msgspec.structs.replace(base, **changes)


def job(job_id: str, at: int = 0, **changes: Any) -> JobRecord:
    base = JobRecord(
        job_id=job_id,
        flow_id="etl",
        runtime_id="default",
        status="running",
        created_at=T0 + timedelta(seconds=at),
    )
    return msgspec.structs.replace(base, **changes)


def event(job_id: str, seq: int, type_: str = "log") -> StoredEvent:
    payload = msgspec.json.encode({"seq": seq, "type": type_, "job_id": job_id, "data": {"é": seq}})
    return StoredEvent(job_id=job_id, seq=seq, type=type_, payload=payload)

"""A store that cannot be used answers 503 ``store_unavailable``: with ``Retry-After``, never with
the store's location (a database path is the server's business), and nothing is kept of a change
the store refused. The store is made to fail on demand, in process (the app and its lifespan are
real; only the store's disk is simulated), and every response is checked against the spec."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx

from routilux.api import Settings, create_app
from routilux.store import FlowRecord, JobQuery, JobRecord, MemoryStore, SQLiteStore, StoreError
from tests.support.spec_check import httpx_event_hook

SECRET_PATH = "/srv/secret-place/routilux.db"
S = TypeVar("S", MemoryStore, SQLiteStore)
START = {"flow_id": "kept", "entry": {"routine_id": "src", "slot_name": "trigger", "data": 1}}
FLOW = {"dsl_dict": {"flow_id": "kept", "routines": {"src": {"class": "DataSource"}}}}


class FailingStore(MemoryStore):
    """A memory store whose reads and writes fail while ``failing`` is set, as a full or broken
    disk would, with an error that names where the store is."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = False

    def _check(self) -> None:
        if self.failing:
            raise StoreError("disk I/O error", location=SECRET_PATH)

    async def get_job(self, job_id: str) -> JobRecord | None:
        self._check()
        return await super().get_job(job_id)

    async def list_jobs(self, query: JobQuery) -> tuple[list[JobRecord], int]:
        self._check()
        return await super().list_jobs(query)

    async def put_flow(self, record: FlowRecord, *, expected_revision: int | None = None) -> None:
        self._check()
        await super().put_flow(record, expected_revision=expected_revision)


@asynccontextmanager
async def serving(store: S) -> AsyncIterator[tuple[httpx.AsyncClient, S]]:
    """The app with its lifespan running, in this task (so its task group is entered and left here)."""
    app = create_app(Settings(db=":memory:", docs_enabled=False), store=store)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://routilux.test",
                                     event_hooks={"response": [httpx_event_hook]}) as client:
            yield client, store


def assert_store_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    detail: dict[str, Any] = response.json()["detail"]
    assert detail["error"] == "store_unavailable"
    assert int(response.headers["Retry-After"]) >= 1
    assert "secret-place" not in response.text and "location" not in detail


async def test_reads_the_store_cannot_serve_are_503_without_the_store_location() -> None:
    async with serving(FailingStore()) as (client, store):
        store.failing = True
        assert_store_unavailable(await client.get("/api/jobs"))
        assert_store_unavailable(await client.get("/api/jobs/not-in-memory"))
        store.failing = False
        assert (await client.get("/api/jobs")).status_code == 200
        assert (await client.get("/api/jobs/not-in-memory")).status_code == 404


async def test_a_write_the_store_refuses_is_503_and_nothing_is_kept() -> None:
    async with serving(FailingStore()) as (client, store):
        store.failing = True
        assert_store_unavailable(await client.post("/api/flows", json=FLOW))
        store.failing = False
        assert (await client.get("/api/flows/kept")).status_code == 404  # not half-created
        assert (await client.post("/api/flows", json=FLOW)).status_code == 201  # and it can be made now


def read_only(store: SQLiteStore, on: bool) -> None:
    """Make the store's database refuse writes as a read-only file does (SQLite's own error)."""
    assert store._wconn is not None
    store._wconn.execute(f"PRAGMA query_only = {'ON' if on else 'OFF'}")


async def test_a_read_only_database_refuses_changes_and_health_recovers_by_itself(tmp_path: Path) -> None:
    async with serving(SQLiteStore(tmp_path / "routilux.db")) as (client, store):
        assert (await client.post("/api/flows", json=FLOW)).status_code == 201
        read_only(store, True)
        assert_store_unavailable(await client.post("/api/jobs", json=START))
        health = await client.get("/api/health")
        assert health.status_code == 503 and health.json()["status"] == "degraded", health.text
        assert "routilux.db" not in health.text and str(tmp_path) not in health.text
        listed = (await client.get("/api/jobs")).json()
        assert listed["total"] == 0, "a job that was not saved must not run on"
        read_only(store, False)
        health = await client.get("/api/health")  # no other traffic: its own probe finds writes work
        assert health.status_code == 200 and health.json()["status"] == "healthy", health.text
        assert (await client.post("/api/jobs", json=START)).status_code == 201

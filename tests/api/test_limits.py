"""Configured limits, over a real server: job retention (ROUTILUX_JOBS_KEEP,
ROUTILUX_JOBS_MAX_AGE_SECONDS) and the bound on ``POST /api/jobs/{id}/wait``
(ROUTILUX_MAX_WAIT_SECONDS).

The other limits have their tests where they live: the body cap in test_hostile_input.py and
test_flows.py, breakpoints per job in test_debug_api.py, WebSocket message size and
subscriptions per socket in ws/test_ws_messages.py, DSL caps in engine/test_dsl.py.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.support.rest import create_flow, error_of, etl_yaml, slow_flow, start_job, wait_job
from tests.support.servers import ServerProcess
from tests.support.spec_check import httpx_event_hook

KEEP = 10
MAX_WAIT = 0.5
MAX_AGE = 1.0
#: How long a test waits for the pruner: it wakes within ~1 s of job ends (min gap between
#: passes) or within a quarter of the maximum age; this leaves room for a slow, shared machine.
PRUNE_DEADLINE = 15.0


@pytest.fixture(scope="module")
def keep_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    db = tmp_path_factory.mktemp("keep") / "routilux.db"
    proc = ServerProcess(db, ROUTILUX_JOBS_KEEP=str(KEEP), ROUTILUX_MAX_WAIT_SECONDS=str(MAX_WAIT)).start()
    yield proc
    # The pruner is a task of the lifespan: shutdown must not wait on it (a hang ends in SIGKILL).
    assert proc.stop() in (0, -signal.SIGTERM), proc.output()[-2000:]


@pytest.fixture(scope="module")
def age_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    db = tmp_path_factory.mktemp("age") / "routilux.db"
    proc = ServerProcess(db, ROUTILUX_JOBS_MAX_AGE_SECONDS=str(MAX_AGE)).start()
    yield proc
    proc.stop()


async def _client(server: ServerProcess) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, timeout=30, event_hooks={"response": [httpx_event_hook]})


@pytest.fixture
async def keep_client(keep_server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with await _client(keep_server) as http:
        yield http


@pytest.fixture
async def age_client(age_server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with await _client(age_server) as http:
        yield http


async def _finished_job(client: httpx.AsyncClient, flow_id: str) -> str:
    job = await start_job(client, flow_id=flow_id, complete_when_idle=True,
                          entry={"routine_id": "source", "slot_name": "trigger", "data": {}})
    for _ in range(20):  # waits are short on the keep server (MAX_WAIT): ask again
        if (status := (await wait_job(client, job["job_id"], MAX_WAIT))["status"]) == "completed":
            return job["job_id"]
    raise AssertionError(f"job {job['job_id']} is still {status}")


async def _listed(client: httpx.AsyncClient) -> list[str]:
    response = await client.get("/api/jobs", params={"limit": 1000})
    assert response.status_code == 200
    return [job["job_id"] for job in response.json()["jobs"]]


async def _until_listed(client: httpx.AsyncClient, expected: set[str]) -> None:
    deadline = time.monotonic() + PRUNE_DEADLINE
    while set(listed := await _listed(client)) != expected:
        assert time.monotonic() < deadline, (
            f"after {PRUNE_DEADLINE}s the server lists {sorted(listed)}, not {sorted(expected)}"
        )
        await asyncio.sleep(0.1)


async def _assert_gone(client: httpx.AsyncClient, job_id: str) -> None:
    for path in (f"/api/jobs/{job_id}", f"/api/jobs/{job_id}/events", f"/api/jobs/{job_id}/state"):
        response = await client.get(path)
        assert response.status_code == 404 and error_of(response)["error"] == "job_not_found", path


async def test_only_the_newest_finished_jobs_are_kept_and_unfinished_jobs_never_go(
    keep_client: httpx.AsyncClient,
) -> None:
    client = keep_client
    await create_flow(client, dsl=etl_yaml("etl"))
    await create_flow(client, dsl_dict=slow_flow("slow"))
    # The oldest job of all is idle (unfinished): retention must never touch it.
    idle = (await start_job(client, flow_id="slow"))["job_id"]
    done = [await _finished_job(client, "etl") for _ in range(KEEP + 5)]

    await _until_listed(client, {idle, *done[-KEEP:]})
    for job_id in done[:5]:
        await _assert_gone(client, job_id)
    for job_id in done[-KEEP:]:
        events = (await client.get(f"/api/jobs/{job_id}/events")).json()["events"]
        assert events[-1]["type"] == "job_end"  # kept with its events

    # Cancelling the idle job makes it the newest finished job (retention goes by when a job
    # ended, not when it started): now the oldest of the others goes instead.
    assert (await client.post(f"/api/jobs/{idle}/cancel")).status_code == 200
    await _until_listed(client, {idle, *done[-KEEP + 1 :]})
    await _assert_gone(client, done[-KEEP])


async def test_finished_jobs_older_than_the_maximum_age_are_pruned(age_client: httpx.AsyncClient) -> None:
    client = age_client
    await create_flow(client, dsl=etl_yaml("etl"))
    await create_flow(client, dsl_dict=slow_flow("slow"))
    idle = (await start_job(client, flow_id="slow"))["job_id"]
    old = [await _finished_job(client, "etl") for _ in range(3)]
    assert set(old) <= set(await _listed(client))  # listed right after they ended...
    await _until_listed(client, {idle})  # ...and gone once older than MAX_AGE; the idle job stays
    for job_id in old:
        await _assert_gone(client, job_id)
    assert (await client.get(f"/api/jobs/{idle}")).json()["status"] == "idle"
    await client.post(f"/api/jobs/{idle}/cancel")


async def test_a_wait_holds_the_connection_at_most_max_wait_seconds(keep_client: httpx.AsyncClient) -> None:
    client = keep_client
    await create_flow(client, dsl_dict=slow_flow("slow-wait"))
    job_id = (await start_job(client, flow_id="slow-wait"))["job_id"]  # idle: never ends by itself
    started = time.monotonic()
    waited = await client.post(f"/api/jobs/{job_id}/wait")  # no timeout: the server's bound applies
    took = time.monotonic() - started
    assert waited.status_code == 200 and waited.json()["timed_out"] is True
    assert MAX_WAIT * 0.8 <= took < MAX_WAIT + 5, took
    at_limit = await client.post(f"/api/jobs/{job_id}/wait", json={"timeout": MAX_WAIT})
    assert at_limit.status_code == 200 and at_limit.json()["timed_out"] is True
    over = await client.post(f"/api/jobs/{job_id}/wait", json={"timeout": MAX_WAIT + 0.1})
    assert over.status_code == 422 and error_of(over)["field"] == "body.timeout"
    await client.post(f"/api/jobs/{job_id}/cancel")

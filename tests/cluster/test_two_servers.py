"""Two real servers (separate processes, separate SQLite files) sharing one redis-server through
``ROUTILUX_REDIS_URL``: a job started on A is watched on B, whose own engine and store have never
heard of it. B admits the socket because the job is known to it as a *remote* job (announced on
Redis, or found in its Redis stream), replays it from Redis and relays its live events; what B's
client receives is exactly A's ``GET /api/jobs/{id}/events``: in order, complete, once."""

from __future__ import annotations

import signal
import uuid
from collections.abc import AsyncIterator, Iterator

import anyio
import httpx
import pytest
import redis.asyncio as aioredis

from tests.support.servers import ServerProcess
from tests.support.ws import (
    control,
    create_flow,
    expect_close,
    is_event,
    job_end_of,
    open_ws,
    post,
    recv,
    recv_until,
    relay_flow,
    send,
    start_job,
    start_server,
    stored_events,
    wait_for_stored,
)


@pytest.fixture(scope="module")
def servers(redis_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ServerProcess]]:  # type: ignore[no-untyped-def]
    prefix_env = {"ROUTILUX_REDIS_URL": redis_server.url, "ROUTILUX_WS_METRICS_INTERVAL": "0.1"}
    a = start_server(tmp_path_factory.mktemp("a"), **prefix_env)
    try:
        b = start_server(tmp_path_factory.mktemp("b"), **prefix_env)
    except BaseException:
        a.stop()
        raise
    yield a, b
    # stop both before judging either, so a failed check never leaves a server behind
    codes = [(proc, proc.stop(timeout=10)) for proc in (b, a)]
    for proc, code in codes:  # a clean, prompt shutdown: the bridge's blocking XREAD does not hold it
        assert code in (0, -signal.SIGTERM), proc.output()[-2000:]
        assert "Traceback" not in proc.output(), proc.output()[-4000:]


@pytest.fixture
async def rest_a(servers: tuple[ServerProcess, ServerProcess]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=servers[0].url, timeout=30) as http:
        yield http


async def _job_on_a(rest_a: httpx.AsyncClient, redis_url: str) -> tuple[str, str]:
    """A job started on A, once A's bridge has put it in Redis (until then, no other server can
    know it: a socket on B a few milliseconds earlier would be refused 1008, like any unknown id)."""
    flow_id = await create_flow(rest_a, relay_flow(f"relay_{uuid.uuid4().hex[:8]}"))
    job_id = await start_job(rest_a, flow_id)
    async with aioredis.Redis.from_url(redis_url) as client:
        with anyio.fail_after(10):
            while not await client.exists(f"routilux:job:{job_id}"):
                await anyio.sleep(0.01)
    return flow_id, job_id


def _events(frames: list[dict]) -> list[dict]:  # type: ignore[type-arg]
    return [f for f in frames if is_event(f)]


async def test_a_job_on_a_is_watched_on_b_with_replay_and_live_events(
    servers: tuple[ServerProcess, ServerProcess], rest_a: httpx.AsyncClient, redis_server  # type: ignore[no-untyped-def]
) -> None:
    _a, b = servers
    flow_id, job_id = await _job_on_a(rest_a, redis_server.url)
    await post(rest_a, job_id, "relay", {"n": 1})  # some history B must replay from Redis
    await wait_for_stored(rest_a, job_id, 0, "job_idle")
    async with open_ws(b, f"/api/ws/jobs/{job_id}/monitor?since=0") as ws:
        snapshot = await recv(ws)
        assert snapshot["type"] == "snapshot" and snapshot["job_id"] == job_id
        assert snapshot["flow_id"] == flow_id and snapshot["status"] in ("running", "idle")
        for n in range(2, 6):  # live events, while B streams
            await post(rest_a, job_id, "relay", {"n": n})
        await control(rest_a, job_id, "complete")
        frames = await recv_until(ws, job_end_of(job_id), timeout=15, keep_pings=True)
        # metrics frames of a remote job are its owner's figures (B asks A at each interval)
        while not [f for f in frames if f["type"] == "metrics" and f["metrics"]["status"] != "running"]:
            frames.append(await recv(ws, timeout=5))
    metrics = [f["metrics"] for f in frames if f["type"] == "metrics"]
    assert metrics[-1]["job_id"] == job_id and metrics[-1]["status"] == "completed"
    frames = [f for f in frames if f["type"] not in ("ping", "metrics")]
    assert [f["type"] for f in frames if not is_event(f)] == []  # no gap, no error
    on_b = _events(frames)
    on_a = await stored_events(rest_a, job_id)
    assert [e["seq"] for e in on_b] == list(range(1, len(on_a) + 1))
    assert on_b == on_a


async def test_the_generic_socket_on_b_subscribes_to_a_job_on_a(
    servers: tuple[ServerProcess, ServerProcess], rest_a: httpx.AsyncClient, redis_server  # type: ignore[no-untyped-def]
) -> None:
    _a, b = servers
    _flow_id, job_id = await _job_on_a(rest_a, redis_server.url)
    async with open_ws(b, "/api/ws") as ws:
        await send(ws, {"type": "subscribe", "job_id": job_id, "since": 0})
        assert (await recv(ws))["type"] == "subscribed"
        assert (await recv(ws))["type"] == "snapshot"
        await post(rest_a, job_id, "relay", {"n": 1})
        await control(rest_a, job_id, "cancel")
        frames = await recv_until(ws, job_end_of(job_id), timeout=15)
    on_b = _events(frames)
    assert len(on_b) == len(frames)
    assert on_b == await stored_events(rest_a, job_id)


async def test_b_still_refuses_a_job_nobody_runs(servers: tuple[ServerProcess, ServerProcess]) -> None:
    _a, b = servers
    async with open_ws(b, f"/api/ws/jobs/nobody-{uuid.uuid4().hex}/monitor") as ws:
        code, reason, _frames = await expect_close(ws)
    assert code == 1008 and "unknown job" in reason


async def test_a_server_started_later_finds_the_job_in_redis_and_replays_it(
    servers: tuple[ServerProcess, ServerProcess], rest_a: httpx.AsyncClient, redis_server,  # type: ignore[no-untyped-def]
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """C never saw the job's announcement (it was not running): the socket's id check finds the
    job's stream in Redis, replay reads it by seq, and C follows it live from there."""
    _flow_id, job_id = await _job_on_a(rest_a, redis_server.url)
    await post(rest_a, job_id, "relay", {"n": 1})
    await wait_for_stored(rest_a, job_id, 0, "job_idle")
    c = start_server(tmp_path_factory.mktemp("c"), ROUTILUX_REDIS_URL=redis_server.url)
    try:
        async with open_ws(c, f"/api/ws/jobs/{job_id}/debug?since=0") as ws:
            snapshot = await recv(ws)
            assert snapshot["type"] == "snapshot" and snapshot["last_seq"] >= 1
            await post(rest_a, job_id, "relay", {"n": 2})
            await control(rest_a, job_id, "complete")
            frames = await recv_until(ws, job_end_of(job_id), timeout=15)
    finally:
        assert c.stop(timeout=10) in (0, -signal.SIGTERM), c.output()[-2000:]
    debug_types = {"routine_start", "routine_end", "slot_call", "breakpoint_hit", "debug_step",
                   "job_pause", "job_resume", "job_end"}
    assert _events(frames) == [e for e in await stored_events(rest_a, job_id) if e["type"] in debug_types]

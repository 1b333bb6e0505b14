"""A server relays another server's job only while something on it watches the job (issue 17):
two real servers on one redis-server, jobs on A, sockets (or none) on B.

- With no socket on B, B reads no job stream of A's: it relays 0 events however many A runs.
- A socket on B for a job of A's (by id, or by its flow; the job socket, the flow socket, the
  generic socket's subscribe) makes B follow that job; when the socket leaves (or unsubscribes),
  B stops reading it.
- The figures B serves of A's jobs — a job's metrics, the flow's, Prometheus' ``routilux_jobs`` —
  are right without B following anything: they come from what A stores and publishes.

B's ``routilux_cluster_relayed_events_total`` and ``routilux_cluster_followed_jobs`` (its
``/metrics``) say what it relays.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import anyio
import httpx
import pytest
import redis.asyncio as aioredis

from tests.support.servers import ServerProcess
from tests.support.ws import (
    create_flow,
    is_event,
    open_ws,
    post,
    recv,
    recv_until,
    relay_flow,
    send,
    start_job,
    start_server,
    wait_for_stored,
)

#: B stops reading a job this long after its last watcher left at most: the look-up's grace
#: (2 s), then the next read (0.5 s), with room for a busy machine.
UNFOLLOW_SECONDS = 8.0


@pytest.fixture(scope="module")
def servers(redis_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ServerProcess]]:  # type: ignore[no-untyped-def]
    env = {"ROUTILUX_REDIS_URL": redis_server.url}
    a = start_server(tmp_path_factory.mktemp("a"), **env)
    try:
        b = start_server(tmp_path_factory.mktemp("b"), **env)
    except BaseException:
        a.stop()
        raise
    yield a, b
    codes = [(proc, proc.stop(timeout=10)) for proc in (b, a)]
    for proc, code in codes:
        assert code in (0, -signal.SIGTERM), proc.output()[-2000:]
        assert "Traceback" not in proc.output(), proc.output()[-4000:]


@pytest.fixture
async def rest(
    servers: tuple[ServerProcess, ServerProcess],
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    a, b = servers
    async with httpx.AsyncClient(base_url=a.url, timeout=30) as rest_a, \
            httpx.AsyncClient(base_url=b.url, timeout=30) as rest_b:
        yield rest_a, rest_b


async def prometheus(rest: httpx.AsyncClient) -> dict[str, float]:
    """``/metrics`` as {series with labels: value}."""
    response = await rest.get("/metrics")
    assert response.status_code == 200, response.text
    found: dict[str, float] = {}
    for line in response.text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


async def relay(rest: httpx.AsyncClient) -> tuple[int, int]:
    """(events relayed so far, jobs followed now) on that server."""
    figures = await prometheus(rest)
    return int(figures["routilux_cluster_relayed_events_total"]), int(figures["routilux_cluster_followed_jobs"])


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await anyio.sleep(0.05)


async def job_in_redis(redis_url: str, job_id: str) -> None:
    """A job of A's is known to the cluster once its first events are in Redis."""
    async with aioredis.Redis.from_url(redis_url) as client:
        with anyio.fail_after(10):
            while not await client.exists(f"routilux:job:{job_id}"):
                await anyio.sleep(0.01)


async def run_jobs_on_a(rest_a: httpx.AsyncClient, flow_id: str, jobs: int, posts: int) -> list[str]:
    """``jobs`` jobs of ``flow_id`` on A, each given ``posts`` items, then completed; their ids."""
    ids = [await start_job(rest_a, flow_id) for _ in range(jobs)]
    for job_id in ids:
        for n in range(posts):
            await post(rest_a, job_id, "relay", {"n": n})
        response = await rest_a.post(f"/api/jobs/{job_id}/complete")
        assert response.status_code == 200, response.text
    for job_id in ids:
        response = await rest_a.post(f"/api/jobs/{job_id}/wait", json={"timeout": 10})
        assert response.status_code == 200 and response.json()["status"] == "completed", response.text
    return ids


async def test_a_server_nobody_watches_relays_nothing(
    rest: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    rest_a, rest_b = rest
    relayed, _followed = await relay(rest_b)
    flow_id = await create_flow(rest_a, relay_flow(f"quiet_{uuid.uuid4().hex[:8]}"))
    ids = await run_jobs_on_a(rest_a, flow_id, jobs=5, posts=4)
    # A's events are all in Redis (its store wrote them before B could have read them)
    await wait_for_stored(rest_a, ids[-1], 0, "job_end")
    # ... and B read none of them: a short look for a wrong relay (B reads within 0.5 s)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert await relay(rest_b) == (relayed, 0)
        await anyio.sleep(0.1)


async def test_a_job_socket_on_b_follows_the_job_until_it_leaves(
    rest: tuple[httpx.AsyncClient, httpx.AsyncClient], servers: tuple[ServerProcess, ServerProcess],
    redis_server,  # type: ignore[no-untyped-def]
) -> None:
    rest_a, rest_b = rest
    flow_id = await create_flow(rest_a, relay_flow(f"watched_{uuid.uuid4().hex[:8]}"))
    job_id = await start_job(rest_a, flow_id)
    await job_in_redis(redis_server.url, job_id)
    before, followed = await relay(rest_b)
    assert followed == 0
    async with open_ws(servers[1], f"/api/ws/jobs/{job_id}/monitor") as ws:
        assert (await recv(ws))["type"] == "snapshot"
        await post(rest_a, job_id, "relay", {"n": 1})
        frames = await recv_until(ws, lambda f: is_event(f) and f["type"] == "job_idle", timeout=10)
        assert [f for f in frames if is_event(f)]
        relayed, followed = await relay(rest_b)
        assert followed == 1 and relayed > before
    # the socket left: B lets go of the job and relays none of its later events
    await until(lambda: _followed_is(rest_b, 0), UNFOLLOW_SECONDS, "B stops following the job")
    stopped, _ = await relay(rest_b)
    last = (await rest_a.get(f"/api/jobs/{job_id}/status")).json()["last_seq"]
    await post(rest_a, job_id, "relay", {"n": 2})
    await wait_for_stored(rest_a, job_id, last, "job_idle")
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert await relay(rest_b) == (stopped, 0)
        await anyio.sleep(0.1)
    await rest_a.post(f"/api/jobs/{job_id}/cancel")


async def _followed_is(rest_b: httpx.AsyncClient, n: int) -> bool:
    return (await relay(rest_b))[1] == n


async def test_a_flow_socket_on_b_follows_the_flows_jobs_on_a(
    rest: tuple[httpx.AsyncClient, httpx.AsyncClient], servers: tuple[ServerProcess, ServerProcess],
    redis_server,  # type: ignore[no-untyped-def]
) -> None:
    """A job already running when the socket opens is followed from then on; one started later
    from its first event."""
    rest_a, rest_b = rest
    flow_id = await create_flow(rest_a, relay_flow(f"flowwatch_{uuid.uuid4().hex[:8]}"))
    running = await start_job(rest_a, flow_id)
    await job_in_redis(redis_server.url, running)
    async with open_ws(servers[1], f"/api/ws/flows/{flow_id}/monitor") as ws:
        await until(lambda: _followed_is(rest_b, 1), 5, "B follows the flow's running job")
        await post(rest_a, running, "relay", {"n": 1})
        frames = await recv_until(ws, lambda f: is_event(f) and f["type"] == "job_idle", timeout=10)
        assert {f["job_id"] for f in frames if is_event(f)} == {running}
        later = await start_job(rest_a, flow_id)
        await post(rest_a, later, "relay", {"n": 1})
        frames = await recv_until(ws, lambda f: is_event(f) and f["job_id"] == later and f["type"] == "job_idle",
                                  timeout=10)
        seqs = [f["seq"] for f in frames if is_event(f) and f["job_id"] == later]
        assert seqs == list(range(1, len(seqs) + 1))  # from its first event, in order
    await until(lambda: _followed_is(rest_b, 0), UNFOLLOW_SECONDS, "B stops following the flow's jobs")
    for job_id in (running, later):
        await rest_a.post(f"/api/jobs/{job_id}/cancel")


async def test_the_generic_socket_follows_while_subscribed(
    rest: tuple[httpx.AsyncClient, httpx.AsyncClient], servers: tuple[ServerProcess, ServerProcess],
    redis_server,  # type: ignore[no-untyped-def]
) -> None:
    rest_a, rest_b = rest
    flow_id = await create_flow(rest_a, relay_flow(f"generic_{uuid.uuid4().hex[:8]}"))
    job_id = await start_job(rest_a, flow_id)
    await job_in_redis(redis_server.url, job_id)
    async with open_ws(servers[1], "/api/ws") as ws:
        for key in ({"job_id": job_id}, {"flow_id": flow_id}):
            await send(ws, {"type": "subscribe", **key})
            assert (await recv(ws))["type"] == "subscribed"
            if "job_id" in key:
                assert (await recv(ws))["type"] == "snapshot"
            await post(rest_a, job_id, "relay", {"n": 1})
            await recv_until(ws, lambda f: is_event(f) and f["type"] == "job_idle", timeout=10)
            assert (await relay(rest_b))[1] == 1
            await send(ws, {"type": "unsubscribe", **key})
            await recv_until(ws, lambda f: f["type"] == "unsubscribed", timeout=5)
            await until(lambda: _followed_is(rest_b, 0), UNFOLLOW_SECONDS, f"B stops following after {key}")
    await rest_a.post(f"/api/jobs/{job_id}/cancel")


async def test_figures_of_remote_jobs_are_right_without_following(
    rest: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    rest_a, rest_b = rest
    relayed, _ = await relay(rest_b)
    flow_id = await create_flow(rest_a, relay_flow(f"figures_{uuid.uuid4().hex[:8]}"))
    ids = await run_jobs_on_a(rest_a, flow_id, jobs=3, posts=2)
    live = await start_job(rest_a, flow_id)
    await post(rest_a, live, "relay", {"n": 1})
    await wait_for_stored(rest_a, live, 0, "job_idle")
    # one job's metrics: its owner's, on either server
    for job_id in (ids[0], live):
        on_a = (await rest_a.get(f"/api/jobs/{job_id}/metrics")).json()
        on_b = (await rest_b.get(f"/api/jobs/{job_id}/metrics")).json()
        assert on_b["totals"] == on_a["totals"] and on_b["status"] == on_a["status"]
        assert on_b["events_seen"] == on_a["events_seen"] > 0
    # the flow's figures on B: A's finished jobs (stored) and live one (published), within a second or two
    expected = {"completed": 3, "idle": 1}

    async def flow_counted() -> bool:
        figures = (await rest_b.get(f"/api/flows/{flow_id}/metrics")).json()
        return bool(figures["jobs_by_status"] == expected and figures["total_jobs"] == 4)

    await until(flow_counted, 10, f"B's figures of flow {flow_id} count A's jobs {expected}")
    figures = (await rest_b.get(f"/api/flows/{flow_id}/metrics")).json()
    assert figures["success_rate"] == 1.0
    assert figures["routines"]["relay"]["execution_count"] == 3 * 2
    prom = await prometheus(rest_b)
    assert prom[f'routilux_jobs{{flow_id="{flow_id}",status="completed"}}'] == 3
    assert prom[f'routilux_jobs{{flow_id="{flow_id}",status="idle"}}'] == 1
    # the listing's counts are the shared store's
    listed = (await rest_b.get("/api/jobs", params={"flow_id": flow_id, "status": "completed"})).json()
    assert listed["total"] == 3
    assert (await relay(rest_b)) == (relayed, 0)  # and B followed nothing for any of it
    await rest_a.post(f"/api/jobs/{live}/cancel")

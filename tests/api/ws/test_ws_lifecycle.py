"""How sockets end.

- By default a job socket sends the terminal ``job_end`` and stays open (tested with the
  default server in ``test_ws_endpoints.py``).
- With ``ROUTILUX_WS_LINGER_SECONDS`` a job socket closes with 1000 that long after its job
  ended; flow and generic sockets are not tied to one job and stay open.
- A clean shutdown (SIGTERM) closes every open socket with 1001.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.servers import ServerProcess
from tests.support.ws import (
    control,
    create_flow,
    expect_close,
    job_end_of,
    open_ws,
    ping_pong,
    post,
    recv,
    recv_until,
    relay_flow,
    send,
    small_window_socket,
    start_job,
    start_server,
    stored_events,
    wait_ended,
    wait_for_stored,
)

LINGER = 0.5


@pytest.fixture(scope="module")
def ws_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(tmp_path_factory.mktemp("ws-linger"), ROUTILUX_WS_LINGER_SECONDS=str(LINGER))
    yield server
    server.stop()


async def idle_job(rest: httpx.AsyncClient, flow_id: str) -> str:
    job_id = await start_job(rest, flow_id)
    await wait_for_stored(rest, job_id, 0, "job_idle")
    return job_id


# -- linger ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["monitor", "debug"])
async def test_with_linger_a_job_socket_closes_1000_that_long_after_job_end(
    ws_server: ServerProcess, rest: httpx.AsyncClient, uid: str, kind: str
) -> None:
    flow_id = await create_flow(rest, relay_flow(f"ws-linger-{kind}-{uid}"))
    job_id = await idle_job(rest, flow_id)
    async with open_ws(ws_server, f"/api/ws/jobs/{job_id}/{kind}") as ws:
        assert (await recv(ws))["type"] == "snapshot"
        await post(rest, job_id, "relay", 1)
        await control(rest, job_id, "complete")
        frames = await recv_until(ws, job_end_of(job_id))
        ended = time.monotonic()
        code, reason, after = await expect_close(ws, timeout=LINGER + 1.5)
        lingered = time.monotonic() - ended
    assert frames[-1]["data"]["status"] == "completed"
    assert (code, after) == (1000, [])
    assert reason
    assert LINGER * 0.8 <= lingered <= LINGER + 1.0, f"closed {lingered:.2f}s after job_end, linger is {LINGER}s"


async def test_with_linger_a_socket_on_a_finished_job_replays_then_closes_1000(
    ws_server: ServerProcess, rest: httpx.AsyncClient, uid: str
) -> None:
    flow_id = await create_flow(rest, relay_flow(f"ws-linger-done-{uid}"))
    job_id = await start_job(rest, flow_id, complete_when_idle=True,
                             entry={"routine_id": "relay", "slot_name": "input", "data": 1})
    await wait_ended(rest, job_id)
    async with open_ws(ws_server, f"/api/ws/jobs/{job_id}/monitor?since=0") as ws:
        opened = time.monotonic()
        code, _, frames = await expect_close(ws, timeout=LINGER + 1.5)
        lasted = time.monotonic() - opened
    assert code == 1000
    assert frames[0]["type"] == "snapshot" and frames[0]["status"] == "completed"
    assert frames[1:] == await stored_events(rest, job_id)
    assert LINGER * 0.8 <= lasted <= LINGER + 1.0


async def test_linger_leaves_flow_and_generic_sockets_open(
    ws_server: ServerProcess, rest: httpx.AsyncClient, uid: str
) -> None:
    flow_id = await create_flow(rest, relay_flow(f"ws-linger-flow-{uid}"))
    job_id = await idle_job(rest, flow_id)
    async with open_ws(ws_server, f"/api/ws/flows/{flow_id}/monitor") as flow, open_ws(ws_server, "/api/ws") as generic:
        await send(generic, {"type": "subscribe", "job_id": job_id})
        assert await recv(generic) == {"type": "subscribed", "job_id": job_id}
        assert (await recv(generic))["type"] == "snapshot"
        await control(rest, job_id, "complete")
        await recv_until(flow, job_end_of(job_id))
        await recv_until(generic, job_end_of(job_id))
        await asyncio.sleep(LINGER * 2)  # past the linger: nothing to await but time
        assert await ping_pong(flow) == []
        assert await ping_pong(generic) == []


# -- shutdown -------------------------------------------------------------------------------------
@pytest.fixture
def doomed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server of its own, for a test that stops it."""
    server = start_server(tmp_path_factory.mktemp("ws-shutdown"))
    yield server
    server.stop(signal.SIGKILL)


async def test_a_clean_shutdown_closes_every_socket_with_1001(doomed: ServerProcess, uid: str) -> None:
    async with httpx.AsyncClient(base_url=doomed.url, timeout=10) as rest:
        flow_id = await create_flow(rest, relay_flow(f"ws-bye-{uid}"))
        job_id = await idle_job(rest, flow_id)
        async with open_ws(doomed, f"/api/ws/jobs/{job_id}/monitor") as monitor, \
                open_ws(doomed, f"/api/ws/jobs/{job_id}/debug") as debug, \
                open_ws(doomed, f"/api/ws/flows/{flow_id}/monitor") as flow, \
                open_ws(doomed, "/api/ws") as subscribed, \
                open_ws(doomed, "/api/ws") as bare:
            assert (await recv(monitor))["type"] == (await recv(debug))["type"] == "snapshot"
            await send(subscribed, {"type": "subscribe", "job_id": job_id})
            assert (await recv(subscribed))["type"] == "subscribed"
            assert await ping_pong(flow) == [] and await ping_pong(bare) == []
            sockets = [monitor, debug, flow, subscribed, bare]

            doomed.process.send_signal(signal.SIGTERM)
            closes = await asyncio.gather(*(expect_close(ws, timeout=5) for ws in sockets))
    assert [code for code, _, _ in closes] == [1001] * len(sockets), closes
    assert all(reason for _, reason, _ in closes)
    assert await asyncio.to_thread(doomed.process.wait, 15) is not None


async def test_clients_that_stopped_reading_do_not_hold_up_the_others_1001(doomed: ServerProcess, uid: str) -> None:
    """Sockets whose clients stopped reading (their buffers full) must not delay the 1001 of the
    others. Four stuck and four reading clients, so the order the server closes them in does not
    decide the outcome."""
    async with httpx.AsyncClient(base_url=doomed.url, timeout=10) as rest, contextlib.AsyncExitStack() as stack:
        flow_id = await create_flow(rest, {"flow_id": f"ws-stuck-{uid}", "connections": [],
                                           "routines": {"hose": {"class": "Firehose", "config": {"count": 2500}}}})
        job_id = await idle_job(rest, flow_id)
        path = f"/api/ws/jobs/{job_id}/monitor"
        stuck = [await stack.enter_async_context(open_ws(doomed, path, sock=small_window_socket(doomed),
                                                         compression=None, max_queue=1)) for _ in range(4)]
        reading = [await stack.enter_async_context(open_ws(doomed, "/api/ws")) for _ in range(4)]
        for ws in stuck:
            assert (await recv(ws))["type"] == "snapshot"
        await post(rest, job_id, "hose", 1)
        await wait_for_stored(rest, job_id, 2, "job_idle", 30)  # the stuck clients are far behind now
        for ws in reading:
            assert await ping_pong(ws) == []

        doomed.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        closes = await asyncio.gather(*(expect_close(ws, timeout=10) for ws in reading))
        waited = time.monotonic() - signalled
        for ws in stuck:
            ws.transport.abort()  # they would take long to close politely: their buffers are full
    assert [code for code, _, _ in closes] == [1001] * len(reading), closes
    assert waited < 2, f"the reading clients were closed {waited:.1f}s after SIGTERM"

"""Heartbeat: the server pings a quiet socket every ``ROUTILUX_WS_PING_INTERVAL`` seconds and
closes with 4408 a client it has not heard from for ``ROUTILUX_WS_IDLE_TIMEOUT`` seconds; any
client message counts, and ``{"type": "ping"}`` is answered with ``{"type": "pong"}``.

The server here pings after 0.3 s of silence and gives up on a client after 1 s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.servers import ServerProcess
from tests.support.ws import (
    create_flow,
    expect_close,
    open_ws,
    recv,
    recv_until,
    relay_flow,
    send,
    start_job,
    start_server,
    wait_for_stored,
)

PING_INTERVAL = 0.3
IDLE_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def ws_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(
        tmp_path_factory.mktemp("ws-heartbeat"),
        ROUTILUX_WS_PING_INTERVAL=str(PING_INTERVAL),
        ROUTILUX_WS_IDLE_TIMEOUT=str(IDLE_TIMEOUT),
    )
    yield server
    server.stop()


async def test_a_silent_client_is_pinged_then_closed_with_4408(ws_server: ServerProcess) -> None:
    async with open_ws(ws_server, "/api/ws") as ws:
        opened = time.monotonic()
        code, reason, frames = await expect_close(ws, timeout=5)
        lasted = time.monotonic() - opened
    assert code == 4408 and reason
    assert frames and all(f == {"type": "ping"} for f in frames), frames
    assert 2 <= len(frames) <= 4, f"{len(frames)} pings in {lasted:.2f}s at a {PING_INTERVAL}s interval"
    assert IDLE_TIMEOUT * 0.9 <= lasted <= IDLE_TIMEOUT + 1.0, f"closed after {lasted:.2f}s"


async def test_a_silent_job_socket_is_closed_with_4408_too(
    ws_server: ServerProcess, rest: httpx.AsyncClient, uid: str
) -> None:
    flow_id = await create_flow(rest, relay_flow(f"ws-hb-{uid}"))
    job_id = await start_job(rest, flow_id)
    await wait_for_stored(rest, job_id, 0, "job_idle")
    async with open_ws(ws_server, f"/api/ws/jobs/{job_id}/monitor") as ws:
        assert (await recv(ws))["type"] == "snapshot"
        code, _, frames = await expect_close(ws, timeout=5)
    assert code == 4408
    assert frames and all(f == {"type": "ping"} for f in frames)


async def test_a_client_that_pings_gets_pongs_and_outlives_the_idle_timeout(ws_server: ServerProcess) -> None:
    async with open_ws(ws_server, "/api/ws") as ws:
        started = time.monotonic()
        pongs = 0
        while time.monotonic() - started < 2.2 * IDLE_TIMEOUT:
            await send(ws, {"type": "ping"})
            frames = await recv_until(ws, lambda f: f.get("type") == "pong", 2, keep_pings=True)
            assert all(f == {"type": "ping"} for f in frames[:-1])  # server pings may come in between
            assert frames[-1] == {"type": "pong"}
            pongs += 1
            await asyncio.sleep(IDLE_TIMEOUT / 2)  # the client's own pace, well inside the timeout
        assert pongs >= 4
        # Still open, still answering, well past the idle timeout.
        await send(ws, {"type": "ping"})
        assert (await recv_until(ws, lambda f: f.get("type") == "pong", 2))[-1] == {"type": "pong"}


async def test_answering_the_server_pings_with_pong_keeps_the_socket_open(ws_server: ServerProcess) -> None:
    async with open_ws(ws_server, "/api/ws") as ws:
        started = time.monotonic()
        answered = 0
        while time.monotonic() - started < 2.2 * IDLE_TIMEOUT:
            frame = await recv(ws, 2)
            assert frame == {"type": "ping"}
            await send(ws, {"type": "pong"})  # no reply expected to a pong
            answered += 1
        assert answered >= 5
        await send(ws, {"type": "ping"})
        assert (await recv_until(ws, lambda f: f.get("type") == "pong", 2))[-1] == {"type": "pong"}

"""WebSocket messages over ``ROUTILUX_WS_MAX_MESSAGE_BYTES`` (64 KiB by default) are refused by
the server's WebSocket protocol from the frame's header — uvicorn's ``ws_max_size``, which
``python -m routilux.api.main`` sets to the app's limit — and the socket closes with 1009 before
the payload is read. uvicorn's own default let each socket buffer 16 MiB first."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Final

import pytest
import websockets

from tests.support.processes import peak_rss_growth
from tests.support.servers import ServerProcess
from tests.support.ws import open_ws, recv

MiB: Final = 1 << 20
SOCKETS: Final = 20


@pytest.fixture(scope="module")
def default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("ws-size") / "routilux.db").start()
    yield server
    server.stop()


async def send_huge(server: ServerProcess, size: int) -> int | None:
    """Open ``/api/ws``, send one message of ``size`` bytes: the code the server closed with."""
    async with open_ws(server, "/api/ws", max_size=None) as ws:
        await ws.send('{"type": "ping"}')
        assert await recv(ws) == {"type": "pong"}
        try:
            await ws.send("x" * size)
            await asyncio.wait_for(ws.recv(), 30)
        except websockets.ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd is not None else None
    raise AssertionError("the socket stayed open")


async def test_20_sockets_sending_15_mib_messages_are_closed_with_1009_and_the_server_stays_small(
    default_server: ServerProcess,
) -> None:
    assert default_server.process is not None
    codes, grown = await peak_rss_growth(
        default_server.process.pid, asyncio.gather(*(send_huge(default_server, 15 * MiB) for _ in range(SOCKETS))))
    assert codes == [1009] * SOCKETS
    assert grown < 50 * MiB, f"{SOCKETS} messages of 15 MiB grew the server by {grown / MiB:.1f} MiB"


async def test_a_message_of_exactly_the_limit_is_read(default_server: ServerProcess) -> None:
    message = '{"type": "ping", "pad": "' + "x" * (64 * 1024 - 27) + '"}'
    assert len(message) == 64 * 1024
    async with open_ws(default_server, "/api/ws") as ws:
        await ws.send(message)
        assert await recv(ws) == {"type": "pong"}

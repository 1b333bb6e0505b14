"""Frames on the wire: one text frame per JSON object, whichever way the server writes them.

``routilux.api.main`` runs uvicorn with :class:`BatchingWebSocketProtocol`, which writes all the
frames a socket has queued with one system call, building their headers itself unless the client
negotiated compression. Served by plain uvicorn (as under gunicorn's stock worker) the extension is
absent and the app sends one ASGI message per frame. Every path must put the same frames on the
wire: each event exactly as stored, in order, one per text frame. (Events are bounded by the
engine's previews to a few KiB; the 64-bit length header is checked against the reference parser.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from routilux.api.ws.protocol import text_frames
from tests.support.servers import ServerProcess
from tests.support.ws import (
    create_flow,
    job_end_of,
    open_ws,
    recv,
    recv_until,
    start_job,
    start_server,
    stored_events,
    wait_ended,
)

# payload sizes around each RFC 6455 length encoding: 7-bit, 16-bit, 64-bit
HEADER_EDGES = [0, 1, 125, 126, 127, 65535, 65536, 70000]


def parse_frames(data: bytes, count: int) -> list[Frame]:
    """``count`` server frames parsed by the ``websockets`` library's own (reference) parser;
    nothing may be left over."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    frames = []
    for _ in range(count):
        parser = Frame.parse(reader.read_exact, mask=False)
        try:
            while True:
                next(parser)
        except StopIteration as done:
            frames.append(done.value)
    assert not reader.buffer, f"{len(reader.buffer)} bytes after the last frame"
    return frames


def test_text_frames_are_final_unmasked_text_frames_at_every_header_size() -> None:
    payloads = [("é" * size).encode()[:size] if size % 2 == 0 else b"x" * size for size in HEADER_EDGES]
    frames = parse_frames(text_frames(payloads), len(payloads))
    assert [(f.opcode, f.fin, f.rsv1, bytes(f.data)) for f in frames] == [
        (Opcode.TEXT, True, False, payload) for payload in payloads
    ]


def test_no_payloads_make_no_bytes() -> None:
    assert text_frames([]) == b""


@pytest.fixture(scope="module")
def ws_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """``python -m routilux.api.main``, which knows ``Firehose``."""
    server = start_server(tmp_path_factory.mktemp("ws-wire"))
    yield server
    server.stop()


def sized_flow(flow_id: str, count: int, size: int) -> dict:
    config = {"count": count, "size": size}
    return {"flow_id": flow_id, "routines": {"hose": {"class": "Firehose", "config": config}}, "connections": []}


async def stream_of_one_job(server: ServerProcess, rest: httpx.AsyncClient, flow_id: str, compression: str | None
                            ) -> tuple[list[dict], list[dict]]:
    """Run a job of ``flow_id`` to its end (it completes once idle), watching it with
    ``since=0`` (replay, then live); return (frames, stored events)."""
    job_id = await start_job(rest, flow_id, complete_when_idle=True,
                             entry={"routine_id": "hose", "slot_name": "input", "data": {}})
    async with open_ws(server, f"/api/ws/jobs/{job_id}/monitor?since=0", compression=compression,
                       max_size=2**24) as ws:
        assert (await recv(ws))["type"] == "snapshot"
        frames = await recv_until(ws, job_end_of(job_id), timeout=30)
    await wait_ended(rest, job_id)
    return frames, await stored_events(rest, job_id)


@pytest.mark.parametrize("compression", [None, "deflate"], ids=["plain", "permessage-deflate"])
@pytest.mark.parametrize(("count", "size"), [(400, 10), (200, 3000)], ids=["7-bit", "16-bit"])
async def test_every_event_arrives_as_one_text_frame_as_stored_in_order(
    ws_server: ServerProcess, rest: httpx.AsyncClient, uid: str, compression: str | None, count: int, size: int
) -> None:
    flow_id = await create_flow(rest, sized_flow(f"wire-{uid}", count, size))
    frames, stored = await stream_of_one_job(ws_server, rest, flow_id, compression)
    assert frames == stored
    emits = [f for f in frames if f["type"] == "event_emit"]
    assert [f["data"]["data"]["n"] for f in emits] == list(range(count))  # none merged, split or lost


# -- served by plain uvicorn: no batching extension, the same frames -------------------------------
@pytest.fixture(scope="module")
def plain_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """``uvicorn routilux.api.main:app`` with uvicorn's own WebSocket protocol."""
    server = start_server(
        tmp_path_factory.mktemp("ws-plain"),
        argv=["-m", "uvicorn", "routilux.api.main:app", "--host", "127.0.0.1", "--port", "{port}",
              "--ws", "websockets-sansio", "--log-level", "warning"],
    )
    yield server
    server.stop()


@pytest.fixture
async def plain_rest(plain_server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=plain_server.url, timeout=30) as http:
        yield http


# single_process: it is about one other server command (plain uvicorn), not a deployment of ours.
@pytest.mark.single_process
@pytest.mark.parametrize("compression", [None, "deflate"], ids=["plain", "permessage-deflate"])
async def test_under_plain_uvicorn_the_stream_is_the_same_one_frame_per_event(
    plain_server: ServerProcess, plain_rest: httpx.AsyncClient, uid: str, compression: str | None
) -> None:
    flow_id = await create_flow(plain_rest, sized_flow(f"plain-{uid}", 300, 200))
    frames, stored = await stream_of_one_job(plain_server, plain_rest, flow_id, compression)
    assert frames == stored
    assert [f["data"]["data"]["n"] for f in frames if f["type"] == "event_emit"] == list(range(300))

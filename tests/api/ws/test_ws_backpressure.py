"""Slow consumers: a client that reads too slowly loses its oldest queued events, is told
exactly which with a ``gap`` frame, and slows down nobody else — not the engine, not the other
clients, not the REST API. A client that does keep reading loses nothing.

The server here queues at most ``ROUTILUX_WS_SEND_QUEUE=10`` events per socket.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.servers import ServerProcess
from tests.support.ws import (
    Frame,
    assert_contiguous,
    control,
    coverage,
    create_flow,
    is_event,
    job_end_of,
    loop_flow,
    open_ws,
    post,
    recv,
    recv_until,
    small_window_socket,
    start_job,
    start_server,
    stored_events,
    wait_ended,
    wait_for_stored,
)

SEND_QUEUE = 10


@pytest.fixture(scope="module")
def ws_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(tmp_path_factory.mktemp("ws-slow"), ROUTILUX_WS_SEND_QUEUE=str(SEND_QUEUE))
    yield server
    server.stop()


def firehose_flow(flow_id: str, count: int, size: int) -> dict:
    return {"flow_id": flow_id, "routines": {"hose": {"class": "Firehose", "config": {"count": count, "size": size}}},
            "connections": []}


# single_process: it needs the server's own socket to the client to fill up. Behind a proxy (the
# cluster deployment's nginx) the proxy's socket buffers take megabytes of the flood, and how few
# events are left to drop is the kernel's business, not the server's.
@pytest.mark.single_process
async def test_a_slow_client_gets_a_gap_for_what_it_dropped_while_others_lose_nothing(
    ws_server: ServerProcess, rest: httpx.AsyncClient, uid: str
) -> None:
    # ~7.5 MB of events: more than the kernel buffers for a client that does not read.
    flow_id = await create_flow(rest, firehose_flow(f"ws-hose-{uid}", count=2500, size=3000))
    job_id = await start_job(rest, flow_id)
    await wait_for_stored(rest, job_id, 0, "job_idle")

    async with open_ws(ws_server, f"/api/ws/jobs/{job_id}/monitor",
                       sock=small_window_socket(ws_server), compression=None, max_queue=1) as slow, \
            open_ws(ws_server, f"/api/ws/jobs/{job_id}/monitor", compression=None) as fast:
        slow_snapshot, fast_snapshot = await recv(slow), await recv(fast)
        assert slow_snapshot["type"] == fast_snapshot["type"] == "snapshot"
        fast_reader = asyncio.create_task(recv_until(fast, job_end_of(job_id), 30))

        await post(rest, job_id, "hose", 1)
        # While the slow client lags, the API answers promptly.
        latencies = []
        produced = asyncio.create_task(wait_for_stored(rest, job_id, slow_snapshot["last_seq"] + 1, "job_idle", 30))
        while not produced.done():
            started = time.monotonic()
            health = await rest.get("/api/health")
            latencies.append(time.monotonic() - started)
            assert health.status_code == 200
            await asyncio.sleep(0.02)
        await produced
        await control(rest, job_id, "complete")
        fast_frames = await asyncio.wait_for(fast_reader, 30)
        # Only now does the slow client read.
        slow_frames = await recv_until(slow, job_end_of(job_id), 30)

    stored = await stored_events(rest, job_id, slow_snapshot["last_seq"])
    last = stored[-1]["seq"]
    assert max(latencies) < 1.0, f"GET /api/health took up to {max(latencies):.2f}s while a client lagged"

    assert fast_frames == stored, "the client that kept reading must get every event"

    gaps = [f for f in slow_frames if f["type"] == "gap"]
    assert len(gaps) == 1, gaps
    assert set(gaps[0]) == {"type", "job_id", "from_seq", "to_seq"} and gaps[0]["job_id"] == job_id
    assert_contiguous(coverage(slow_frames, job_id), slow_snapshot["last_seq"] + 1, last)
    by_seq = {e["seq"]: e for e in stored}
    assert all(f == by_seq[f["seq"]] for f in slow_frames if is_event(f))
    after_gap = slow_frames[slow_frames.index(gaps[0]) + 1:]
    assert 1 <= len(after_gap) <= SEND_QUEUE, "after the gap come only the newest queued events"
    assert after_gap == stored[-len(after_gap):]
    assert gaps[0]["to_seq"] - gaps[0]["from_seq"] + 1 >= 100, "most of the flood was dropped, not buffered"


async def test_a_client_that_keeps_reading_gets_a_burst_larger_than_the_queue_whole(
    ws_server: ServerProcess, rest: httpx.AsyncClient, uid: str
) -> None:
    """A routine that emits 30 items in one activation publishes ~60 events at once. The queue
    bounds how far a client may lag, not how many events one activation may publish: a client
    that is reading all along must not be told it lost any."""
    flow = {"flow_id": f"ws-burst-{uid}",
            "routines": {"source": {"class": "DataSource", "config": {"items": list(range(30))}},
                         "sink": {"class": "DataSink"}},
            "connections": [{"from": "source.output", "to": "sink.input"}]}
    flow_id = await create_flow(rest, flow)
    job_id = await start_job(rest, flow_id)
    await wait_for_stored(rest, job_id, 0, "job_idle")
    async with open_ws(ws_server, f"/api/ws/jobs/{job_id}/monitor") as ws:
        snapshot = await recv(ws)
        await post(rest, job_id, "source", "go", slot="trigger")
        await control(rest, job_id, "complete")
        frames = await recv_until(ws, job_end_of(job_id))
    assert [f for f in frames if f["type"] == "gap"] == []
    assert frames == await stored_events(rest, job_id, snapshot["last_seq"])


async def test_a_replay_longer_than_the_queue_arrives_whole(
    ws_server: ServerProcess, rest: httpx.AsyncClient, uid: str
) -> None:
    """Replaying history is not lagging: 60 stored events replay to a reading client in full."""
    flow_id = await create_flow(rest, loop_flow(f"ws-long-replay-{uid}"))
    job_id = await start_job(rest, flow_id, complete_when_idle=True,
                             entry={"routine_id": "loop", "slot_name": "input", "data": 15})
    await wait_ended(rest, job_id)
    stored = await stored_events(rest, job_id)
    assert len(stored) > 6 * SEND_QUEUE
    async with open_ws(ws_server, f"/api/ws/jobs/{job_id}/monitor?since=0") as ws:
        assert (await recv(ws))["type"] == "snapshot"
        frames = await recv_until(ws, job_end_of(job_id))
    assert frames == stored


async def test_every_client_of_a_steady_job_gets_everything(
    ws_server: ServerProcess, rest: httpx.AsyncClient, uid: str
) -> None:
    """The small queue is no problem for clients that keep up with a steady producer."""
    flow_id = await create_flow(rest, loop_flow(f"ws-steady-{uid}"))
    job_id = await start_job(rest, flow_id)
    await wait_for_stored(rest, job_id, 0, "job_idle")
    async with open_ws(ws_server, f"/api/ws/jobs/{job_id}/monitor") as a, \
            open_ws(ws_server, f"/api/ws/jobs/{job_id}/monitor") as b, \
            open_ws(ws_server, f"/api/ws/flows/{flow_id}/monitor") as c:
        snapshot = await recv(a)
        assert (await recv(b)) == snapshot
        readers = [asyncio.create_task(recv_until(ws, job_end_of(job_id), 20)) for ws in (a, b, c)]
        await post(rest, job_id, "loop", 300)
        await wait_for_stored(rest, job_id, snapshot["last_seq"] + 1, "job_idle", 20)
        await control(rest, job_id, "complete")
        results: list[list[Frame]] = await asyncio.wait_for(asyncio.gather(*readers), 20)
    stored = await stored_events(rest, job_id, snapshot["last_seq"])
    assert len(stored) > 1000
    for frames in results:
        assert frames == stored

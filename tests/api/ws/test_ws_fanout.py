"""Fair fan-out over a real server: what all sockets may hold together is capped
(``ROUTILUX_WS_MAX_QUEUED_BYTES``), and past the cap the client furthest behind is closed with
1013 and a reason, while a client that keeps up is untouched.

Many sockets at once — every stream consistent, the job not held up by sockets that do not read,
the API answering during the burst — is the bounded run of the fan-out bench,
``tests/bench/test_fanout_bench.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.servers import ServerProcess
from tests.support.ws import (
    assert_contiguous,
    control,
    coverage,
    create_flow,
    expect_close,
    job_end_of,
    open_ws,
    paced_loop_flow,
    post,
    recv,
    recv_until,
    small_window_socket,
    start_job,
    start_server,
    stored_events,
    wait_for_stored,
)

CAP = 262_144  # bytes held for all sockets together


@pytest.fixture(scope="module")
def ws_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(tmp_path_factory.mktemp("ws-fanout"), ROUTILUX_WS_MAX_QUEUED_BYTES=str(CAP))
    yield server
    server.stop()


async def wait_for_open_sockets(rest: httpx.AsyncClient, count: int, timeout: float) -> None:
    """Poll ``/metrics`` until the server has ``count`` WebSocket sessions open."""
    deadline = time.monotonic() + timeout
    while True:
        text = (await rest.get("/metrics")).text
        line = next(line for line in text.splitlines() if line.startswith("routilux_websocket_clients "))
        if float(line.split()[1]) == count:
            return
        assert time.monotonic() < deadline, f"{line} after {timeout}s, not {count}"
        await asyncio.sleep(0.05)


def firehose_flow(flow_id: str, count: int, size: int) -> dict:
    return {"flow_id": flow_id, "routines": {"hose": {"class": "Firehose", "config": {"count": count, "size": size}}},
            "connections": []}


# single_process: the client that stops reading must stop the server's own writes; behind a proxy
# the proxy's buffers would take the flood instead (see test_ws_backpressure).
@pytest.mark.single_process
async def test_past_the_cap_the_client_furthest_behind_is_closed_with_1013_and_the_others_go_on(
    ws_server: ServerProcess, rest: httpx.AsyncClient, uid: str
) -> None:
    # A client that never reads, on a job publishing ~7.5 MB; it holds its newest 1,000 events
    # (ROUTILUX_WS_SEND_QUEUE) of ~3 KB: far past the cap. Another client reads a steady job.
    hose_flow = await create_flow(rest, firehose_flow(f"fan-hose-{uid}", count=2500, size=3000))
    hose = await start_job(rest, hose_flow)
    steady_flow = await create_flow(rest, paced_loop_flow(f"fan-steady-{uid}"))
    steady = await start_job(rest, steady_flow)
    await wait_for_stored(rest, hose, 0, "job_idle")
    await wait_for_stored(rest, steady, 0, "job_idle")

    async with open_ws(ws_server, f"/api/ws/jobs/{hose}/monitor",
                       sock=small_window_socket(ws_server), compression=None, max_queue=1) as sleeper, \
            open_ws(ws_server, f"/api/ws/jobs/{steady}/monitor") as reader:
        sleeper_snapshot, reader_snapshot = await recv(sleeper), await recv(reader)
        reading = asyncio.create_task(recv_until(reader, job_end_of(steady), 60))
        await post(rest, steady, "loop", 400)
        await post(rest, hose, "hose", 1)
        await wait_for_open_sockets(rest, 1, 60)  # the server closed one of them
        # Only now does the sleeper read: what was already on its way, then the close.
        code, reason, before_close = await expect_close(sleeper, 30)
        await wait_for_stored(rest, steady, reader_snapshot["last_seq"] + 1, "job_idle", 60)
        await control(rest, steady, "complete")
        frames = await asyncio.wait_for(reading, 60)

    assert code == 1013, (code, reason)
    assert "behind" in reason and len(reason.encode()) <= 123
    got = coverage(before_close, hose)
    if got:  # what it did get before the close is its job's events in order, with exact gaps
        assert_contiguous(got, sleeper_snapshot["last_seq"] + 1, got[-1][1])
    stored = await stored_events(rest, steady, reader_snapshot["last_seq"])
    assert frames == stored, "the client that kept up got every event of its job"
    assert_contiguous(coverage(frames, steady), reader_snapshot["last_seq"] + 1, stored[-1]["seq"])

"""Replay: a client that reconnects with ``since`` misses nothing and sees nothing twice.

A job keeps producing while the client is away; reconnecting with ``?since=<last seq seen>``
(or ``"since"`` in a generic ``subscribe``) sends exactly the missed events, then the live ones,
so the two connections together equal the job's event list from ``GET /api/jobs/{id}/events``.
When the history asked for is gone (memory keeps ``ROUTILUX_HISTORY_PER_JOB`` events per job,
the store ``ROUTILUX_EVENTS_PER_JOB``) a ``gap`` frame names exactly what is not coming.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.support.servers import ServerProcess
from tests.support.ws import (
    DEBUG_TYPES,
    Frame,
    assert_contiguous,
    chatty_flow,
    coverage,
    create_flow,
    is_event,
    job_end_of,
    loop_flow,
    open_ws,
    paced_loop_flow,
    ping_pong,
    recv,
    recv_events,
    recv_until,
    send,
    start_job,
    start_server,
    stored_events,
    wait_ended,
    wait_for_seq,
)

# A busy job: about 10 events per loop turn, a turn every 2 ms at most, 900 turns (so it lasts
# at least 1.8 s and stays below the store's 10,000 events per job). Tests cancel it sooner.
TURNS = 900


async def busy_job(rest: httpx.AsyncClient, flow_id: str, delay: float = 0.002) -> str:
    await create_flow(rest, paced_loop_flow(flow_id, delay=delay))
    return await start_job(rest, flow_id, entry={"routine_id": "loop", "slot_name": "input", "data": TURNS})


async def cancel(rest: httpx.AsyncClient, job_id: str) -> None:
    """Cancel the job, unless it has already ended by itself."""
    response = await rest.post(f"/api/jobs/{job_id}/cancel")
    assert response.status_code in (200, 409), response.text


async def read_past_live_then_cancel(ws, rest: httpx.AsyncClient, job_id: str, snapshot: Frame) -> list[Frame]:
    """Read until well past what the job had published at subscription (the live part), then
    cancel the job and read up to its ``job_end``."""
    frames = await recv_until(ws, lambda f: is_event(f) and f["seq"] >= snapshot["last_seq"] + 300, 20)
    await cancel(rest, job_id)
    return frames + await recv_until(ws, job_end_of(job_id), 20)


# -- a busy job, a disconnect, a reconnect --------------------------------------------------------
@pytest.mark.parametrize("missed", [300, 1200], ids=["missed-300", "missed-1200-more-than-memory-and-the-send-queue"])
async def test_reconnecting_with_since_gives_exactly_the_missed_events_then_live_ones(
    ws_server: ServerProcess, rest: httpx.AsyncClient, uid: str, missed: int
) -> None:
    job_id = await busy_job(rest, f"ws-replay-{missed}-{uid}")
    async with open_ws(ws_server, f"/api/ws/jobs/{job_id}/monitor?since=0") as ws:
        assert (await recv(ws))["type"] == "snapshot"
        first = await recv_events(ws, 200)
    seen = first[-1]["seq"]
    await wait_for_seq(rest, job_id, seen + missed)  # the job went on without us

    async with open_ws(ws_server, f"/api/ws/jobs/{job_id}/monitor?since={seen}") as ws:
        snapshot = await recv(ws)
        assert snapshot["type"] == "snapshot" and snapshot["status"] == "running"
        assert snapshot["last_seq"] >= seen + missed
        second = await read_past_live_then_cancel(ws, rest, job_id, snapshot)

    everything = await stored_events(rest, job_id)
    assert [e["seq"] for e in everything] == list(range(1, len(everything) + 1))
    gaps = [f for f in second if f["type"] == "gap"]
    assert gaps == [], f"the history was all there, yet the replay reported {gaps}"
    assert [f["seq"] for f in first + second] == [e["seq"] for e in everything]
    assert first + second == everything


async def test_a_generic_subscribe_with_since_resumes_exactly_where_the_client_left(
    ws_server: ServerProcess, rest: httpx.AsyncClient, uid: str
) -> None:
    job_id = await busy_job(rest, f"ws-replay-generic-{uid}")
    async with open_ws(ws_server, "/api/ws") as ws:
        await send(ws, {"type": "subscribe", "job_id": job_id, "since": 0})
        assert await recv(ws) == {"type": "subscribed", "job_id": job_id}
        assert (await recv(ws))["type"] == "snapshot"
        first = await recv_events(ws, 150)
    seen = first[-1]["seq"]
    await wait_for_seq(rest, job_id, seen + 300)

    async with open_ws(ws_server, "/api/ws") as ws:
        await send(ws, {"type": "subscribe", "job_id": job_id, "since": seen})
        assert await recv(ws) == {"type": "subscribed", "job_id": job_id}
        snapshot = await recv(ws)
        assert snapshot["type"] == "snapshot" and snapshot["last_seq"] >= seen + 300
        second = await read_past_live_then_cancel(ws, rest, job_id, snapshot)

    assert first + second == await stored_events(rest, job_id)


async def test_the_debug_socket_replays_only_debugger_events(
    ws_server: ServerProcess, rest: httpx.AsyncClient, uid: str
) -> None:
    flow_id = await create_flow(rest, chatty_flow(f"ws-dbg-replay-{uid}"))
    job_id = await start_job(rest, flow_id, complete_when_idle=True,
                             entry={"routine_id": "chatty", "slot_name": "input", "data": "x"})
    await wait_ended(rest, job_id)
    stored = await stored_events(rest, job_id)
    assert {"job_start", "log", "progress", "event_emit"} <= {e["type"] for e in stored}
    async with open_ws(ws_server, f"/api/ws/jobs/{job_id}/debug?since=0") as ws:
        assert (await recv(ws))["type"] == "snapshot"
        frames = await recv_until(ws, job_end_of(job_id))
        assert await ping_pong(ws) == []
    assert [f["type"] for f in frames] == [e["type"] for e in stored if e["type"] in DEBUG_TYPES]
    assert frames == [e for e in stored if e["type"] in DEBUG_TYPES]


async def test_replay_after_the_last_event_sends_nothing_old(
    ws_server: ServerProcess, rest: httpx.AsyncClient, uid: str
) -> None:
    flow_id = await create_flow(rest, loop_flow(f"ws-replay-end-{uid}"))
    job_id = await start_job(rest, flow_id, complete_when_idle=True,
                             entry={"routine_id": "loop", "slot_name": "input", "data": 3})
    await wait_ended(rest, job_id)
    last = (await stored_events(rest, job_id))[-1]["seq"]
    for since in (last, last + 1000):
        async with open_ws(ws_server, f"/api/ws/jobs/{job_id}/monitor?since={since}") as ws:
            assert (await recv(ws))["type"] == "snapshot"
            assert await ping_pong(ws) == []


# -- history that is gone -------------------------------------------------------------------------
HISTORY_PER_JOB = 10
EVENTS_PER_JOB = 100


@pytest.fixture(scope="module")
def tiny_history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(
        tmp_path_factory.mktemp("ws-tiny"),
        ROUTILUX_HISTORY_PER_JOB=str(HISTORY_PER_JOB),
        ROUTILUX_EVENTS_PER_JOB=str(EVENTS_PER_JOB),
    )
    yield server
    server.stop()


@pytest.fixture
async def tiny_rest(tiny_history: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=tiny_history.url, timeout=30) as http:
        yield http


async def long_finished_job(rest: httpx.AsyncClient, flow_id: str) -> tuple[str, list[Frame]]:
    """A finished job with about 400 events, of which the store keeps the newest 100."""
    await create_flow(rest, loop_flow(flow_id))
    job_id = await start_job(rest, flow_id, complete_when_idle=True,
                             entry={"routine_id": "loop", "slot_name": "input", "data": 100})
    await wait_ended(rest, job_id)
    last = (await rest.get(f"/api/jobs/{job_id}/status")).json()["last_seq"]
    retained = await stored_events(rest, job_id)
    assert last is not None and last > 3 * EVENTS_PER_JOB
    assert [e["seq"] for e in retained] == list(range(last - EVENTS_PER_JOB + 1, last + 1)), (
        f"ROUTILUX_EVENTS_PER_JOB={EVENTS_PER_JOB}: the store should keep seqs {last - EVENTS_PER_JOB + 1}..{last}, "
        f"it keeps {retained[0]['seq']}..{retained[-1]['seq']} ({len(retained)} events)"
    )
    return job_id, retained


@pytest.mark.parametrize("since", [0, 5])
async def test_replay_of_history_that_is_gone_starts_with_a_gap_then_the_retained_events(
    tiny_history: ServerProcess, tiny_rest: httpx.AsyncClient, uid: str, since: int
) -> None:
    job_id, retained = await long_finished_job(tiny_rest, f"ws-gone-{since}-{uid}")
    async with open_ws(tiny_history, f"/api/ws/jobs/{job_id}/monitor?since={since}") as ws:
        assert (await recv(ws))["type"] == "snapshot"
        frames = await recv_until(ws, job_end_of(job_id))
    assert frames[0] == {"type": "gap", "job_id": job_id, "from_seq": since + 1, "to_seq": retained[0]["seq"] - 1}
    assert frames[1:] == retained


async def test_a_generic_subscribe_with_since_reports_the_same_gap(
    tiny_history: ServerProcess, tiny_rest: httpx.AsyncClient, uid: str
) -> None:
    job_id, retained = await long_finished_job(tiny_rest, f"ws-gone-generic-{uid}")
    async with open_ws(tiny_history, "/api/ws") as ws:
        await send(ws, {"type": "subscribe", "job_id": job_id, "since": 0})
        assert await recv(ws) == {"type": "subscribed", "job_id": job_id}
        assert (await recv(ws))["type"] == "snapshot"
        frames = await recv_until(ws, job_end_of(job_id))
    assert frames == [{"type": "gap", "job_id": job_id, "from_seq": 1, "to_seq": retained[0]["seq"] - 1}, *retained]


async def test_replay_from_the_store_then_memory_has_no_gap(
    tiny_history: ServerProcess, tiny_rest: httpx.AsyncClient, uid: str
) -> None:
    """Older than the 10 events in memory but within the store: read from both, seamlessly."""
    flow_id = await create_flow(tiny_rest, loop_flow(f"ws-kept-{uid}"))
    job_id = await start_job(tiny_rest, flow_id, complete_when_idle=True,
                             entry={"routine_id": "loop", "slot_name": "input", "data": 30})
    await wait_ended(tiny_rest, job_id)
    stored = await stored_events(tiny_rest, job_id)
    since = stored[-60]["seq"]
    async with open_ws(tiny_history, f"/api/ws/jobs/{job_id}/monitor?since={since}") as ws:
        assert (await recv(ws))["type"] == "snapshot"
        frames = await recv_until(ws, job_end_of(job_id))
    assert frames == stored[-59:]


async def test_replay_of_a_busy_job_with_tiny_history_accounts_for_every_seq_exactly_once(
    tiny_history: ServerProcess, tiny_rest: httpx.AsyncClient, uid: str
) -> None:
    """Memory holds 10 events, the store 100, the job adds thousands a second: whatever is
    replayed, reported lost and streamed live must tile since+1..last without a hole or an
    overlap (a gap frame is acceptable, a silent hole is not)."""
    # Paced slower (at least 5.4 s) so that it outlives the three reconnects below, each of which
    # reads 200 live events, even on a loaded machine or through a cluster.
    job_id = await busy_job(tiny_rest, f"ws-tiny-busy-{uid}", delay=0.006)
    await wait_for_seq(tiny_rest, job_id, 1000)
    for back in (600, 250, 30):
        since = (await tiny_rest.get(f"/api/jobs/{job_id}/status")).json()["last_seq"] - back
        async with open_ws(tiny_history, f"/api/ws/jobs/{job_id}/monitor?since={since}") as ws:
            snapshot = await recv(ws)
            until = snapshot["last_seq"] + 200
            frames = await recv_until(ws, lambda f, until=until: is_event(f) and f["seq"] >= until, 20)
        assert_contiguous(coverage(frames, job_id), since + 1, frames[-1]["seq"])
    async with open_ws(tiny_history, f"/api/ws/jobs/{job_id}/monitor?since=0") as ws:
        await recv(ws)
        await cancel(tiny_rest, job_id)
        frames = await recv_until(ws, job_end_of(job_id), 20)
    assert_contiguous(coverage(frames, job_id), 1, frames[-1]["seq"])
    stored = {e["seq"]: e for e in await stored_events(tiny_rest, job_id)}
    assert all(f == stored[f["seq"]] for f in frames if is_event(f) and f["seq"] in stored)

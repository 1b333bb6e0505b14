"""The four sockets and what each streams, against the default server.

- ``/api/ws/jobs/{id}/monitor``: a ``snapshot``, then every event of the job.
- ``/api/ws/jobs/{id}/debug``: a ``snapshot``, then only the debugger's event types.
- ``/api/ws/flows/{id}/monitor``: every event of every job of the flow, started before or after.
- ``/api/ws``: ``subscribe``/``unsubscribe`` jobs and flows by message, many on one socket.

Frames are the bus events exactly as ``GET /api/jobs/{id}/events`` returns them, one JSON object
per text frame; unknown ids close the socket with 1008.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.support.servers import ServerProcess
from tests.support.ws import (
    DEBUG_TYPES,
    SNAPSHOT_KEYS,
    Frame,
    assert_event_shape,
    chatty_flow,
    control,
    create_flow,
    expect_close,
    is_event,
    job_end_of,
    job_status,
    open_ws,
    ping_pong,
    post,
    recv,
    recv_until,
    relay_flow,
    send,
    start_job,
    stored_events,
    wait_ended,
    wait_for_stored,
)


async def idle_job(rest: httpx.AsyncClient, flow_id: str) -> str:
    """A job of ``flow_id`` that has started and waits for posts (status ``idle``)."""
    job_id = await start_job(rest, flow_id)
    await wait_for_stored(rest, job_id, 0, "job_idle")
    return job_id


def events_of(frames: list[Frame], job_id: str) -> list[Frame]:
    return [f for f in frames if is_event(f) and f["job_id"] == job_id]


# -- job monitor ----------------------------------------------------------------------------------
async def test_job_monitor_sends_a_snapshot_then_every_event_of_the_job(
    ws_server: ServerProcess, rest: httpx.AsyncClient, uid: str
) -> None:
    flow_id = await create_flow(rest, relay_flow(f"ws-mon-{uid}"))
    job_id = await idle_job(rest, flow_id)
    state = (await rest.get(f"/api/jobs/{job_id}/state")).json()
    last_seq = (await job_status(rest, job_id))["last_seq"]

    async with open_ws(ws_server, f"/api/ws/jobs/{job_id}/monitor") as ws:
        snapshot = await recv(ws)
        assert set(snapshot) == SNAPSHOT_KEYS
        assert snapshot == {
            "type": "snapshot", "job_id": job_id, "flow_id": flow_id, "status": "idle",
            "last_seq": last_seq, "routine_states": state["routine_states"], "error": None, "error_detail": None,
        }
        await post(rest, job_id, "relay", "a")
        await post(rest, job_id, "relay", "b")
        await control(rest, job_id, "complete")
        frames = await recv_until(ws, job_end_of(job_id))

    stored = await stored_events(rest, job_id)
    assert [e["seq"] for e in stored] == list(range(1, len(stored) + 1))
    assert frames == [e for e in stored if e["seq"] > last_seq]  # every event, in order, as stored
    for frame in frames:
        assert_event_shape(frame, job_id, flow_id)
    assert frames[-1]["data"]["status"] == "completed"
    assert [f["data"]["data"] for f in frames if f["type"] == "slot_call" and f["routine_id"] == "relay"] == [
        {"data": "a"}, {"data": "b"}]


async def test_job_monitor_without_since_starts_after_the_snapshot_and_with_since_0_replays_everything(
    ws_server: ServerProcess, rest: httpx.AsyncClient, uid: str
) -> None:
    flow_id = await create_flow(rest, relay_flow(f"ws-since-{uid}"))
    job_id = await idle_job(rest, flow_id)
    mark = (await job_status(rest, job_id))["last_seq"]
    await post(rest, job_id, "relay", 1)
    await wait_for_stored(rest, job_id, mark, "job_idle")
    before = await stored_events(rest, job_id)

    async with open_ws(ws_server, f"/api/ws/jobs/{job_id}/monitor") as live, \
            open_ws(ws_server, f"/api/ws/jobs/{job_id}/monitor?since=0") as replaying:
        live_snapshot, replay_snapshot = await recv(live), await recv(replaying)
        assert live_snapshot["type"] == replay_snapshot["type"] == "snapshot"
        assert live_snapshot["last_seq"] == replay_snapshot["last_seq"] == before[-1]["seq"]
        await post(rest, job_id, "relay", 2)
        await control(rest, job_id, "complete")
        live_frames = await recv_until(live, job_end_of(job_id))
        replayed_frames = await recv_until(replaying, job_end_of(job_id))

    stored = await stored_events(rest, job_id)
    assert replayed_frames == stored
    assert live_frames == stored[len(before):]


# -- debug ----------------------------------------------------------------------------------------
async def test_debug_socket_streams_only_routine_slot_and_job_control_events(
    ws_server: ServerProcess, rest: httpx.AsyncClient, uid: str
) -> None:
    flow_id = await create_flow(rest, chatty_flow(f"ws-dbg-{uid}"))
    job_id = await idle_job(rest, flow_id)
    async with open_ws(ws_server, f"/api/ws/jobs/{job_id}/debug") as ws:
        snapshot = await recv(ws)
        assert snapshot["type"] == "snapshot" and snapshot["job_id"] == job_id and snapshot["status"] == "idle"
        await post(rest, job_id, "chatty", "x")
        await post(rest, job_id, "chatty", "y")
        await wait_for_stored(rest, job_id, snapshot["last_seq"] + 1, "job_idle")
        await control(rest, job_id, "pause")
        await control(rest, job_id, "resume")
        await control(rest, job_id, "complete")
        frames = await recv_until(ws, job_end_of(job_id))

    stored = [e for e in await stored_events(rest, job_id) if e["seq"] > snapshot["last_seq"]]
    assert {"log", "progress", "event_emit", "job_idle"} <= {e["type"] for e in stored}  # there was more
    assert frames == [e for e in stored if e["type"] in DEBUG_TYPES]
    assert {"routine_start", "routine_end", "slot_call", "job_pause", "job_resume", "job_end"} == {
        f["type"] for f in frames}


# -- flow monitor ---------------------------------------------------------------------------------
async def test_flow_monitor_streams_every_job_of_the_flow_including_jobs_started_later(
    ws_server: ServerProcess, rest: httpx.AsyncClient, uid: str
) -> None:
    flow_id = await create_flow(rest, relay_flow(f"ws-flow-{uid}"))
    other_flow = await create_flow(rest, relay_flow(f"ws-flow-other-{uid}"))
    earlier = await idle_job(rest, flow_id)
    earlier_seen = (await job_status(rest, earlier))["last_seq"]

    async with open_ws(ws_server, f"/api/ws/flows/{flow_id}/monitor") as ws:
        later = await start_job(rest, flow_id)
        outsider = await start_job(rest, other_flow)
        for job_id in (earlier, later, outsider):
            await post(rest, job_id, "relay", job_id)
        await control(rest, outsider, "complete")
        await wait_ended(rest, outsider)  # its events are all published before the others end
        await control(rest, earlier, "complete")
        await control(rest, later, "complete")
        frames = await recv_until(ws, job_end_of(earlier))
        if not any(f["type"] == "job_end" and f["job_id"] == later for f in frames):
            frames += await recv_until(ws, job_end_of(later))

    assert all(is_event(f) for f in frames), [f for f in frames if not is_event(f)]
    assert {f["job_id"] for f in frames} == {earlier, later}
    assert {f["flow_id"] for f in frames} == {flow_id}
    assert events_of(frames, later) == await stored_events(rest, later)  # from its job_start on
    assert events_of(frames, earlier) == await stored_events(rest, earlier, earlier_seen)


# -- generic --------------------------------------------------------------------------------------
async def test_generic_subscribe_to_a_job_replies_subscribed_then_a_snapshot_then_its_events(
    ws_server: ServerProcess, rest: httpx.AsyncClient, uid: str
) -> None:
    flow_id = await create_flow(rest, relay_flow(f"ws-gen-job-{uid}"))
    job_id = await idle_job(rest, flow_id)
    async with open_ws(ws_server, "/api/ws") as ws:
        await send(ws, {"type": "subscribe", "job_id": job_id})
        assert await recv(ws) == {"type": "subscribed", "job_id": job_id}
        snapshot = await recv(ws)
        assert set(snapshot) == SNAPSHOT_KEYS and snapshot["job_id"] == job_id and snapshot["status"] == "idle"
        await post(rest, job_id, "relay", "hello")
        await control(rest, job_id, "complete")
        frames = await recv_until(ws, job_end_of(job_id))
    assert frames == await stored_events(rest, job_id, snapshot["last_seq"])


async def test_generic_subscribe_to_a_flow_follows_its_new_jobs(
    ws_server: ServerProcess, rest: httpx.AsyncClient, uid: str
) -> None:
    flow_id = await create_flow(rest, relay_flow(f"ws-gen-flow-{uid}"))
    async with open_ws(ws_server, "/api/ws") as ws:
        await send(ws, {"type": "subscribe", "flow_id": flow_id})
        assert await recv(ws) == {"type": "subscribed", "flow_id": flow_id}
        job_id = await start_job(rest, flow_id, complete_when_idle=True,
                                 entry={"routine_id": "relay", "slot_name": "input", "data": 1})
        frames = await recv_until(ws, job_end_of(job_id))
    assert frames == await stored_events(rest, job_id)


async def test_generic_unsubscribe_stops_that_job_and_only_that_job(
    ws_server: ServerProcess, rest: httpx.AsyncClient, uid: str
) -> None:
    flow_id = await create_flow(rest, relay_flow(f"ws-unsub-{uid}"))
    dropped, kept = await idle_job(rest, flow_id), await idle_job(rest, flow_id)
    snapshots: dict[str, Frame] = {}
    async with open_ws(ws_server, "/api/ws") as ws:
        for job_id in (dropped, kept):
            await send(ws, {"type": "subscribe", "job_id": job_id})
            assert await recv(ws) == {"type": "subscribed", "job_id": job_id}
            snapshots[job_id] = await recv(ws)
            assert snapshots[job_id]["type"] == "snapshot"
        await post(rest, dropped, "relay", "seen")
        first = await recv_until(ws, lambda f: f.get("type") == "job_idle" and f["job_id"] == dropped)
        assert {f["job_id"] for f in first} == {dropped}

        await send(ws, {"type": "unsubscribe", "job_id": dropped})
        assert await recv(ws) == {"type": "unsubscribed", "job_id": dropped}
        mark = first[-1]["seq"]
        await post(rest, dropped, "relay", "not seen")
        await wait_for_stored(rest, dropped, mark, "job_idle")
        await post(rest, kept, "relay", "barrier")  # published after everything of `dropped`
        after = await recv_until(ws, lambda f: f.get("type") == "job_idle" and f["job_id"] == kept)
    assert {f["job_id"] for f in after} == {kept}
    assert after == await stored_events(rest, kept, snapshots[kept]["last_seq"])


async def test_one_generic_socket_carries_several_jobs_and_flows_each_complete_and_in_order(
    ws_server: ServerProcess, rest: httpx.AsyncClient, uid: str
) -> None:
    jobs_flow = await create_flow(rest, relay_flow(f"ws-multi-a-{uid}"))
    watched_flow = await create_flow(rest, relay_flow(f"ws-multi-b-{uid}"))
    first, second = await idle_job(rest, jobs_flow), await idle_job(rest, jobs_flow)
    seen_from: dict[str, int] = {}
    async with open_ws(ws_server, "/api/ws") as ws:
        for job_id in (first, second):
            await send(ws, {"type": "subscribe", "job_id": job_id})
            assert await recv(ws) == {"type": "subscribed", "job_id": job_id}
            seen_from[job_id] = (await recv(ws))["last_seq"]
        await send(ws, {"type": "subscribe", "flow_id": watched_flow})
        assert await recv(ws) == {"type": "subscribed", "flow_id": watched_flow}

        third = await start_job(rest, watched_flow)
        seen_from[third] = 0
        for job_id in (first, second, third):
            await post(rest, job_id, "relay", 1)
            await post(rest, job_id, "relay", 2)
        for job_id in (first, second, third):
            await control(rest, job_id, "complete")
        ended: set[str] = set()
        frames: list[Frame] = []
        while ended != {first, second, third}:
            frames += await recv_until(ws, lambda f: f.get("type") == "job_end")
            ended.add(frames[-1]["job_id"])
        for job_id in (first, second, third):
            assert events_of(frames, job_id) == await stored_events(rest, job_id, seen_from[job_id]), job_id
        assert all(is_event(f) for f in frames)

        # Unsubscribed from the flow, its next job is not streamed; a job subscribed next is.
        await send(ws, {"type": "unsubscribe", "flow_id": watched_flow})
        assert await recv(ws) == {"type": "unsubscribed", "flow_id": watched_flow}
        unseen = await start_job(rest, watched_flow, complete_when_idle=True,
                                 entry={"routine_id": "relay", "slot_name": "input", "data": 3})
        await wait_ended(rest, unseen)
        barrier = await idle_job(rest, jobs_flow)
        await send(ws, {"type": "subscribe", "job_id": barrier})
        assert await recv(ws) == {"type": "subscribed", "job_id": barrier}
        assert (await recv(ws))["type"] == "snapshot"
        await control(rest, barrier, "complete")
        tail = await recv_until(ws, job_end_of(barrier))
    assert {f["job_id"] for f in tail} == {barrier}


async def test_a_job_subscribed_both_directly_and_through_its_flow_gets_each_event_once(
    ws_server: ServerProcess, rest: httpx.AsyncClient, uid: str
) -> None:
    flow_id = await create_flow(rest, relay_flow(f"ws-both-{uid}"))
    job_id = await idle_job(rest, flow_id)
    async with open_ws(ws_server, "/api/ws") as ws:
        await send(ws, {"type": "subscribe", "flow_id": flow_id})
        assert await recv(ws) == {"type": "subscribed", "flow_id": flow_id}
        await send(ws, {"type": "subscribe", "job_id": job_id})
        assert await recv(ws) == {"type": "subscribed", "job_id": job_id}
        snapshot = await recv(ws)
        await post(rest, job_id, "relay", 1)
        await control(rest, job_id, "complete")
        frames = await recv_until(ws, job_end_of(job_id))
    assert frames == await stored_events(rest, job_id, snapshot["last_seq"])


# -- after the end, and unknown ids ---------------------------------------------------------------
@pytest.mark.parametrize("kind", ["monitor", "debug"])
async def test_a_job_socket_sends_job_end_and_stays_open(
    ws_server: ServerProcess, rest: httpx.AsyncClient, uid: str, kind: str
) -> None:
    flow_id = await create_flow(rest, relay_flow(f"ws-end-{kind}-{uid}"))
    job_id = await idle_job(rest, flow_id)
    async with open_ws(ws_server, f"/api/ws/jobs/{job_id}/{kind}") as ws:
        assert (await recv(ws))["type"] == "snapshot"
        await control(rest, job_id, "cancel")
        frames = await recv_until(ws, job_end_of(job_id))
        assert frames[-1]["data"]["status"] == "cancelled"
        await asyncio.sleep(0.5)  # "a bit later": nothing to await but time itself
        assert await ping_pong(ws) == []  # still open, and nothing came after job_end
    # an already finished job can be watched too: snapshot of the final state, then silence
    async with open_ws(ws_server, f"/api/ws/jobs/{job_id}/{kind}") as ws:
        snapshot = await recv(ws)
        assert snapshot["type"] == "snapshot" and snapshot["status"] == "cancelled"
        assert await ping_pong(ws) == []


@pytest.mark.parametrize(
    ("path", "reason_mentions"),
    [
        ("/api/ws/jobs/no-such-job/monitor", "no-such-job"),
        ("/api/ws/jobs/no-such-job/debug", "no-such-job"),
        ("/api/ws/flows/no-such-flow/monitor", "no-such-flow"),
        ("/api/ws/jobs/bad!id/monitor", "bad!id"),
        ("/api/ws/flows/bad!id/monitor", "bad!id"),
    ],
)
async def test_unknown_ids_close_with_1008_and_a_reason(
    ws_server: ServerProcess, path: str, reason_mentions: str
) -> None:
    async with open_ws(ws_server, path) as ws:
        code, reason, frames = await expect_close(ws)
    assert (code, frames) == (1008, [])
    assert reason_mentions in reason


@pytest.mark.parametrize("since", ["abc", "-1", "1.5"])
async def test_a_bad_since_on_a_job_socket_closes_with_1008(
    ws_server: ServerProcess, rest: httpx.AsyncClient, uid: str, since: str
) -> None:
    flow_id = await create_flow(rest, relay_flow(f"ws-badsince-{since.replace('.', '_')}-{uid}"))
    job_id = await idle_job(rest, flow_id)
    async with open_ws(ws_server, f"/api/ws/jobs/{job_id}/monitor?since={since}") as ws:
        code, reason, frames = await expect_close(ws)
    assert (code, frames) == (1008, [])
    assert "since" in reason


async def test_a_job_socket_answers_ping_and_refuses_other_messages_without_closing(
    ws_server: ServerProcess, rest: httpx.AsyncClient, uid: str
) -> None:
    flow_id = await create_flow(rest, relay_flow(f"ws-jobmsg-{uid}"))
    job_id = await idle_job(rest, flow_id)
    async with open_ws(ws_server, f"/api/ws/jobs/{job_id}/monitor") as ws:
        assert (await recv(ws))["type"] == "snapshot"
        await send(ws, {"type": "subscribe", "job_id": job_id})
        error = await recv(ws)
        assert error["type"] == "error" and error["error"] == "unknown_type" and error["message"]
        assert await ping_pong(ws) == []
        await post(rest, job_id, "relay", 1)
        frames = await recv_until(ws, lambda f: f.get("type") == "job_idle")
        assert all(is_event(f) for f in frames)

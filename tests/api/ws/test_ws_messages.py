"""What the generic socket ``/api/ws`` does with messages it cannot act on: each gets one
``{"type": "error", "error": <code>, "message": <sentence>}`` frame (naming the id when there is
one) and the socket stays open and usable — except a message over the size limit, which closes it
with 1009 (the server refuses it from the frame's header, before reading it).

The server here allows 2 subscriptions per socket and messages of at most 256 bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.support.servers import ServerProcess
from tests.support.ws import (
    Frame,
    control,
    create_flow,
    expect_close,
    is_event,
    job_end_of,
    open_ws,
    ping_pong,
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

MAX_SUBSCRIPTIONS = 2
MAX_MESSAGE_BYTES = 256


@pytest.fixture(scope="module")
def ws_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(
        tmp_path_factory.mktemp("ws-limits"),
        ROUTILUX_WS_MAX_SUBSCRIPTIONS=str(MAX_SUBSCRIPTIONS),
        ROUTILUX_WS_MAX_MESSAGE_BYTES=str(MAX_MESSAGE_BYTES),
    )
    yield server
    server.stop()


async def idle_job(rest: httpx.AsyncClient, flow_id: str) -> str:
    job_id = await start_job(rest, flow_id)
    await wait_for_stored(rest, job_id, 0, "job_idle")
    return job_id


def assert_error(frame: Frame, code: str, **ids: str) -> None:
    assert frame["type"] == "error", frame
    assert frame["error"] == code, frame
    assert isinstance(frame["message"], str) and frame["message"], frame
    assert set(frame) == {"type", "error", "message", *ids}, frame
    assert all(frame[k] == v for k, v in ids.items()), frame


# (message, expected error code); "{job}"/"{flow}" stand for a real job/flow id
MALFORMED = [
    ("not json", "invalid_json"),
    ("", "invalid_json"),
    ("{\"type\": \"subscribe\", ", "invalid_json"),
    ("[1, 2]", "invalid_message"),
    ("\"subscribe\"", "invalid_message"),
    ("null", "invalid_message"),
    ('{"job_id": "{job}"}', "invalid_message"),
    ('{"type": 5}', "invalid_message"),
    ('{"type": "dance"}', "unknown_type"),
    ('{"type": "subscribe"}', "invalid_message"),
    ('{"type": "unsubscribe"}', "invalid_message"),
    ('{"type": "subscribe", "job_id": "{job}", "flow_id": "{flow}"}', "invalid_message"),
    ('{"type": "subscribe", "job_id": null, "flow_id": null}', "invalid_message"),
    ('{"type": "subscribe", "job_id": "bad id!"}', "invalid_id"),
    ('{"type": "subscribe", "job_id": 123}', "invalid_id"),
    ('{"type": "subscribe", "flow_id": ""}', "invalid_id"),
    ('{"type": "subscribe", "job_id": "{job}", "since": -1}', "invalid_since"),
    ('{"type": "subscribe", "job_id": "{job}", "since": "5"}', "invalid_since"),
    ('{"type": "subscribe", "job_id": "{job}", "since": 1.5}', "invalid_since"),
    ('{"type": "subscribe", "job_id": "{job}", "since": true}', "invalid_since"),
    ('{"type": "subscribe", "flow_id": "{flow}", "since": 0}', "invalid_since"),
]


@pytest.fixture(scope="module")
def known(ws_server: ServerProcess) -> dict[str, str]:
    """A flow and an idle job of it, shared by the tests of this module."""
    flow_id = "ws-msg-known"
    with httpx.Client(base_url=ws_server.url, timeout=10) as http:
        assert http.post("/api/flows", json={"dsl_dict": relay_flow(flow_id)}).status_code == 201
        job = http.post("/api/jobs", json={"flow_id": flow_id})
        assert job.status_code == 201
    return {"flow": flow_id, "job": job.json()["job_id"]}


@pytest.mark.parametrize(("message", "code"), MALFORMED, ids=[m for m, _ in MALFORMED])
async def test_a_malformed_message_gets_one_error_frame_and_the_socket_stays_open(
    ws_server: ServerProcess, known: dict[str, str], message: str, code: str
) -> None:
    async with open_ws(ws_server, "/api/ws") as ws:
        await send(ws, message.replace("{job}", known["job"]).replace("{flow}", known["flow"]))
        assert_error(await recv(ws), code)
        assert await ping_pong(ws) == []


@pytest.mark.parametrize("kind", ["job_id", "flow_id"])
async def test_subscribing_to_an_unknown_id_is_an_error_naming_it(ws_server: ServerProcess, kind: str) -> None:
    async with open_ws(ws_server, "/api/ws") as ws:
        await send(ws, {"type": "subscribe", kind: "no-such-thing"})
        assert_error(await recv(ws), "unknown_job" if kind == "job_id" else "unknown_flow", **{kind: "no-such-thing"})
        assert await ping_pong(ws) == []


async def test_after_a_volley_of_bad_messages_the_same_socket_subscribes_and_streams(
    ws_server: ServerProcess, rest: httpx.AsyncClient, known: dict[str, str], uid: str
) -> None:
    flow_id = await create_flow(rest, relay_flow(f"ws-volley-{uid}"))
    job_id = await idle_job(rest, flow_id)
    async with open_ws(ws_server, "/api/ws") as ws:
        for message, _ in MALFORMED:
            await send(ws, message.replace("{job}", job_id).replace("{flow}", flow_id))
        await send(ws, {"type": "subscribe", "job_id": "no-such-job"})
        errors = [await recv(ws) for _ in range(len(MALFORMED) + 1)]
        assert [e["error"] for e in errors] == [code for _, code in MALFORMED] + ["unknown_job"]
        # nothing was subscribed by any of them
        await send(ws, {"type": "subscribe", "job_id": job_id})
        assert await recv(ws) == {"type": "subscribed", "job_id": job_id}
        snapshot = await recv(ws)
        await post(rest, job_id, "relay", 1)
        await control(rest, job_id, "complete")
        frames = await recv_until(ws, job_end_of(job_id))
    assert frames == await stored_events(rest, job_id, snapshot["last_seq"])


async def test_a_socket_holds_at_most_the_configured_number_of_subscriptions(
    ws_server: ServerProcess, rest: httpx.AsyncClient, uid: str
) -> None:
    flow_id = await create_flow(rest, relay_flow(f"ws-limit-{uid}"))
    first, second = await idle_job(rest, flow_id), await idle_job(rest, flow_id)
    async with open_ws(ws_server, "/api/ws") as ws:
        await send(ws, {"type": "subscribe", "job_id": first})
        assert await recv(ws) == {"type": "subscribed", "job_id": first}
        assert (await recv(ws))["type"] == "snapshot"
        await send(ws, {"type": "subscribe", "flow_id": flow_id})
        assert await recv(ws) == {"type": "subscribed", "flow_id": flow_id}

        await send(ws, {"type": "subscribe", "job_id": second})
        assert_error(await recv(ws), "too_many_subscriptions", job_id=second)
        await send(ws, {"type": "subscribe", "flow_id": f"{flow_id}-other"})
        assert_error(await recv(ws), "too_many_subscriptions", flow_id=f"{flow_id}-other")
        # subscribing again to what is held is not a new subscription
        await send(ws, {"type": "subscribe", "job_id": first})
        assert await recv(ws) == {"type": "subscribed", "job_id": first}
        assert (await recv(ws))["type"] == "snapshot"

        await send(ws, {"type": "unsubscribe", "flow_id": flow_id})
        assert await recv(ws) == {"type": "unsubscribed", "flow_id": flow_id}
        await send(ws, {"type": "subscribe", "job_id": second})
        assert await recv(ws) == {"type": "subscribed", "job_id": second}
        second_snapshot = await recv(ws)
        await post(rest, second, "relay", 1)
        frames = await recv_until(ws, lambda f: f.get("type") == "job_idle" and f["job_id"] == second)
    assert [f for f in frames if is_event(f)] == await stored_events(rest, second, second_snapshot["last_seq"])


def padded_ping(size: int) -> str:
    message = json.dumps({"type": "ping", "pad": ""})
    message = json.dumps({"type": "ping", "pad": "x" * (size - len(message))})
    assert len(message.encode()) == size
    return message


async def test_messages_up_to_the_size_limit_are_read_and_a_longer_one_closes_the_socket_with_1009(
    ws_server: ServerProcess,
) -> None:
    async with open_ws(ws_server, "/api/ws") as ws:
        await send(ws, padded_ping(MAX_MESSAGE_BYTES))
        assert await recv(ws) == {"type": "pong"}
        await send(ws, padded_ping(MAX_MESSAGE_BYTES + 1))
        code, _reason, frames = await expect_close(ws)
    assert code == 1009 and frames == []


async def test_an_oversized_subscribe_closes_the_socket_and_subscribes_nothing(
    ws_server: ServerProcess, rest: httpx.AsyncClient, uid: str
) -> None:
    flow_id = await create_flow(rest, relay_flow(f"ws-big-{uid}"))
    job_id = await idle_job(rest, flow_id)
    async with open_ws(ws_server, "/api/ws") as ws:
        await send(ws, json.dumps({"type": "subscribe", "job_id": job_id, "note": "x" * MAX_MESSAGE_BYTES}))
        code, _reason, frames = await expect_close(ws)
    assert code == 1009 and frames == []  # no "subscribed", no snapshot

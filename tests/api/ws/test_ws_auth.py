"""With API keys on, every socket needs the key: ``?api_key=``, an ``X-API-Key`` header, or (for
browsers, which cannot set headers) the subprotocol ``apikey.<key>`` offered with ``routilux``.

A missing or wrong key closes the socket with 1008 *before* anything about the id is revealed:
a known and an unknown id get the very same close.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.support.servers import ServerProcess
from tests.support.ws import (
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
    start_job,
    start_server,
    stored_events,
)

KEY = "k"


@pytest.fixture(scope="module")
def ws_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(tmp_path_factory.mktemp("ws-auth"), api_key=KEY,
                          ROUTILUX_API_KEY_ENABLED="true", ROUTILUX_API_KEY=KEY)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ids(ws_server: ServerProcess) -> dict[str, str]:
    """A known flow and a known (idle) job, made once with the key, for every test here."""
    flow_id = f"ws-auth-{uuid.uuid4().hex[:10]}"
    with httpx.Client(base_url=ws_server.url, headers={"X-API-Key": KEY}, timeout=10) as http:
        assert http.post("/api/flows", json={"dsl_dict": relay_flow(flow_id)}).status_code == 201
        job = http.post("/api/jobs", json={"flow_id": flow_id})
        assert job.status_code == 201, job.text
        deadline = time.monotonic() + 10
        while http.get(f"/api/jobs/{job.json()['job_id']}/status").json()["status"] != "idle":
            assert time.monotonic() < deadline, "the job did not go idle"
            time.sleep(0.02)
    return {"flow_id": flow_id, "job_id": job.json()["job_id"]}


def paths(ids: dict[str, str]) -> dict[str, tuple[str, str]]:
    """socket -> (path with a known id, path with an unknown id)"""
    return {
        "job monitor": (f"/api/ws/jobs/{ids['job_id']}/monitor", "/api/ws/jobs/no-such-job/monitor"),
        "job debug": (f"/api/ws/jobs/{ids['job_id']}/debug", "/api/ws/jobs/no-such-job/debug"),
        "flow monitor": (f"/api/ws/flows/{ids['flow_id']}/monitor", "/api/ws/flows/no-such-flow/monitor"),
    }


async def close_of(server: ServerProcess, path: str, **options) -> tuple[int | None, str, list]:
    async with open_ws(server, path, **options) as ws:
        return await expect_close(ws)


@pytest.mark.parametrize(
    "credentials", ["none", "wrong query key", "wrong header key", "empty query key", "wrong subprotocol key"]
)
@pytest.mark.parametrize("socket", ["job monitor", "job debug", "flow monitor"])
async def test_a_missing_or_wrong_key_closes_1008_the_same_for_known_and_unknown_ids(
    ws_server: ServerProcess, ids: dict[str, str], socket: str, credentials: str
) -> None:
    options: dict = {}
    suffix = ""
    if credentials == "wrong query key":
        suffix = "?api_key=nope"
    elif credentials == "empty query key":
        suffix = "?api_key="
    elif credentials == "wrong header key":
        options["headers"] = {"X-API-Key": "nope"}
    elif credentials == "wrong subprotocol key":
        options["subprotocols"] = ["routilux", "apikey.nope"]
    known_path, unknown_path = paths(ids)[socket]
    for_known = await close_of(ws_server, known_path + suffix, **options)
    for_unknown = await close_of(ws_server, unknown_path + suffix, **options)
    assert for_known[0] == 1008 and for_known[2] == [], for_known
    assert for_known == for_unknown, "the close must not reveal whether the id exists"
    assert "key" in for_known[1].lower()


@pytest.mark.parametrize("credentials", ["none", "wrong query key"])
async def test_the_generic_socket_needs_the_key_too(ws_server: ServerProcess, credentials: str) -> None:
    code, reason, frames = await close_of(ws_server, "/api/ws" + ("?api_key=nope" if credentials != "none" else ""))
    assert (code, frames) == (1008, []) and "key" in reason.lower()


@pytest.mark.parametrize("how", ["query", "header", "subprotocol"])
async def test_the_key_in_the_query_a_header_or_a_subprotocol_opens_every_socket(
    ws_server: ServerProcess, rest: httpx.AsyncClient, ids: dict[str, str], how: str
) -> None:
    options: dict = {
        "query": {},
        "header": {"headers": {"X-API-Key": KEY}},
        "subprotocol": {"subprotocols": ["routilux", f"apikey.{KEY}"]},
    }[how]
    suffix = f"?api_key={KEY}" if how == "query" else ""
    job_id, flow_id = ids["job_id"], ids["flow_id"]
    async with open_ws(ws_server, f"/api/ws/jobs/{job_id}/monitor{suffix}", **options) as monitor, \
            open_ws(ws_server, f"/api/ws/jobs/{job_id}/debug{suffix}", **options) as debug, \
            open_ws(ws_server, f"/api/ws/flows/{flow_id}/monitor{suffix}", **options) as flow, \
            open_ws(ws_server, f"/api/ws{suffix}", **options) as generic:
        # the server selects "routilux" when offered (a browser refuses a socket whose server
        # selected none of the subprotocols it offered) and never echoes the key back
        expected = "routilux" if how == "subprotocol" else None
        assert {ws.subprotocol for ws in (monitor, debug, flow, generic)} == {expected}
        assert (await recv(monitor))["type"] == "snapshot"
        assert (await recv(debug))["type"] == "snapshot"
        assert await ping_pong(flow) == []
        await send(generic, {"type": "subscribe", "job_id": job_id})
        assert await recv(generic) == {"type": "subscribed", "job_id": job_id}
        snapshot = await recv(generic)
        await post(rest, job_id, "relay", how)
        mark = snapshot["last_seq"]
        frames = await recv_until(monitor, lambda f: f.get("type") == "job_idle" and f["seq"] > mark)
        assert frames == await stored_events(rest, job_id, mark)
        assert (await recv_until(generic, lambda f: f.get("type") == "job_idle" and f["seq"] > mark)) == frames
        assert (await recv_until(flow, lambda f: f.get("type") == "job_idle" and f["seq"] > mark)) == frames


async def test_with_the_right_key_an_unknown_id_is_still_1008(ws_server: ServerProcess) -> None:
    code, reason, frames = await close_of(ws_server, f"/api/ws/jobs/no-such-job/monitor?api_key={KEY}")
    assert (code, frames) == (1008, []) and "no-such-job" in reason


async def test_a_job_socket_with_the_key_follows_the_job_to_its_end(
    ws_server: ServerProcess, rest: httpx.AsyncClient, uid: str
) -> None:
    flow_id = await create_flow(rest, relay_flow(f"ws-auth-end-{uid}"))
    job_id = await start_job(rest, flow_id, complete_when_idle=True,
                             entry={"routine_id": "relay", "slot_name": "input", "data": 1})
    async with open_ws(ws_server, f"/api/ws/jobs/{job_id}/monitor?api_key={KEY}&since=0") as ws:
        assert (await recv(ws))["type"] == "snapshot"
        frames = await recv_until(ws, job_end_of(job_id))
    assert frames == await stored_events(rest, job_id)

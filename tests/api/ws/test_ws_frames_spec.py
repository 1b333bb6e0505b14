"""Every frame a socket sends is described by the spec: the ``Ws...`` schemas and ``Event`` (its
"WebSockets" section), so a generated client can type them. Each frame seen here is checked
against the schema its ``type`` names — fields, types, and no field the schema does not list —
and against ``WsFrame``, the union of them all. The close code after a job ended (1000) is the
one the spec lists.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from typing import Any

import pytest
from openapi_schema_validator import OAS30Validator

from routilux.api.ws import frames
from tests.support.servers import ServerProcess
from tests.support.spec_check import load_spec
from tests.support.ws import (
    Frame,
    create_flow,
    expect_close,
    open_ws,
    post,
    recv_until,
    relay_flow,
    send,
    start_job,
    start_server,
    wait_ended,
)

CONTROL_SCHEMAS = {
    "snapshot": "WsSnapshot", "gap": "WsGap", "metrics": "WsMetrics", "ping": "WsPing", "pong": "WsPong",
    "subscribed": "WsSubscription", "unsubscribed": "WsSubscription", "error": "WsError",
}


@pytest.fixture(scope="module")
def ws_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(
        tmp_path_factory.mktemp("ws-frames"),
        ROUTILUX_WS_METRICS_INTERVAL="0.2",
        ROUTILUX_WS_PING_INTERVAL="0.5",
        ROUTILUX_WS_LINGER_SECONDS="0.5",
    )
    yield server
    server.stop()


@functools.cache
def _validator(name: str) -> OAS30Validator:
    spec = load_spec()
    return OAS30Validator({**spec["components"]["schemas"][name], "components": spec["components"]})


def assert_in_spec(frame: Frame) -> str:
    """The frame matches the schema its type names, lists no field that schema lacks, and is
    exactly one of ``WsFrame``; returns the schema's name."""
    name = "Event" if "seq" in frame else CONTROL_SCHEMAS[frame["type"]]
    errors = [e.message for e in _validator(name).iter_errors(frame)]
    assert not errors, f"{name}: {errors} in {frame}"
    schema = load_spec()["components"]["schemas"][name]
    if schema.get("additionalProperties") is not True:
        assert set(frame) <= set(schema["properties"]), f"{name} does not list {set(frame) - set(schema['properties'])}"
    union = [e.message for e in _validator("WsFrame").iter_errors(frame)]
    assert not union, f"WsFrame: {union} in {frame}"
    return name


async def test_the_generic_socket_sends_only_frames_the_spec_describes(ws_server: ServerProcess, rest: Any) -> None:
    flow_id = await create_flow(rest, relay_flow("frames-generic"))
    job_id = await start_job(rest, flow_id)
    seen: set[str] = set()
    async with open_ws(ws_server, "/api/ws") as ws:
        await send(ws, {"type": "subscribe", "job_id": job_id, "since": 0})
        await send(ws, {"type": "subscribe", "flow_id": flow_id})
        await send(ws, {"type": "subscribe", "job_id": "no-such-job"})
        await send(ws, {"type": "ping"})
        await post(rest, job_id, "relay", {"n": 1})
        got = await recv_until(ws, lambda f: f.get("type") == "event_emit", keep_pings=True)
        await send(ws, {"type": "unsubscribe", "flow_id": flow_id})
        got += await recv_until(ws, lambda f: f.get("type") == "unsubscribed", keep_pings=True)
        got += await recv_until(ws, lambda f: f.get("type") == "ping", keep_pings=True)  # after 0.5 s of silence
        for frame in got:
            seen.add(assert_in_spec(frame))
    assert {"Event", "WsSnapshot", "WsSubscription", "WsError", "WsPong", "WsPing"} <= seen, seen


async def test_a_job_socket_sends_metrics_and_closes_with_1000_after_the_end(ws_server: ServerProcess,
                                                                             rest: Any) -> None:
    flow_id = await create_flow(rest, relay_flow("frames-job"))
    job_id = await start_job(rest, flow_id)
    async with open_ws(ws_server, f"/api/ws/jobs/{job_id}/monitor?since=0") as ws:
        await post(rest, job_id, "relay", {"n": 1})
        got = await recv_until(ws, lambda f: f.get("type") == "metrics", keep_pings=True)
        assert (await rest.post(f"/api/jobs/{job_id}/complete")).status_code == 200
        await wait_ended(rest, job_id)
        code, _reason, rest_of = await expect_close(ws, timeout=10)
        names = {assert_in_spec(frame) for frame in got + rest_of}
    assert {"WsSnapshot", "Event", "WsMetrics"} <= names, names
    assert code == 1000


def test_a_gap_frame_is_a_ws_gap() -> None:
    """What a socket sends for events that will never come (built here: making a client lose
    events on purpose is what ``test_ws_backpressure`` does)."""
    assert assert_in_spec(json.loads(frames.gap("j1", 3, 9))) == "WsGap"

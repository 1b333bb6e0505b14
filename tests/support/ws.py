"""Helpers for the WebSocket tests: open sockets, read frames with deadlines, build flows and
jobs over REST, and read a job's full event list back from ``GET /api/jobs/{id}/events``.

Every wait here has a deadline, so a missing frame fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any, Final

import httpx
import websockets
from websockets.asyncio.client import ClientConnection, connect

from tests.support.processes import repo_pythonpath
from tests.support.servers import ROUTINE_MODULES, ServerProcess, start_deployment

EVENT_KEYS: Final = {"seq", "type", "job_id", "flow_id", "routine_id", "timestamp", "data"}
SNAPSHOT_KEYS: Final = {"type", "job_id", "status", "flow_id", "last_seq", "routine_states", "error", "error_detail"}
DEBUG_TYPES: Final = frozenset(
    {"routine_start", "routine_end", "slot_call", "breakpoint_hit", "debug_step", "job_pause", "job_resume", "job_end"}
)
TIMESTAMP: Final = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")

Frame = dict[str, Any]
PERIODIC: Final = frozenset({"ping", "metrics"})  # frames the server sends on a timer


# -- servers --------------------------------------------------------------------------------------
def start_server(db_dir: Path, *, api_key: str | None = None, **env: str) -> ServerProcess:
    """A server that also knows the routines of ``tests/support/ws_routines.py`` (``Firehose``): one
    process, or the cluster deployment with ``ROUTILUX_TEST_DEPLOYMENT=cluster`` (see
    ``tests.support.servers.start_deployment``)."""
    return start_deployment(
        db_dir,
        api_key=api_key,
        ROUTILUX_ROUTINE_MODULES=f"{ROUTINE_MODULES},tests.support.ws_routines",
        PYTHONPATH=repo_pythonpath(),
        **env,
    )


def ws_url(server: ServerProcess, path: str) -> str:
    return server.url.replace("http://", "ws://", 1) + path


@contextlib.asynccontextmanager
async def open_ws(
    server: ServerProcess, path: str, *, headers: dict[str, str] | None = None, **options: Any
) -> AsyncIterator[ClientConnection]:
    """A client socket on ``path`` (query string included); closed on exit, whatever happened."""
    ws = await connect(
        ws_url(server, path),
        additional_headers=headers,
        proxy=None,
        open_timeout=5,
        close_timeout=2,
        ping_interval=None,  # the client's protocol pings are not what these tests are about
        **options,
    )
    try:
        yield ws
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), 3)


def small_window_socket(server: ServerProcess, receive_buffer: int = 4096) -> socket.socket:
    """A connected TCP socket with a tiny receive buffer: a client that stops reading soon stops
    the server's writes, instead of the kernel absorbing megabytes for it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect(("127.0.0.1", server.port))
    sock.setblocking(False)
    return sock


# -- frames ---------------------------------------------------------------------------------------
def is_event(frame: Frame) -> bool:
    return "seq" in frame


async def recv(ws: ClientConnection, timeout: float = 5.0) -> Frame:
    """The next frame: one text message holding one JSON object."""
    raw = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(raw, str), f"frames are JSON text, got {type(raw).__name__}"
    frame = json.loads(raw)
    assert isinstance(frame, dict), f"a frame is one JSON object, got {raw[:200]}"
    return frame


async def recv_until(
    ws: ClientConnection, stop: Callable[[Frame], bool], timeout: float = 10.0, *, keep_pings: bool = False
) -> list[Frame]:
    """Frames up to and including the first one ``stop`` accepts (the server's periodic frames,
    ``ping`` and ``metrics``, left out unless ``keep_pings``)."""
    deadline = time.monotonic() + timeout
    frames: list[Frame] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no matching frame within {timeout}s; the last frames: {frames[-5:]}")
        try:
            frame = await recv(ws, left)
        except TimeoutError:
            raise AssertionError(f"no matching frame within {timeout}s; the last frames: {frames[-5:]}") from None
        if frame.get("type") in PERIODIC and not keep_pings:
            continue
        frames.append(frame)
        if stop(frame):
            return frames


def job_end_of(job_id: str) -> Callable[[Frame], bool]:
    return lambda f: f.get("type") == "job_end" and f.get("job_id") == job_id


async def recv_events(ws: ClientConnection, count: int, timeout: float = 10.0) -> list[Frame]:
    """Exactly the next ``count`` frames, each of them an event."""
    frames: list[Frame] = []
    deadline = time.monotonic() + timeout
    while len(frames) < count:
        try:
            frame = await recv(ws, max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            raise AssertionError(f"{len(frames)} of {count} events within {timeout}s") from None
        assert is_event(frame), f"expected an event, got {frame}"
        frames.append(frame)
    return frames


async def expect_close(ws: ClientConnection, timeout: float = 5.0) -> tuple[int | None, str, list[Frame]]:
    """Read until the server closes; the close code, its reason and the frames read before it."""
    frames: list[Frame] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"the socket is still open after {timeout}s; frames: {frames[-5:]}")
            frames.append(await recv(ws, left))
    except TimeoutError:
        raise AssertionError(f"the socket is still open after {timeout}s; frames: {frames[-5:]}") from None
    except websockets.ConnectionClosed as closed:
        if closed.rcvd is None:
            return None, "", frames
        return closed.rcvd.code, closed.rcvd.reason, frames


async def send(ws: ClientConnection, message: Any) -> None:
    await ws.send(message if isinstance(message, str) else json.dumps(message))


async def ping_pong(ws: ClientConnection, timeout: float = 5.0) -> list[Frame]:
    """Send ``{"type": "ping"}`` and read up to the ``pong``; the frames read before it."""
    await send(ws, {"type": "ping"})
    frames = await recv_until(ws, lambda f: f.get("type") == "pong", timeout)
    assert frames[-1] == {"type": "pong"}
    return frames[:-1]


def assert_event_shape(frame: Frame, job_id: str, flow_id: str) -> None:
    assert set(frame) == EVENT_KEYS, frame
    assert frame["job_id"] == job_id and frame["flow_id"] == flow_id, frame
    assert isinstance(frame["seq"], int) and frame["seq"] >= 1
    assert TIMESTAMP.match(frame["timestamp"]), frame["timestamp"]
    assert isinstance(frame["data"], dict)


def coverage(frames: Iterable[Frame], job_id: str) -> list[tuple[int, int, str]]:
    """The seq ranges this job's frames account for, in arrival order: ``(seq, seq, "event")``
    per event and ``(from, to, "gap")`` per gap."""
    spans = []
    for frame in frames:
        if frame.get("job_id") != job_id:
            continue
        if is_event(frame):
            spans.append((frame["seq"], frame["seq"], "event"))
        elif frame.get("type") == "gap":
            spans.append((frame["from_seq"], frame["to_seq"], "gap"))
    return spans


def assert_contiguous(spans: list[tuple[int, int, str]], first: int, last: int) -> None:
    """The spans tile ``first..last`` exactly, in order: no hole, no overlap, no repeat."""
    expected = first
    for low, high, kind in spans:
        assert low == expected, f"{kind} {low}..{high} arrived where seq {expected} was due; spans: {spans[:50]}"
        assert high >= low, (low, high, kind)
        expected = high + 1
    assert expected == last + 1, f"the spans end at {expected - 1}, the job at {last}"


# -- REST -----------------------------------------------------------------------------------------
async def create_flow(rest: httpx.AsyncClient, flow: dict[str, Any]) -> str:
    response = await rest.post("/api/flows", json={"dsl_dict": flow})
    assert response.status_code == 201, response.text
    return flow["flow_id"]


def relay_flow(flow_id: str) -> dict[str, Any]:
    """relay -> keep: one post makes a handful of events, then the job goes idle."""
    return {
        "flow_id": flow_id,
        "routines": {"relay": {"class": "Relay"}, "keep": {"class": "Collect"}},
        "connections": [{"from": "relay.output", "to": "keep.input"}],
    }


def chatty_flow(flow_id: str) -> dict[str, Any]:
    """chatty -> keep: besides routine and slot events, logs and progress (not debugger events)."""
    return {
        "flow_id": flow_id,
        "routines": {"chatty": {"class": "Chatty"}, "keep": {"class": "Collect"}},
        "connections": [{"from": "chatty.output", "to": "keep.input"}],
    }


def loop_flow(flow_id: str) -> dict[str, Any]:
    """loop -> loop: posting n makes about 4n events, as fast as the engine goes."""
    return {"flow_id": flow_id, "routines": {"loop": {"class": "Loop"}},
            "connections": [{"from": "loop.output", "to": "loop.input"}]}


def paced_loop_flow(flow_id: str, delay: float = 0.001) -> dict[str, Any]:
    """loop -> tick (sleeps ``delay``) -> loop: a job that keeps producing at a steady pace."""
    return {
        "flow_id": flow_id,
        "routines": {"loop": {"class": "Loop"}, "tick": {"class": "Slow", "config": {"delay": delay}}},
        "connections": [{"from": "loop.output", "to": "tick.input"}, {"from": "tick.output", "to": "loop.input"}],
    }


async def start_job(rest: httpx.AsyncClient, flow_id: str, **body: Any) -> str:
    response = await rest.post("/api/jobs", json={"flow_id": flow_id, **body})
    assert response.status_code == 201, response.text
    return response.json()["job_id"]


async def post(rest: httpx.AsyncClient, job_id: str, routine_id: str, data: Any, slot: str = "input") -> None:
    body = {"routine_id": routine_id, "slot_name": slot, "data": data}
    response = await rest.post(f"/api/jobs/{job_id}/post", json=body)
    assert response.status_code == 202, response.text


async def control(rest: httpx.AsyncClient, job_id: str, action: str) -> dict[str, Any]:
    response = await rest.post(f"/api/jobs/{job_id}/{action}")
    assert response.status_code == 200, response.text
    return response.json()


async def wait_ended(rest: httpx.AsyncClient, job_id: str, timeout: float = 10) -> str:
    response = await rest.post(f"/api/jobs/{job_id}/wait", json={"timeout": timeout})
    assert response.status_code == 200, response.text
    assert not response.json()["timed_out"], f"job {job_id} did not end within {timeout}s"
    return response.json()["status"]


async def job_status(rest: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    response = await rest.get(f"/api/jobs/{job_id}/status")
    assert response.status_code == 200, response.text
    return response.json()


async def stored_events(rest: httpx.AsyncClient, job_id: str, since: int = 0, page: int = 1000) -> list[Frame]:
    """Every event of the job after ``since``, paging ``GET /api/jobs/{id}/events`` by since/limit."""
    events: list[Frame] = []
    while True:
        response = await rest.get(f"/api/jobs/{job_id}/events", params={"since": since, "limit": page})
        assert response.status_code == 200, response.text
        batch = response.json()["events"]
        if not batch:
            return events
        events.extend(batch)
        since = batch[-1]["seq"]


async def wait_for_stored(
    rest: httpx.AsyncClient, job_id: str, after: int, type_: str, timeout: float = 10
) -> list[Frame]:
    """Poll the job's events until one of ``type_`` with a seq above ``after`` is stored; the
    events after ``after`` up to that one."""
    deadline = time.monotonic() + timeout
    while True:
        events = await stored_events(rest, job_id, after)
        for index, event in enumerate(events):
            if event["type"] == type_:
                return events[: index + 1]
        if time.monotonic() > deadline:
            raise AssertionError(f"no {type_} event after seq {after} of job {job_id} within {timeout}s")
        await asyncio.sleep(0.02)


async def wait_for_seq(rest: httpx.AsyncClient, job_id: str, seq: int, timeout: float = 10) -> int:
    """Poll the job's status until it has published at least ``seq`` events; its last seq."""
    deadline = time.monotonic() + timeout
    while True:
        last = (await job_status(rest, job_id))["last_seq"]
        if last is not None and last >= seq:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} reached seq {last}, not {seq}, within {timeout}s")
        await asyncio.sleep(0.01)

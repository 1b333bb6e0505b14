"""Hostile input over HTTP, against a real server: every request below is refused with a 4xx in
the API's one error shape — never a 5xx, a Python traceback or a path from the server's disk —
and afterwards the server is still healthy and still runs flows and jobs.

Each table is a specification: one row per kind of hostile input, with the status and error code
the server answers it with. Requests go through ``httpx`` with the OpenAPI hook (``spec_check``),
so every answer also validates against ``openapi/openapi.yaml``. What ``httpx`` will not send
(dot segments, CR/LF or NUL in a header, a lying ``Content-Length``) goes over a raw socket
(:func:`raw_request`); the answers that come from the application are checked against the spec
the same way, those that come from uvicorn's HTTP parser are plain-text 400s (the request never
reached the application) and are said to be so.

The server runs with a 2 MiB body cap (``ROUTILUX_MAX_BODY_BYTES``), so bodies just under and
over it stay cheap, and DSL documents can exceed the DSL's own 1 MiB cap without hitting the
body cap first; and with request lines of up to 32 KiB (``ROUTILUX_MAX_HEADER_LINE_BYTES``), so
that hostile ids of 10,000 characters reach the application.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from tests.support.rest import error_of, etl_yaml
from tests.support.servers import ServerProcess
from tests.support.spec_check import check_response, httpx_event_hook, load_spec

MAX_BODY: Final = 2 * 1_048_576
#: Long enough a request line for a 10,000-character id to reach the app's own id check; by
#: default the socket refuses a request line over 8 KiB with 414 (``tests/api/transport``).
MAX_REQUEST_LINE: Final = 32_768
JSON: Final = {"content-type": "application/json"}
#: What an answer must never contain: a traceback, or where the server's code lives.
LEAKS: Final = re.compile(r"Traceback|File \"|site-packages|/routilux/|\.py\b|/work/|/home/|/usr/|/tmp/")

FLOW: Final = "hostile-etl"  # source -> clean -> sink (helpers.etl_yaml)


# -- the server and what it holds ---------------------------------------------------------------
@dataclass
class World:
    """The server and the ids that exist on it (the valid half of every request)."""

    server: ServerProcess
    job_id: str
    breakpoint_id: str
    valid: dict[str, str] = field(default_factory=dict)  # path parameter -> an existing value


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    db = tmp_path_factory.mktemp("hostile") / "routilux.db"
    server = ServerProcess(db, ROUTILUX_MAX_BODY_BYTES=str(MAX_BODY),
                           ROUTILUX_MAX_HEADER_LINE_BYTES=str(MAX_REQUEST_LINE)).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.post("/api/flows", json={"dsl": etl_yaml(FLOW)}).status_code == 201
            job_id = http.post("/api/jobs", json={"flow_id": FLOW}).json()["job_id"]  # stays idle
            bp = http.post(f"/api/jobs/{job_id}/breakpoints", json={"routine_id": "sink", "enabled": False})
            assert bp.status_code == 201, bp.text
        breakpoint_id = bp.json()["breakpoint_id"]
        yield World(
            server,
            job_id,
            breakpoint_id,
            valid={
                "flow_id": FLOW,
                "job_id": job_id,
                "runtime_id": "default",
                "routine_id": "sink",
                "breakpoint_id": breakpoint_id,
                "index": "0",
                "name": "DataSource",
                "variable": "data",
            },
        )
    finally:
        server.stop()


@pytest.fixture
async def client(world: World) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=world.server.url, timeout=30, event_hooks={"response": [httpx_event_hook]}
    ) as http:
        yield http


def refused(response: httpx.Response | RawResponse, status: int, error: str | None = None,
            *, field: str | None = None) -> dict[str, Any]:
    """Assert the API's refusal: this status, the one error shape, this code, nothing leaked."""
    text = response.text
    assert response.status_code == status, f"expected {status}, got {response.status_code}: {text[:500]}"
    assert not LEAKS.search(text), f"the answer leaks the server's insides: {text[:500]}"
    assert response.headers.get("content-type", "").startswith("application/json"), response.headers
    detail = error_of(response)  # exactly {"detail": {"error": str, "message": str, ...}}
    if error is not None:
        assert detail["error"] == error, detail
    if field is not None:
        assert detail.get("field") == field, detail
    return detail


# -- a raw HTTP/1.1 client, for what httpx will not send ------------------------------------------
@dataclass
class RawResponse:
    status_code: int
    headers: dict[str, str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


async def raw_request(server: ServerProcess, head: bytes, body: bytes = b"", *, timeout: float = 10.0) -> RawResponse:
    """Send ``head`` (request line and headers, without the blank line; ``Host`` and ``Connection:
    close`` are added) and ``body`` exactly as given; read the answer until the server closes."""
    port = int(urlsplit(server.url).port or 0)
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        writer.write(head + b"\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" + body)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(-1), timeout)
    finally:
        writer.close()
    header_block, _, content = raw.partition(b"\r\n\r\n")
    status_line, *lines = header_block.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawResponse(int(status_line.split()[1]), headers, content)


def check_raw_against_spec(method: str, target: str, response: RawResponse) -> None:
    check_response(method, target, response.status_code, response.headers, response.content)


# -- 1. bodies that are not JSON, or JSON no parser should have to follow -------------------------
#: (case id, raw body, status, error code). Sent to every main body endpoint below.
MALFORMED_BODIES: Final[list[tuple[str, bytes, int, str]]] = [
    ("empty body", b"", 400, "invalid_json"),
    ("whitespace only", b" \r\n\t ", 400, "invalid_json"),
    ("truncated object", b'{"flow_id": ', 400, "invalid_json"),
    ("trailing garbage", b"{} x", 400, "invalid_json"),
    ("single-quoted keys", b"{'flow_id': 'x'}", 400, "invalid_json"),
    ("comment", b"{/* hi */}", 400, "invalid_json"),
    ("NaN literal", b"NaN", 400, "invalid_json"),
    ("invalid UTF-8 inside a string", b'{"flow_id": "\xff\xfe"}', 400, "invalid_json"),
    ("invalid UTF-8 bytes", b"\xc3\x28\xa0\xa1", 400, "invalid_json"),
    ("UTF-16 with a BOM", "{}".encode("utf-16"), 400, "invalid_json"),
    ("unpaired surrogate escape", b'{"flow_id": "\\ud800"}', 400, "invalid_json"),
    ("100,000 nested arrays", b"[" * 100_000 + b"]" * 100_000, 400, "invalid_json"),
    ("50,000 nested objects", b'{"a":' * 50_000 + b"1" + b"}" * 50_000, 400, "invalid_json"),
    ("unterminated deep nesting", b"[" * 300_000, 400, "invalid_json"),
    ("JSON null", b"null", 422, "validation_error"),
    ("JSON array", b"[]", 422, "validation_error"),
    ("JSON string", b'"flow_id"', 422, "validation_error"),
    ("JSON number", b"12", 422, "validation_error"),
    ("JSON boolean", b"true", 422, "validation_error"),
]


def body_endpoints(world: World) -> list[tuple[str, str]]:
    """The operations that take the main bodies: flows, jobs, post, runtimes, breakpoints,
    evaluate (and a few more that read JSON)."""
    job = world.job_id
    return [
        ("POST", "/api/flows"),
        ("PUT", f"/api/flows/{FLOW}"),
        ("POST", f"/api/flows/{FLOW}/routines"),
        ("POST", f"/api/flows/{FLOW}/connections"),
        ("POST", "/api/jobs"),
        ("POST", f"/api/jobs/{job}/post"),
        ("POST", "/api/runtimes"),
        ("POST", f"/api/breakpoints/{job}"),
        ("PUT", f"/api/jobs/{job}/breakpoints/{world.breakpoint_id}"),
        ("POST", f"/api/debug/{job}/evaluate"),
    ]


@pytest.mark.parametrize(("body", "status", "error"), [c[1:] for c in MALFORMED_BODIES],
                         ids=[c[0] for c in MALFORMED_BODIES])
async def test_a_body_that_is_not_usable_json_is_refused(
    client: httpx.AsyncClient, world: World, body: bytes, status: int, error: str
) -> None:
    for method, path in body_endpoints(world):
        response = await client.request(method, path, content=body, headers=JSON)
        refused(response, status, error)


# -- 2. JSON of the wrong shape, at every level of the main bodies -------------------------------
DSL: Final[dict[str, Any]] = {"flow_id": "typed", "routines": {"r": {"class": "DataSource"}}}


def _dsl(**changes: Any) -> dict[str, Any]:
    return {"dsl_dict": {**DSL, **changes}}


def _routine(**changes: Any) -> dict[str, Any]:
    return _dsl(routines={"r": {"class": "DataSource", **changes}})


@dataclass(frozen=True)
class Wrong:
    """A body with one value of the wrong type and the answer it gets: 422 with the body path
    (``field``), or for what is inside a DSL document 400 with the DSL location (``where``)."""

    id: str
    method: str
    path: str  # {job}, {bp} and {flow} are filled in
    body: Any
    status: int
    error: str
    field: str | None = None
    where: str | None = None


ENTRY: Final = {"routine_id": "source", "slot_name": "trigger"}
WRONG_TYPES: Final[list[Wrong]] = [
    # flows: the request itself...
    Wrong("flow_id a number", "POST", "/api/flows", {"flow_id": 1}, 422, "validation_error", "body.flow_id"),
    Wrong("dsl a list", "POST", "/api/flows", {"dsl": ["flow_id: x"]}, 422, "validation_error", "body.dsl"),
    Wrong(
        "dsl_dict a string", "POST", "/api/flows", {"dsl_dict": "flow_id: x"}, 422, "validation_error", "body.dsl_dict"
    ),
    Wrong(
        "unknown top-level field",
        "POST",
        "/api/flows",
        {"flow_id": "x", "dsl_text": "y"},
        422,
        "validation_error",
        "body.dsl_text",
    ),
    Wrong(
        "replace with dsl_dict a list",
        "PUT",
        "/api/flows/{flow}",
        {"dsl_dict": []},
        422,
        "validation_error",
        "body.dsl_dict",
    ),
    # ...and every level of the DSL document inside it
    Wrong("routines a list", "POST", "/api/flows", _dsl(routines=[]), 400, "invalid_dsl", where="routines"),
    Wrong(
        "a routine a string",
        "POST",
        "/api/flows",
        _dsl(routines={"r": "DataSource"}),
        400,
        "invalid_dsl",
        where="routines.r",
    ),
    Wrong(
        "class a number", "POST", "/api/flows", _routine(**{"class": 5}), 400, "invalid_dsl", where="routines.r.class"
    ),
    Wrong("config a string", "POST", "/api/flows", _routine(config="x"), 400, "invalid_dsl", where="routines.r.config"),
    Wrong(
        "config value of the wrong type",
        "POST",
        "/api/flows",
        _routine(config={"items": "abc"}),
        400,
        "invalid_flow",
        where="routines.r.config.items",
    ),
    Wrong(
        "error_handler strategy a number",
        "POST",
        "/api/flows",
        _routine(error_handler={"strategy": 1}),
        400,
        "invalid_dsl",
        where="routines.r.error_handler.strategy",
    ),
    Wrong(
        "policy n a string",
        "POST",
        "/api/flows",
        _routine(policy={"type": "batch_size", "n": "ten"}),
        400,
        "invalid_dsl",
        where="routines.r.policy.n",
    ),
    Wrong(
        "connections a mapping",
        "POST",
        "/api/flows",
        _dsl(connections={"a": 1}),
        400,
        "invalid_dsl",
        where="connections",
    ),
    Wrong(
        "connection end a number",
        "POST",
        "/api/flows",
        _dsl(connections=[{"from": 1, "to": "r.x"}]),
        400,
        "invalid_dsl",
        where="connections[0].from",
    ),
    Wrong(
        "execution timeout a string",
        "POST",
        "/api/flows",
        _dsl(execution={"timeout": "soon"}),
        400,
        "invalid_dsl",
        where="execution.timeout",
    ),
    Wrong("description a list", "POST", "/api/flows", _dsl(description=["x"]), 400, "invalid_dsl", where="description"),
    Wrong(
        "routine class_name a number",
        "POST",
        "/api/flows/{flow}/routines",
        {"routine_id": "x", "class_name": 1},
        422,
        "validation_error",
        "body.class_name",
    ),
    Wrong(
        "connection source_event a number",
        "POST",
        "/api/flows/{flow}/connections",
        {"source_routine": "source", "source_event": 1, "target_routine": "sink", "target_slot": "input"},
        422,
        "validation_error",
        "body.source_event",
    ),
    # jobs
    Wrong("flow_id a list", "POST", "/api/jobs", {"flow_id": [FLOW]}, 422, "validation_error", "body.flow_id"),
    Wrong(
        "timeout a string",
        "POST",
        "/api/jobs",
        {"flow_id": FLOW, "timeout": "10"},
        422,
        "validation_error",
        "body.timeout",
    ),
    Wrong(
        "timeout a boolean",
        "POST",
        "/api/jobs",
        {"flow_id": FLOW, "timeout": True},
        422,
        "validation_error",
        "body.timeout",
    ),
    Wrong(
        "timeout 1e308",
        "POST",
        "/api/jobs",
        {"flow_id": FLOW, "timeout": 1e308},
        422,
        "validation_error",
        "body.timeout",
    ),
    Wrong(
        "runtime_id an object",
        "POST",
        "/api/jobs",
        {"flow_id": FLOW, "runtime_id": {}},
        422,
        "validation_error",
        "body.runtime_id",
    ),
    Wrong(
        "complete_when_idle a string",
        "POST",
        "/api/jobs",
        {"flow_id": FLOW, "complete_when_idle": "yes"},
        422,
        "validation_error",
        "body.complete_when_idle",
    ),
    Wrong(
        "entry a string",
        "POST",
        "/api/jobs",
        {"flow_id": FLOW, "entry": "source.trigger"},
        422,
        "validation_error",
        "body.entry",
    ),
    Wrong(
        "entry routine_id a number",
        "POST",
        "/api/jobs",
        {"flow_id": FLOW, "entry": {**ENTRY, "routine_id": 1}},
        422,
        "validation_error",
        "body.entry.routine_id",
    ),
    Wrong(
        "entry slot_name null",
        "POST",
        "/api/jobs",
        {"flow_id": FLOW, "entry": {**ENTRY, "slot_name": None}},
        422,
        "validation_error",
        "body.entry.slot_name",
    ),
    Wrong(
        "entry unknown field",
        "POST",
        "/api/jobs",
        {"flow_id": FLOW, "entry": {**ENTRY, "slot": "x"}},
        422,
        "validation_error",
        "body.entry.slot",
    ),
    Wrong(
        "wait timeout a string",
        "POST",
        "/api/jobs/{job}/wait",
        {"timeout": "1"},
        422,
        "validation_error",
        "body.timeout",
    ),
    Wrong(
        "pause reason a number", "POST", "/api/jobs/{job}/pause", {"reason": 5}, 422, "validation_error", "body.reason"
    ),
    Wrong(
        "cleanup statuses a string",
        "POST",
        "/api/jobs/cleanup",
        {"statuses": "completed"},
        422,
        "validation_error",
        "body.statuses",
    ),
    # post
    Wrong(
        "post routine_id a number",
        "POST",
        "/api/jobs/{job}/post",
        {**ENTRY, "routine_id": 1},
        422,
        "validation_error",
        "body.routine_id",
    ),
    Wrong(
        "post slot_name a list",
        "POST",
        "/api/jobs/{job}/post",
        {**ENTRY, "slot_name": []},
        422,
        "validation_error",
        "body.slot_name",
    ),
    Wrong(
        "post without slot_name",
        "POST",
        "/api/jobs/{job}/post",
        {"routine_id": "source"},
        422,
        "validation_error",
        "body.slot_name",
    ),
    # runtimes
    Wrong(
        "runtime_id a number", "POST", "/api/runtimes", {"runtime_id": 1}, 422, "validation_error", "body.runtime_id"
    ),
    Wrong(
        "thread_pool_size a string",
        "POST",
        "/api/runtimes",
        {"runtime_id": "r", "thread_pool_size": "4"},
        422,
        "validation_error",
        "body.thread_pool_size",
    ),
    Wrong(
        "thread_pool_size a fraction",
        "POST",
        "/api/runtimes",
        {"runtime_id": "r", "thread_pool_size": 4.5},
        422,
        "validation_error",
        "body.thread_pool_size",
    ),
    Wrong(
        "thread_pool_size 10**30",
        "POST",
        "/api/runtimes",
        {"runtime_id": "r", "thread_pool_size": 10**30},
        422,
        "validation_error",
        "body.thread_pool_size",
    ),
    Wrong(
        "is_default a string",
        "POST",
        "/api/runtimes",
        {"runtime_id": "r", "is_default": "true"},
        422,
        "validation_error",
        "body.is_default",
    ),
    # breakpoints
    Wrong(
        "breakpoint routine_id a number",
        "POST",
        "/api/breakpoints/{job}",
        {"routine_id": 1},
        422,
        "validation_error",
        "body.routine_id",
    ),
    Wrong(
        "breakpoint condition a number",
        "POST",
        "/api/breakpoints/{job}",
        {"routine_id": "sink", "condition": 1},
        422,
        "validation_error",
        "body.condition",
    ),
    Wrong(
        "breakpoint type unknown",
        "POST",
        "/api/breakpoints/{job}",
        {"routine_id": "sink", "type": "everywhere"},
        422,
        "validation_error",
        "body.type",
    ),
    Wrong(
        "breakpoint enabled a string",
        "POST",
        "/api/jobs/{job}/breakpoints",
        {"routine_id": "sink", "enabled": "yes"},
        422,
        "validation_error",
        "body.enabled",
    ),
    Wrong(
        "breakpoint update enabled a string",
        "PUT",
        "/api/jobs/{job}/breakpoints/{bp}",
        {"enabled": "no"},
        422,
        "validation_error",
        "body.enabled",
    ),
    # evaluate
    Wrong(
        "expression a number",
        "POST",
        "/api/debug/{job}/evaluate",
        {"expression": 1},
        422,
        "validation_error",
        "body.expression",
    ),
    Wrong(
        "expression null",
        "POST",
        "/api/debug/{job}/evaluate",
        {"expression": None},
        422,
        "validation_error",
        "body.expression",
    ),
    Wrong(
        "variables a list",
        "POST",
        "/api/debug/{job}/evaluate",
        {"expression": "1", "variables": []},
        422,
        "validation_error",
        "body.variables",
    ),
    Wrong(
        "variables a string",
        "POST",
        "/api/jobs/{job}/debug/evaluate",
        {"expression": "1", "variables": "x"},
        422,
        "validation_error",
        "body.variables",
    ),
]


@pytest.mark.parametrize("case", WRONG_TYPES, ids=[c.id for c in WRONG_TYPES])
async def test_a_value_of_the_wrong_type_is_refused_with_where_it_is(
    client: httpx.AsyncClient, world: World, case: Wrong
) -> None:
    path = case.path.format(job=world.job_id, bp=world.breakpoint_id, flow=FLOW)
    response = await client.request(case.method, path, json=case.body)
    detail = refused(response, case.status, case.error, field=case.field)
    if case.where is not None:
        assert [p["location"] for p in detail["problems"]][:1] == [case.where], detail


# -- 3. huge strings, and bodies at and over the cap ---------------------------------------------
def _post_body(size: int) -> bytes:
    """A valid ``post`` body of exactly ``size`` bytes (its data is a long string)."""
    head, tail = b'{"routine_id": "source", "slot_name": "trigger", "data": "', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


async def test_a_body_of_exactly_the_cap_is_accepted_and_one_byte_more_is_413(
    client: httpx.AsyncClient, world: World
) -> None:
    url = f"/api/jobs/{world.job_id}/post"
    at_cap = await client.post(url, content=_post_body(MAX_BODY), headers=JSON)
    assert at_cap.status_code == 202, at_cap.text[:300]
    over = await client.post(url, content=_post_body(MAX_BODY + 1), headers=JSON)
    assert refused(over, 413, "payload_too_large")["limit"] == MAX_BODY


async def test_an_oversized_body_without_content_length_is_413_as_it_streams(
    client: httpx.AsyncClient, world: World
) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:  # chunked transfer encoding: no Content-Length
        nonlocal sent
        for _ in range(64):
            sent += 65_536
            yield b"x" * 65_536

    response = await client.post(f"/api/jobs/{world.job_id}/post", content=chunks(), headers=JSON)
    refused(response, 413, "payload_too_large")
    assert "content-length" not in response.request.headers


async def test_a_content_length_over_the_cap_is_413_before_the_body_is_sent(world: World) -> None:
    """The server answers from the header alone: it does not wait for 1 TB to arrive."""
    head = b"POST /api/jobs HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 1000000000000"
    response = await raw_request(world.server, head, b"{}", timeout=5)
    refused(response, 413, "payload_too_large")
    check_raw_against_spec("POST", "/api/jobs", response)


#: (case id, method, path, body, status, error code): a string of nearly 2 MiB — the body cap
#: lets it through, and each field's own bound refuses it, without echoing it back.
HUGE: Final = "x" * 1_990_000
HUGE_STRINGS: Final[list[tuple[str, str, str, dict[str, Any], int, str]]] = [
    (
        "huge expression",
        "POST",
        "/api/debug/{job}/evaluate",
        {"expression": "1+" * 995_000 + "1", "variables": {}},
        400,
        "invalid_expression",
    ),
    (
        "huge breakpoint condition",
        "POST",
        "/api/breakpoints/{job}",
        {"routine_id": "sink", "condition": HUGE},
        422,
        "validation_error",
    ),
    ("huge pause reason", "POST", "/api/jobs/{job}/pause", {"reason": HUGE}, 422, "validation_error"),
    ("huge flow id", "POST", "/api/flows", {"flow_id": HUGE}, 422, "validation_error"),
    (
        "huge routine id",
        "POST",
        "/api/jobs/{job}/post",
        {"routine_id": HUGE, "slot_name": "trigger"},
        422,
        "validation_error",
    ),
    ("huge runtime id", "POST", "/api/runtimes", {"runtime_id": HUGE}, 422, "validation_error"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error"), [c[1:] for c in HUGE_STRINGS], ids=[c[0] for c in HUGE_STRINGS]
)
async def test_a_huge_string_under_the_cap_meets_its_fields_own_limit(
    client: httpx.AsyncClient, world: World, method: str, path: str, body: dict[str, Any], status: int, error: str
) -> None:
    response = await client.request(method, path.format(job=world.job_id), json=body)
    refused(response, status, error)
    assert len(response.content) < 10_000, f"the error echoes the huge value back ({len(response.content)} bytes)"


# -- 4. DSL documents: bombs, huge, deep, unsafe tags, classes that are import paths -------------
def billion_laughs(levels: int = 9, width: int = 9) -> str:
    lines = ["flow_id: bomb", "a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


#: (case id, YAML or JSON text, status, error code, problem code)
DSL_TEXTS: Final[list[tuple[str, str, int, str, str]]] = [
    ("billion laughs (9 levels of 9 aliases)", billion_laughs(), 400, "invalid_dsl", "too_many_nodes"),
    ("an alias that contains itself", "flow_id: r\nroutines: &r {a: *r}\n", 400, "invalid_dsl", "recursive_alias"),
    (
        "101 aliases",
        "flow_id: a\nx: &x 1\ny: [" + ", ".join(["*x"] * 101) + "]\n",
        400,
        "invalid_dsl",
        "too_many_aliases",
    ),
    ("over 1 MiB of YAML", "flow_id: big\ndescription: " + "x" * 1_100_000 + "\n", 400, "invalid_dsl", "too_large"),
    ("33 levels deep", "flow_id: d\nx: " + "[" * 33 + "]" * 33 + "\n", 400, "invalid_dsl", "too_deep"),
    ("100,000 levels deep", "flow_id: d\nx: " + "[" * 100_000 + "]" * 100_000 + "\n", 400, "invalid_dsl", "too_deep"),
    (
        "100,000 levels deep as JSON",
        '{"flow_id": "d", "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
        400,
        "invalid_dsl",
        "too_deep",
    ),
    (
        "!!python/object/apply:os.system",
        "flow_id: t\nroutines:\n  r: !!python/object/apply:os.system ['id']\n",
        400,
        "invalid_dsl",
        "syntax",
    ),
    ("!!python/name:builtins.eval", "flow_id: t\nx: !!python/name:builtins.eval ''\n", 400, "invalid_dsl", "syntax"),
    (
        "a whole document tagged !!python/object/new",
        "!!python/object/new:os.system [id]\n",
        400,
        "invalid_dsl",
        "syntax",
    ),
    ("!!binary", "flow_id: t\nx: !!binary aGVsbG8=\n", 400, "invalid_dsl", "syntax"),
    ("a NUL character", "flow_id: n\x00\n", 400, "invalid_dsl", "syntax"),
    ("an unpaired surrogate escape", 'flow_id: s\ndescription: "\\ud800"\n', 400, "invalid_dsl", "invalid_value"),
    ("two documents", "flow_id: a\n---\nflow_id: b\n", 400, "invalid_dsl", "syntax"),
    ("a duplicate key", "flow_id: a\nflow_id: b\n", 400, "invalid_dsl", "syntax"),
    ("a 5000-digit number", "flow_id: n\nexecution: {timeout: " + "9" * 5000 + "}\n", 400, "invalid_dsl", "syntax"),
]


@pytest.mark.parametrize(("text", "status", "error", "code"), [c[1:] for c in DSL_TEXTS], ids=[c[0] for c in DSL_TEXTS])
async def test_a_hostile_dsl_document_is_refused_on_create_and_on_replace(
    client: httpx.AsyncClient, world: World, text: str, status: int, error: str, code: str
) -> None:
    for method, path in (("POST", "/api/flows"), ("PUT", f"/api/flows/{FLOW}")):
        response = await client.request(method, path, json={"dsl": text})
        detail = refused(response, status, error)
        assert code in [p["code"] for p in detail["problems"]], detail


#: Class names a flow might use to reach Python: all refused, none imported.
HOSTILE_CLASSES: Final = [
    "os.system",
    "subprocess.Popen",
    "builtins.eval",
    "__import__",
    "builtins.__import__",
    "routilux.builtins.data.DataSource",
    "os:system",
    "DataSource; rm -rf /",
    "../DataSource",
    "",
    "x" * 10_000,
]


@pytest.mark.parametrize("class_name", HOSTILE_CLASSES, ids=lambda c: c[:40] or "empty")
async def test_a_routine_class_must_be_a_registered_name_never_an_import_path(
    client: httpx.AsyncClient, world: World, class_name: str
) -> None:
    as_yaml = f"flow_id: imp\nroutines:\n  r: {{class: {json.dumps(class_name)}}}\n"
    for method, path, body, location in (
        ("POST", "/api/flows", {"dsl": as_yaml}, "routines.r.class"),
        (
            "POST",
            "/api/flows",
            {"dsl_dict": {"flow_id": "imp", "routines": {"r": {"class": class_name}}}},
            "routines.r.class",
        ),
        (
            "PUT",
            f"/api/flows/{FLOW}",
            {"dsl_dict": {"flow_id": FLOW, "routines": {"r": {"class": class_name}}}},
            "routines.r.class",
        ),
        ("POST", f"/api/flows/{FLOW}/routines", {"routine_id": "imp", "class_name": class_name}, "routines.imp.class"),
    ):
        response = await client.request(method, path, json=body)
        detail = refused(response, 400, "invalid_flow")
        assert [p["location"] for p in detail["problems"]] == [location], detail
    assert (await client.get("/api/flows/imp")).status_code == 404


# -- 5. ids: path traversal and odd characters, on every route that takes an id ------------------
#: (case id, the id as it appears in the URL, percent-encoded where httpx would otherwise change it)
HOSTILE_IDS: Final[list[tuple[str, str]]] = [
    ("traversal through encoded slashes", "..%2F..%2F..%2Fetc%2Fpasswd"),
    ("encoded dot-dot", "%2e%2e"),
    ("encoded dot", "%2E"),
    ("encoded dot-dot-slash", "%2e%2e%2f"),
    ("NUL", "%00"),
    ("NUL inside", "job%00.json"),
    ("CR LF header injection", "a%0d%0aSet-Cookie:%20pwned=1"),
    ("a trailing newline", "valid-id%0a"),
    ("unicode", "日本語"),
    ("a right-to-left override", "%E2%80%AEtxt.exe"),
    ("invalid UTF-8 escape", "%ff%fe"),
    ("a lone percent", "%"),
    ("shell and SQL", "$(id)%3B'%20OR%20'1'%3D'1"),
    ("10,000 characters", "a" * 10_000),
]


def templated_operations() -> list[tuple[str, str, list[str]]]:
    """Every (method, path template, parameters) of the spec with a path parameter."""
    found = []
    for template, item in load_spec()["paths"].items():
        params = re.findall(r"{(\w+)}", template)
        for method in item:
            if params and method in ("get", "post", "put", "delete"):
                found.append((method.upper(), template, params))
    return found


@pytest.mark.parametrize("hostile", [c[1] for c in HOSTILE_IDS], ids=[c[0] for c in HOSTILE_IDS])
async def test_a_hostile_id_is_refused_on_every_route_that_takes_an_id(
    client: httpx.AsyncClient, world: World, hostile: str
) -> None:
    """Each parameter of each operation in turn gets the hostile value (the others a valid one).

    The answer is 422 ``invalid_id`` naming the parameter (ids are 1-128 of ``[A-Za-z0-9_.-]``,
    not ``.`` or ``..``), 404 for a routine class name (the catalogue has no such class), and 404
    or 405 where an encoded ``/`` makes the path match no route — or the router's 307 that drops
    a trailing ``/``. Never a 2xx: no hostile id ever names something.
    """
    operations = templated_operations()
    assert len(operations) >= 40, "the spec lost its templated operations?"
    failures = []
    for method, template, params in operations:
        for param in params:
            values = {p: world.valid[p] for p in params} | {param: hostile}
            path = template.format(**values)
            body = {"reason": "x"} if method in ("POST", "PUT") else None
            response = await client.request(method, path, json=body)
            try:
                if "%2f" in hostile.lower():
                    if response.status_code == 307:
                        location = response.headers["location"]
                        assert location.startswith(world.server.url + "/api/") and "\r" not in location
                    else:
                        assert response.status_code in (404, 405), response.status_code
                        refused(response, response.status_code)
                elif param == "name":
                    refused(response, 404, "routine_class_not_found")
                elif param == "index":
                    refused(response, 422, "validation_error", field="path.index")
                else:
                    refused(response, 422, "invalid_id", field=f"path.{param}")
            except AssertionError as exc:
                failures.append(f"{method} {template} with {param}={hostile[:40]!r}: {exc}")
    assert not failures, "\n".join(failures)


#: Requests with a target httpx would normalise (``..`` segments) or refuse to send.
RAW_TARGETS: Final[list[tuple[str, str, str, int, str | None]]] = [
    # (case id, method, target, status, error code)
    ("literal ../../etc/passwd", "GET", "/api/jobs/../../etc/passwd", 404, "not_found"),
    ("a flow called ..", "GET", "/api/flows/..", 422, "invalid_id"),
    ("a flow called .", "GET", "/api/flows/.", 422, "invalid_id"),
    ("deleting routine .. must not delete the flow", "DELETE", f"/api/flows/{FLOW}/routines/..", 422, "invalid_id"),
    ("a runtime called ..", "GET", "/api/runtimes/..", 422, "invalid_id"),
    ("traversal out of /api", "GET", "/api/../../../../etc/passwd", 404, "not_found"),
    ("backslashes", "GET", "/api/jobs/..\\..\\windows\\win.ini", 422, "invalid_id"),
]


@pytest.mark.parametrize(
    ("method", "target", "status", "error"), [c[1:] for c in RAW_TARGETS], ids=[c[0] for c in RAW_TARGETS]
)
async def test_dot_segments_sent_as_is_never_escape_their_route(
    client: httpx.AsyncClient, world: World, method: str, target: str, status: int, error: str | None
) -> None:
    response = await raw_request(world.server, f"{method} {target} HTTP/1.1".encode())
    refused(response, status, error)
    check_raw_against_spec(method, target, response)
    flow = await client.get(f"/api/flows/{FLOW}")
    assert flow.status_code == 200 and set(flow.json()["routines"]) == {"source", "clean", "sink"}


# -- 6. header injection -------------------------------------------------------------------------
#: Ids with CR/LF that would end up in a ``Location`` header if they were accepted.
INJECTED_IDS: Final[list[tuple[str, str, dict[str, Any], int, str]]] = [
    ("flow_id with CR LF", "/api/flows", {"flow_id": "evil\r\nSet-Cookie: pwned=1"}, 422, "validation_error"),
    ("flow_id ending in a newline", "/api/flows", {"flow_id": "evil\n"}, 422, "validation_error"),
    ("dsl_dict flow_id ending in a newline", "/api/flows", {"dsl_dict": {"flow_id": "evil\n"}}, 400, "invalid_flow"),
    ("YAML flow_id ending in a newline", "/api/flows", {"dsl": 'flow_id: "evil\\n"\n'}, 400, "invalid_flow"),
    ("runtime_id with CR LF", "/api/runtimes", {"runtime_id": "rt\r\nX-Injected: 1"}, 422, "validation_error"),
    ("runtime_id ending in a newline", "/api/runtimes", {"runtime_id": "rt\n"}, 422, "validation_error"),
    (
        "routine_id ending in a newline",
        f"/api/flows/{FLOW}/routines",
        {"routine_id": "r\n", "class_name": "DataSink"},
        422,
        "validation_error",
    ),
]


@pytest.mark.parametrize(
    ("path", "body", "status", "error"), [c[1:] for c in INJECTED_IDS], ids=[c[0] for c in INJECTED_IDS]
)
async def test_an_id_with_cr_or_lf_never_reaches_a_header(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], status: int, error: str
) -> None:
    response = await client.post(path, json=body)
    refused(response, status, error)
    assert "location" not in response.headers and "set-cookie" not in response.headers
    assert "x-injected" not in response.headers


#: Malformed at the HTTP level: uvicorn's parser answers 400 (plain text) and closes the
#: connection; the application never sees the request.
PARSER_REFUSALS: Final[list[tuple[str, bytes]]] = [
    ("CR LF inside a header value", b"GET /api/health HTTP/1.1\r\nX-Note: a\r\n b: c"),
    ("a bare CR in a header value", b"GET /api/health HTTP/1.1\r\nX-Note: a\rSet-Cookie: pwned=1"),
    ("NUL in a header value", b"GET /api/health HTTP/1.1\r\nX-Note: a\x00b"),
    ("NUL in the request target", b"GET /api/jobs/a\x00b HTTP/1.1"),
    ("a space in the request target", b"GET /api/jobs/a b HTTP/1.1"),
    ("raw UTF-8 in the request target", "GET /api/jobs/日本 HTTP/1.1".encode()),
    ("Content-Length not a number", b"POST /api/jobs HTTP/1.1\r\nContent-Length: abc"),
    ("a negative Content-Length", b"POST /api/jobs HTTP/1.1\r\nContent-Length: -1"),
    ("two different Content-Lengths", b"POST /api/jobs HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3"),
    (
        "Content-Length with chunked encoding",
        b"POST /api/jobs HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked",
    ),
    ("an unknown method token", b"G@T /api/health HTTP/1.1"),
]


@pytest.mark.parametrize("head", [c[1] for c in PARSER_REFUSALS], ids=[c[0] for c in PARSER_REFUSALS])
async def test_a_malformed_http_request_is_refused_by_the_parser(world: World, head: bytes) -> None:
    response = await raw_request(world.server, head, b"{}")
    assert response.status_code == 400, response.text
    assert not LEAKS.search(response.text) and "set-cookie" not in response.headers


async def test_an_if_match_that_is_not_a_revision_is_400(client: httpx.AsyncClient) -> None:
    for value in ('"1"; DROP', "W/", "0x1", "1e9", "-", "1 2", '""'):
        response = await client.put(f"/api/flows/{FLOW}", json={"dsl": etl_yaml(FLOW)}, headers={"If-Match": value})
        refused(response, 400, "invalid_if_match", field="header.If-Match")


# -- 7. content types, query parameters, methods -------------------------------------------------
@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "application/jsonx",
        "application/vnd.api+json",
        "json",
    ],
    ids=lambda c: c or "no Content-Type",
)
async def test_a_json_body_under_another_content_type_is_refused(
    client: httpx.AsyncClient, content_type: str | None
) -> None:
    """Browsers send those types cross-site without a CORS preflight: JSON accepted under them
    would let any web page drive a server that has no API key."""
    headers = {"content-type": content_type} if content_type else {}
    response = await client.post("/api/runtimes", content=b'{"runtime_id": "by-form"}', headers=headers)
    refused(response, 400, "unsupported_media_type", field="header.Content-Type")
    assert (await client.get("/api/runtimes/by-form")).status_code == 404


async def test_application_json_in_any_case_and_with_parameters_is_json(client: httpx.AsyncClient) -> None:
    for i, content_type in enumerate(
        ("application/json; charset=utf-8", "Application/JSON", "application/json;charset=UTF-8")
    ):
        response = await client.post(
            "/api/runtimes", content=f'{{"runtime_id": "ct-{i}"}}'.encode(), headers={"content-type": content_type}
        )
        assert response.status_code == 201, (content_type, response.text)


#: (case id, path, query parameters, field at fault)
BAD_QUERIES: Final[list[tuple[str, str, dict[str, str], str]]] = [
    ("limit=-1", "/api/jobs", {"limit": "-1"}, "query.limit"),
    ("limit=0", "/api/flows", {"limit": "0"}, "query.limit"),
    ("limit=abc", "/api/jobs", {"limit": "abc"}, "query.limit"),
    ("limit=1e3", "/api/jobs", {"limit": "1e3"}, "query.limit"),
    ("limit=1.0", "/api/flows", {"limit": "1.0"}, "query.limit"),
    ("limit with spaces", "/api/jobs", {"limit": " 5 "}, "query.limit"),
    ("limit=5_0", "/api/jobs", {"limit": "5_0"}, "query.limit"),
    ("limit in Arabic-Indic digits", "/api/flows", {"limit": "١٢"}, "query.limit"),
    ("limit with 400 digits", "/api/jobs", {"limit": "9" * 400}, "query.limit"),
    ("offset=-5", "/api/jobs", {"offset": "-5"}, "query.offset"),
    ("offset=NaN", "/api/flows", {"offset": "NaN"}, "query.offset"),
    ("status not a status", "/api/jobs", {"status": "running\x00"}, "query.status"),
    ("flow_id with a slash", "/api/jobs", {"flow_id": "../x"}, "query.flow_id"),
    ("runtime_id with CR LF", "/api/jobs", {"runtime_id": "a\r\nb"}, "query.runtime_id"),
    ("since=1e999", "/api/jobs/{job}/events", {"since": "1e999"}, "query.since"),
    ("since=-1", "/api/jobs/{job}/events", {"since": "-1"}, "query.since"),
    ("since=NaN", "/api/jobs/{job}/trace", {"since": "NaN"}, "query.since"),
    ("since=0x10", "/api/jobs/{job}/logs", {"since": "0x10"}, "query.since"),
    ("since over 2**53-1", "/api/jobs/{job}/events", {"since": str(2**53)}, "query.since"),
    ("events limit=10001", "/api/jobs/{job}/events", {"limit": "10001"}, "query.limit"),
    ("history routine_id ../", "/api/jobs/{job}/execution-history", {"routine_id": "../"}, "query.routine_id"),
    ("format=xml", f"/api/flows/{FLOW}/dsl", {"format": "xml"}, "query.format"),
]


@pytest.mark.parametrize(("path", "params", "field"), [c[1:] for c in BAD_QUERIES], ids=[c[0] for c in BAD_QUERIES])
async def test_a_query_parameter_of_the_wrong_type_is_422(
    client: httpx.AsyncClient, world: World, path: str, params: dict[str, str], field: str
) -> None:
    response = await client.get(path.format(job=world.job_id), params=params)
    refused(response, 422, "validation_error", field=field)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PATCH", "/api/flows"),
        ("DELETE", "/api/jobs"),
        ("PUT", "/api/jobs/{job}"),
        ("POST", "/api/health"),
        ("DELETE", "/api/runtimes/default"),
        ("PATCH", f"/api/flows/{FLOW}"),
        ("GET", "/api/jobs/{job}/pause"),
        ("TRACE", "/api/flows"),
        ("CONNECT", "/api/flows"),
    ],
    ids=lambda v: v.replace("{job}", "{id}"),
)
async def test_a_method_a_route_does_not_have_is_405(
    client: httpx.AsyncClient, world: World, method: str, path: str
) -> None:
    response = await client.request(method, path.format(job=world.job_id))
    refused(response, 405, "method_not_allowed")
    assert response.headers.get("allow")


# -- 8. the same over WebSockets -----------------------------------------------------------------
def _ws(world: World, path: str) -> str:
    return world.server.url.replace("http://", "ws://", 1) + path


@pytest.mark.parametrize(
    "frame",
    [
        b'{"type": "\xff\xfe"}',
        "[" * 30_000 + "]" * 30_000,
        b"[" * 60_000,
        "\x00",
        '{"type": "subscribe", "job_id": "../x"}',
        '{"type": "subscribe", "job_id": "a\\u0000b"}',
        '{"type": "subscribe", "flow_id": "..", "since": 1e999}',
    ],
    ids=[
        "invalid UTF-8",
        "30,000 nested arrays",
        "60,000 unclosed arrays",
        "a NUL",
        "traversal job id",
        "NUL in a job id",
        "flow called ..",
    ],
)
async def test_a_hostile_websocket_message_gets_an_error_frame_and_the_socket_stays_usable(
    world: World, frame: str | bytes
) -> None:
    async with ws_connect(_ws(world, "/api/ws"), open_timeout=10) as ws:
        await ws.send(frame)
        reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert reply["type"] == "error" and reply["error"] in ("invalid_json", "invalid_message", "invalid_id"), reply
        await ws.send('{"type": "ping"}')
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "pong"}


@pytest.mark.parametrize(
    "hostile",
    ["%2e%2e", "a%00b", "a%0d%0aX:%20y", "valid%0a", "a" * 100],
    ids=["dot-dot", "NUL", "CR LF", "trailing newline", "100 characters"],
)
async def test_a_hostile_id_in_a_socket_path_closes_it_with_1008(world: World, hostile: str) -> None:
    for path in (
        f"/api/ws/jobs/{hostile}/monitor",
        f"/api/ws/jobs/{hostile}/debug",
        f"/api/ws/flows/{hostile}/monitor",
    ):
        async with ws_connect(_ws(world, path), open_timeout=10) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008, path


async def test_an_unknown_id_of_any_length_closes_1008(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Its own server: the failure leaves a traceback in the log, which the last test checks."""
    server = ServerProcess(tmp_path_factory.mktemp("ws-long-id") / "routilux.db").start()
    try:
        url = server.url.replace("http://", "ws://", 1)
        for job_id in ("a" * 128, "a" * 5000):  # the longest valid id, and far longer
            async with ws_connect(f"{url}/api/ws/jobs/{job_id}/monitor", open_timeout=10) as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    finally:
        server.stop()


# -- 9. and afterwards ---------------------------------------------------------------------------
async def test_after_all_of_it_the_server_is_healthy_and_still_runs_flows_and_jobs(
    client: httpx.AsyncClient, world: World
) -> None:
    """Runs last in this module (tests run in file order); meaningful alone too."""
    health = await client.get("/api/health")
    assert health.status_code == 200 and health.json()["status"] == "healthy"
    flow = await client.get(f"/api/flows/{FLOW}")
    assert flow.status_code == 200 and flow.json()["revision"] == 1  # no hostile request changed it
    assert (await client.get("/api/jobs/" + world.job_id)).json()["status"] == "idle"

    assert (await client.post("/api/flows", json={"dsl": etl_yaml("after-hostile")})).status_code == 201
    started = await client.post(
        "/api/jobs",
        json={
            "flow_id": "after-hostile",
            "complete_when_idle": True,
            "entry": {"routine_id": "source", "slot_name": "trigger", "data": {}},
        },
    )
    assert started.status_code == 201, started.text
    done = await client.post(f"/api/jobs/{started.json()['job_id']}/wait", json={"timeout": 10})
    assert done.json()["status"] == "completed"
    state = (await client.get(f"/api/jobs/{started.json()['job_id']}/state")).json()
    assert [item["data"] for item in state["shared_data"]["results"]["sink"]] == ["A", "B", "C"]

    assert world.server.process is not None and world.server.process.poll() is None
    log = world.server.output()
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-3000:]


def test_the_tables_cover_what_the_issue_lists() -> None:
    """Issue 6 names these kinds of hostile input; each has at least one row above."""
    rows = " ".join(
        [c[0] for c in MALFORMED_BODIES]
        + [c.id for c in WRONG_TYPES]
        + [c[0] for c in DSL_TEXTS]
        + [c[0] for c in HOSTILE_IDS]
        + [c[0] for c in RAW_TARGETS]
        + [c[0] for c in INJECTED_IDS]
        + [c[0] for c in PARSER_REFUSALS]
        + [c[0] for c in BAD_QUERIES]
        + HOSTILE_CLASSES
    )
    for kind in (
        "truncated",
        "UTF-8",
        "nested",
        "billion laughs",
        "1 MiB",
        "os.system",
        "subprocess.Popen",
        "builtins.eval",
        "__import__",
        "etc/passwd",
        "NUL",
        "unicode",
        "10,000 characters",
        "CR LF",
        "Content-Length",
        "since=1e999",
        "limit=-1",
        "limit=abc",
    ):
        assert kind in rows, f"no hostile-input row covers {kind!r}"

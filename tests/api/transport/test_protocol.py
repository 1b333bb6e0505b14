"""Limits at the socket, over a real ``python -m routilux.api.main``: what one connection may cost
before the app sees a request — head size (414/431), head time and body rate (408), and the
connection cap (503) — with the server's memory measured where a client could make it grow.

The clients here speak raw HTTP/1.1 over asyncio streams: the point is to send what no well-behaved
client would. Timeouts are short settings (``HEADER_TIMEOUT``, ``BODY_TIMEOUT``) so the tests take
seconds; every wait has a deadline with a generous margin for a busy 2-core machine.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any, Final

import pytest

from tests.support.processes import peak_rss_growth
from tests.support.servers import ServerProcess

HEADER_TIMEOUT: Final = 2.0  # lower bounds allow half of it: the client starts its clock after the server
BODY_TIMEOUT: Final = 1.0
MAX_CONNECTIONS: Final = 20
MARGIN: Final = 8.0  # seconds a busy machine may add to a timeout before a test calls it a failure
MiB: Final = 1 << 20


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(
        tmp_path_factory.mktemp("socket-limits") / "routilux.db",
        ROUTILUX_HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT),
        ROUTILUX_BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT),
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("socket-cap") / "routilux.db",
                           ROUTILUX_MAX_CONNECTIONS=str(MAX_CONNECTIONS)).start()
    yield server
    server.stop()


# -- a raw HTTP client ------------------------------------------------------------------------------
async def read_until_closed(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection (a reset ends it too)."""
    data = b""
    try:
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                data += chunk
    except (ConnectionResetError, BrokenPipeError):
        pass
    return data


def answer(raw: bytes) -> tuple[int, dict[str, str], Any]:
    """The status, headers and JSON body of one ``Connection: close`` response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, json.loads(body) if body else None


async def exchange(port: int, request: bytes, timeout: float = 10.0) -> tuple[int, dict[str, str], Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        raw = await read_until_closed(reader, timeout)
    finally:
        writer.close()
    assert raw, "the server closed the connection without an answer"
    return answer(raw)


GET_HEALTH: Final = b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


# -- head size ------------------------------------------------------------------------------------
async def test_a_1_mib_header_gets_431_before_it_is_buffered(limited: ServerProcess) -> None:
    assert (await exchange(limited.port, GET_HEALTH))[0] == 200 and limited.process is not None
    huge = b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Huge: " + b"a" * MiB + b"\r\n\r\n"
    answers, grown = await peak_rss_growth(
        limited.process.pid, asyncio.gather(*(exchange(limited.port, huge) for _ in range(8))))
    for status, headers, body in answers:
        assert status == 431 and headers["connection"] == "close"
        assert body["detail"]["error"] == "headers_too_large"
        assert "8192 bytes" in body["detail"]["message"]
    assert grown < 20 * MiB, f"8 heads of 1 MiB grew the server by {grown / MiB:.1f} MiB"
    assert (await exchange(limited.port, GET_HEALTH))[0] == 200


async def test_many_small_headers_past_64_kib_in_all_get_431(limited: ServerProcess) -> None:
    lines = b"".join(b"X-Header-%d: %s\r\n" % (i, b"v" * 100) for i in range(700))  # ~80 KiB
    status, _, body = await exchange(limited.port, b"GET /api/health HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n")
    assert status == 431 and "65536 bytes in all" in body["detail"]["message"]


async def test_a_request_line_over_8_kib_gets_414(limited: ServerProcess) -> None:
    status, _, body = await exchange(limited.port, b"GET /api/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 414 and body["detail"]["error"] == "request_line_too_long"


async def test_headers_within_the_limits_are_served(limited: ServerProcess) -> None:
    lines = b"".join(b"X-Header-%d: %s\r\n" % (i, b"v" * 7000) for i in range(8))  # 56 KiB, lines < 8 KiB
    status, _, _ = await exchange(limited.port, b"GET /api/health HTTP/1.1\r\nHost: x\r\n" + lines
                                  + b"Connection: close\r\n\r\n")
    assert status == 200


async def test_the_next_request_on_a_kept_alive_connection_is_measured_too(limited: ServerProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", limited.port)
    try:
        body = b'{"statuses": []}'
        writer.write(post_head(len(body)).replace(b"Connection: close\r\n", b"") + body)
        first = await reader.readuntil(b"\r\n\r\n")
        assert first.startswith(b"HTTP/1.1 200 ")
        await reader.readexactly(int(answer(first)[1]["content-length"]))
        writer.write(b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Huge: " + b"a" * MiB + b"\r\n\r\n")
        status, _, body_ = answer(await read_until_closed(reader, 10))
    finally:
        writer.close()
    assert status == 431 and body_["detail"]["error"] == "headers_too_large"


# -- head time and body rate ----------------------------------------------------------------------
async def slowloris(port: int) -> tuple[bytes, float]:
    """Send a head one byte every half second, never finishing it: what came back, and after how
    long the server closed the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    data = b""
    try:
        while time.monotonic() - started < HEADER_TIMEOUT + MARGIN:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), 0.5)
            except TimeoutError:
                writer.write(b"a")
                continue
            if not chunk:
                break
            data += chunk
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        writer.close()
    return data, time.monotonic() - started


async def test_200_slowloris_connections_are_closed_with_408_within_the_header_timeout(
    limited: ServerProcess,
) -> None:
    results = await asyncio.gather(*(slowloris(limited.port) for _ in range(200)))
    took = sorted(elapsed for _, elapsed in results)
    assert took[0] >= HEADER_TIMEOUT / 2, "closed long before the timeout"
    assert took[-1] < HEADER_TIMEOUT + MARGIN, f"still open after {took[-1]:.1f} s"
    for data, _ in results:
        status, _, body = answer(data)
        assert status == 408 and body["detail"]["error"] == "request_timeout"
    assert (await exchange(limited.port, GET_HEALTH))[0] == 200


async def test_a_connection_that_sends_nothing_is_closed_without_a_word_after_the_header_timeout(
    limited: ServerProcess,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", limited.port)
    started = time.monotonic()
    assert await read_until_closed(reader, HEADER_TIMEOUT + MARGIN) == b""
    writer.close()
    assert HEADER_TIMEOUT / 2 <= time.monotonic() - started < HEADER_TIMEOUT + MARGIN


async def test_a_later_head_on_a_kept_alive_connection_must_arrive_in_time_too(limited: ServerProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", limited.port)
    try:
        writer.write(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
        first = await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(int(answer(first)[1]["content-length"]))
        writer.write(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")  # and nothing more
        started = time.monotonic()
        status, _, _ = answer(await read_until_closed(reader, HEADER_TIMEOUT + MARGIN))
    finally:
        writer.close()
    assert status == 408 and HEADER_TIMEOUT / 2 <= time.monotonic() - started < HEADER_TIMEOUT + MARGIN


def post_head(length: int) -> bytes:
    return (b"POST /api/jobs/cleanup HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % length)


async def test_a_body_trickled_below_the_minimum_rate_gets_408(limited: ServerProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", limited.port)
    writer.write(post_head(1000) + b"{")
    started = time.monotonic()

    async def trickle() -> None:
        while True:
            await asyncio.sleep(0.25)
            writer.write(b" ")  # 4 bytes a second, far below the 500 of the default rate

    task = asyncio.create_task(trickle())
    try:
        raw = await read_until_closed(reader, BODY_TIMEOUT + MARGIN)
    finally:
        task.cancel()
        writer.close()
    status, _, body = answer(raw)
    assert status == 408 and "slower than 500 bytes a second" in body["detail"]["message"]
    assert time.monotonic() - started < BODY_TIMEOUT * 2 + MARGIN


async def test_a_slow_body_above_the_minimum_rate_is_read_whole(limited: ServerProcess) -> None:
    body = json.dumps({"statuses": [], "pad": "x" * 6000}).encode()  # "pad" is no field: 422
    reader, writer = await asyncio.open_connection("127.0.0.1", limited.port)
    writer.write(post_head(len(body)))
    for start in range(0, len(body), 1000):  # 1000 bytes every 0.2 s: ~10 times the minimum rate
        writer.write(body[start:start + 1000])
        await asyncio.sleep(0.2)
    raw = await read_until_closed(reader, MARGIN)
    writer.close()
    status, _, answered = answer(raw)
    assert status == 422 and answered["detail"]["field"] == "body.pad"


# -- connection cap -------------------------------------------------------------------------------
async def test_past_the_connection_cap_requests_get_503_and_one_log_line(capped: ServerProcess) -> None:
    held = [await asyncio.open_connection("127.0.0.1", capped.port) for _ in range(MAX_CONNECTIONS + 5)]
    try:
        status, headers, body = await exchange(capped.port, GET_HEALTH)
        assert status == 503 and headers["retry-after"] == "1"
        assert body["detail"]["error"] == "too_many_connections"
        upgrade = (b"GET /api/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        assert (await exchange(capped.port, upgrade))[0] == 503  # WebSocket handshakes count too
    finally:
        for _, writer in held:
            writer.close()
    deadline = time.monotonic() + MARGIN
    while (status := (await exchange(capped.port, GET_HEALTH))[0]) == 503 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert status == 200
    lines = [line for line in capped.output().splitlines() if "refused at the socket" in line]
    assert len(lines) == 1, lines  # the second refusal came within the minute: counted, not logged
    assert f"over the connection cap (503; up to {MAX_CONNECTIONS + 6} connections open, " \
           f"ROUTILUX_MAX_CONNECTIONS={MAX_CONNECTIONS})" in lines[0]

"""Production process models: one server process per SQLite store, and gunicorn.

On SQLite, a second process on one store must refuse to serve rather than give wrong answers
(each process knows only its own live jobs), and say what to do instead (one worker, or a cluster
on Redis: ``tests/deploy/test_cluster_suites.py`` runs ``gunicorn -w 4`` that way). gunicorn with
one worker — uvicorn's stock worker or ``routilux.api.worker.UvicornWorker`` — serves REST and
WebSockets; with two workers it stops, with the refusal in its output.

Every server is a real process on a loopback port; every wait is bounded, and every process a
test starts (gunicorn's workers included) is killed on the way out.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import httpx
import pytest

from tests.support.servers import ServerProcess, gunicorn_argv, stop_all
from tests.support.ws import (
    control,
    create_flow,
    expect_close,
    job_end_of,
    job_status,
    open_ws,
    post,
    recv,
    recv_until,
    relay_flow,
    start_job,
    stored_events,
)

STOCK_WORKER: Final = "uvicorn.workers.UvicornWorker"
OUR_WORKER: Final = "routilux.api.worker.UvicornWorker"
REFUSAL: Final = "already in use by process"
ADVICE: Final = "gunicorn -w 1 -k routilux.api.worker.UvicornWorker routilux.api.main:app"

def gunicorn(db: Path | str, workers: int, worker_class: str, **env: str) -> ServerProcess:
    """The spec's production command, on a free loopback port (not started yet)."""
    return ServerProcess(db, argv=gunicorn_argv(workers, worker_class), **env)


@contextmanager
def serving(server: ServerProcess) -> Iterator[ServerProcess]:
    """``server`` started and answering; stopped afterwards, with any worker it left behind."""
    try:
        yield server.start()
    finally:
        stop_all(server)


def run_until_it_stops(server: ServerProcess, timeout: float = 30.0) -> tuple[int, str]:
    """Start a server that is expected to stop by itself; its exit code and output.

    With several workers, one may answer a health check before its sibling is refused and
    gunicorn stops: either way the process must be gone within ``timeout``, not loop.
    """
    try:
        try:
            server.start(timeout=timeout)
        except RuntimeError:
            pass  # it exited before answering
        assert server.process is not None
        try:
            code = server.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the server still runs after {timeout}s:\n{server.output()[-3000:]}") from None
        return code, server.output()
    finally:
        stop_all(server)


def stored_job_status(db: Path, job_id: str) -> tuple[str, str | None]:
    """The job's status and error as written in the SQLite file (read-only, beside the server)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT status, error FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    finally:
        conn.close()
    assert row is not None, f"job {job_id} is not in {db}"
    return row[0], row[1]


# -- one store, one process ------------------------------------------------------------------
async def test_a_second_server_on_the_same_database_refuses_and_the_first_keeps_serving(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    with serving(ServerProcess(db)) as first:
        async with httpx.AsyncClient(base_url=first.url, timeout=10) as rest:
            await create_flow(rest, relay_flow("relay"))
            job_id = await start_job(rest, "relay")
            await post(rest, job_id, "relay", "before")
            await rest.post("/api/discovery/jobs/sync")  # the live record is on disk

            second = ServerProcess(db)
            try:
                with pytest.raises(RuntimeError, match="server exited with 3"):
                    second.start(timeout=30)
            finally:
                stop_all(second)
            output = second.output()
            assert REFUSAL in output and str(db) in output and ADVICE in output, output[-3000:]

            # The first server is unharmed: the refused one did not mark its job interrupted...
            assert (await job_status(rest, job_id))["status"] in {"running", "idle"}
            status, error = stored_job_status(db, job_id)
            assert status in {"running", "idle"} and error is None
            # ...and it goes on serving and recording.
            await post(rest, job_id, "relay", "after")
            assert (await rest.get("/api/health")).json()["stores"]["accessible"] is True


def test_gunicorn_with_two_workers_on_one_sqlite_file_stops_with_the_reason(tmp_path: Path) -> None:
    code, output = run_until_it_stops(gunicorn(tmp_path / "r.db", 2, STOCK_WORKER))
    assert code != 0
    assert REFUSAL in output and ADVICE in output, output[-3000:]
    assert "Worker failed to boot" in output  # the arbiter gave up instead of respawning
    assert output.count("Booting worker") == 2, output[-3000:]


def test_gunicorn_with_two_workers_on_an_in_memory_database_stops_with_the_reason(tmp_path: Path) -> None:
    """Each worker would have its own in-memory data: refused just the same."""
    server = gunicorn(":memory:", 2, STOCK_WORKER)
    server.log_path = tmp_path / "gunicorn.log"  # ServerProcess keeps no log for :memory:
    code, output = run_until_it_stops(server)
    assert server.process is not None  # the workers' lock file, keyed on their arbiter's pid:
    (Path(tempfile.gettempdir()) / f"routilux-{os.getuid()}-memory-{server.process.pid}.lock").unlink(missing_ok=True)
    assert code != 0
    assert "ROUTILUX_DB=:memory: keeps its data inside one process" in output, output[-3000:]
    assert ADVICE in output and "Worker failed to boot" in output


# -- gunicorn with one worker ----------------------------------------------------------------
async def monitor_a_job(server: ServerProcess) -> None:
    """REST creates a flow and starts a job; its monitor socket sends the snapshot, then every
    event of the data posted and of the job's end, in order, exactly as stored."""
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as rest:
        await create_flow(rest, relay_flow("relay"))
        job_id = await start_job(rest, "relay")
        async with open_ws(server, f"/api/ws/jobs/{job_id}/monitor") as ws:
            snapshot = await recv(ws)
            assert snapshot["type"] == "snapshot" and snapshot["job_id"] == job_id
            await post(rest, job_id, "relay", "hello")
            await control(rest, job_id, "complete")
            frames = await recv_until(ws, job_end_of(job_id))
        assert frames[-1]["data"]["status"] == "completed"
        assert [f["data"]["data"] for f in frames if f["type"] == "slot_call" and f["routine_id"] == "relay"] == [
            {"data": "hello"}]
        stored = await stored_events(rest, job_id)
        assert frames == [e for e in stored if e["seq"] > snapshot["last_seq"]]


async def test_gunicorn_with_one_stock_worker_serves_rest_and_a_websocket_stream(tmp_path: Path) -> None:
    with serving(gunicorn(tmp_path / "r.db", 1, STOCK_WORKER)) as server:
        await monitor_a_job(server)


async def test_the_routilux_worker_serves_rest_and_websockets_and_says_1001_on_shutdown(tmp_path: Path) -> None:
    with serving(gunicorn(tmp_path / "r.db", 1, OUR_WORKER)) as server:
        await monitor_a_job(server)
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as rest:
            job_id = await start_job(rest, "relay")
        async with open_ws(server, f"/api/ws/jobs/{job_id}/monitor") as ws:
            assert (await recv(ws))["type"] == "snapshot"
            assert server.process is not None
            server.process.send_signal(signal.SIGTERM)  # gunicorn passes it on to its worker
            code, _reason, _frames = await expect_close(ws, timeout=10)
        assert code == 1001  # going away; uvicorn's own server would say 1012
        assert server.process.wait(15) == 0


def test_the_routilux_worker_does_not_believe_forwarded_headers(tmp_path: Path) -> None:
    """uvicorn trusts ``X-Forwarded-For`` from 127.0.0.1 by default; our worker turns that off, so
    a local client cannot pick the address it is rate-limited as (only
    ``ROUTILUX_TRUSTED_PROXIES`` can make the app believe the header)."""
    limit = 5
    env = {"ROUTILUX_RATE_LIMIT_ENABLED": "true", "ROUTILUX_RATE_LIMIT_PER_MINUTE": str(limit)}
    with serving(gunicorn(tmp_path / "r.db", 1, OUR_WORKER, **env)) as server, httpx.Client(
        base_url=server.url, timeout=10
    ) as http:
        codes = [
            http.get("/api/flows", headers={"X-Forwarded-For": f"203.0.113.{n}"}).status_code
            for n in range(limit + 2)
        ]
    assert 429 in codes, f"every request got its own budget, so the header was believed: {codes}"


def test_the_routilux_worker_configures_uvicorn_as_python_m_routilux_does() -> None:
    """What the worker hands uvicorn, read in a fresh interpreter (building a gunicorn worker
    rewires uvicorn's loggers, which this test process must keep): the socket limits of the app's
    own settings, Routilux's WebSocket protocol, no proxy headers, requests in flight cut off after
    the shutdown seconds, and the stock worker's other choices kept."""
    probe = """
import json
from gunicorn.config import Config
from gunicorn.glogging import Logger
from routilux.api.app import create_app
from routilux.api.transport import GuardedHTTPProtocol, SocketLimits
from routilux.api.worker import UvicornWorker
from routilux.api.ws.protocol import BatchingWebSocketProtocol
from routilux.server.settings import Settings
cfg = Config()
worker = UvicornWorker(1, 0, [], None, 30, cfg, Logger(cfg))
settings = Settings(ws_max_message_bytes=1000, max_header_bytes=5000, header_timeout_seconds=3, max_connections=50,
                    shutdown_seconds=7.5)
worker.wsgi = create_app(settings)
worker.use_routilux_options()
config = worker.config
config.app = lambda scope, receive, send: None
config.load()
http = config.http_protocol_class
print(json.dumps({"ws": config.ws_protocol_class is BatchingWebSocketProtocol,
                  "http": issubclass(http, GuardedHTTPProtocol) and http.limits == SocketLimits.from_settings(settings),
                  "ws_max_size": config.ws_max_size, "proxy_headers": config.proxy_headers, "loop": config.loop,
                  "keepalive": config.timeout_keep_alive == cfg.keepalive,
                  "graceful": config.timeout_graceful_shutdown}))
"""
    result = subprocess.run([sys.executable, "-c", probe], check=False, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {
        "ws": True, "http": True, "ws_max_size": 1000, "proxy_headers": False, "loop": "auto", "keepalive": True,
        "graceful": 8,  # ROUTILUX_SHUTDOWN_SECONDS, rounded up: requests in flight are cut off after it
    }


async def test_the_routilux_worker_enforces_the_limits_at_the_socket(tmp_path: Path) -> None:
    """The limits reach a worker gunicorn started: a head over the limit gets 431, a WebSocket
    message over it closes the socket with 1009, and a head that never ends gets 408."""
    env = {"ROUTILUX_WS_MAX_MESSAGE_BYTES": "1024", "ROUTILUX_HEADER_TIMEOUT_SECONDS": "1"}
    with serving(gunicorn(tmp_path / "r.db", 1, OUR_WORKER, **env)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            assert (await http.get("/api/health", headers={"X-Big": "a" * 70_000})).status_code == 431
        async with open_ws(server, "/api/ws") as ws:
            await ws.send(json.dumps({"type": "ping", "pad": "x" * 1024}))
            code, _reason, _frames = await expect_close(ws)
        assert code == 1009
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            raw.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")
            assert raw.recv(4096).startswith(b"HTTP/1.1 408 ")

"""``deploy/nginx.conf`` in front of a real server: what production traffic goes through.

A real nginx (Debian's package, installed here when missing — a missing nginx fails the test, it
never skips) runs the file itself, with only what must differ on a test machine swapped in:
loopback ports, the upstream's address, a self-signed certificate and the access log's path
(``nginx_support.render`` insists that each of those lines is found exactly once, so the file cannot drift
away from what is tested). Clients speak HTTPS and WSS to nginx, which speaks to a real
``python -m routilux.api.main`` with ``ROUTILUX_TRUSTED_PROXIES=127.0.0.1``.

Proven through the proxy: the HTTP -> HTTPS redirect; REST; a WebSocket job monitor stream;
API keys (401/403 and WebSocket close 1008, the key kept out of nginx's log); the body limit in
the API's error shape; an unreachable app as a JSON 502; and rate limiting per forwarded client,
which a client cannot escape by writing its own ``X-Forwarded-For``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import httpx
import pytest
import websockets

from tests.support.nginx import Cert, Nginx, self_signed_cert, tool
from tests.support.servers import ServerProcess, free_port
from tests.support.ws import expect_close, job_end_of, recv, recv_until, relay_flow

KEY: Final = "nginx-test-key-0123456789"
LIMIT: Final = 5


@pytest.fixture(scope="module")
def nginx_binary() -> str:
    return tool("nginx", "nginx")


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    return self_signed_cert(tmp_path_factory.mktemp("tls"))


@contextmanager
def _proxy(
    tmp_path_factory: pytest.TempPathFactory, nginx_binary: str, cert: Cert, name: str, **env: str
) -> Iterator[tuple[ServerProcess, Nginx]]:
    """A server (trusting nginx, on 127.0.0.1, for X-Forwarded-For) and nginx in front of it."""
    directory = tmp_path_factory.mktemp(name)
    server = ServerProcess(directory / "r.db", ROUTILUX_TRUSTED_PROXIES="127.0.0.1", **env)
    nginx = Nginx(nginx_binary, directory / "nginx", server.port, cert)
    try:
        server.start()
        yield server, nginx.start()
    finally:
        nginx.stop()
        server.stop()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, nginx_binary: str, cert: Cert) -> Iterator[Nginx]:
    """API keys on, as in production."""
    env = {"ROUTILUX_API_KEY_ENABLED": "true", "ROUTILUX_API_KEY": KEY}
    with _proxy(tmp_path_factory, nginx_binary, cert, "secured", api_key=KEY, **env) as (_server, nginx):
        yield nginx


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, nginx_binary: str, cert: Cert) -> Iterator[Nginx]:
    """Rate limiting on: LIMIT requests per minute per client."""
    env = {"ROUTILUX_RATE_LIMIT_ENABLED": "true", "ROUTILUX_RATE_LIMIT_PER_MINUTE": str(LIMIT)}
    with _proxy(tmp_path_factory, nginx_binary, cert, "limited", **env) as (_server, nginx):
        yield nginx


AUTH: Final = {"X-API-Key": KEY}


# -- the front door ----------------------------------------------------------------------------
def test_plain_http_is_redirected_to_https(secured: Nginx) -> None:
    response = httpx.get(f"http://127.0.0.1:{secured.http_port}/api/jobs?status=idle", timeout=10)
    assert response.status_code == 301
    assert response.headers["Location"] == "https://127.0.0.1/api/jobs?status=idle"


def test_https_answers_with_the_apps_responses_and_hsts(secured: Nginx) -> None:
    with secured.client() as http:
        response = http.get("/api/health", headers=AUTH)
    assert response.status_code == 200 and response.json()["status"] == "healthy"
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")
    assert "nginx/" not in response.headers.get("Server", "")  # server_tokens off


# -- REST and WebSockets -----------------------------------------------------------------------
async def test_rest_creates_a_flow_and_runs_a_job_through_the_proxy(secured: Nginx) -> None:
    async with secured.async_client(headers=AUTH) as rest:
        created = await rest.post("/api/flows", json={"dsl_dict": relay_flow("rest-relay")})
        assert created.status_code == 201, created.text
        started = await rest.post("/api/jobs", json={
            "flow_id": "rest-relay", "complete_when_idle": True,
            "entry": {"routine_id": "relay", "slot_name": "input", "data": "through nginx"}})
        assert started.status_code == 201, started.text
        job_id = started.json()["job_id"]
        waited = await rest.post(f"/api/jobs/{job_id}/wait", json={"timeout": 10})
        assert waited.status_code == 200 and waited.json()["status"] == "completed", waited.text
        state = (await rest.get(f"/api/jobs/{job_id}/state")).json()
        assert state["shared_data"]["batches"]["keep"] == [["through nginx"]]


async def test_a_job_monitor_socket_streams_the_snapshot_and_every_event_through_the_proxy(secured: Nginx) -> None:
    async with secured.async_client(headers=AUTH) as rest:
        await rest.post("/api/flows", json={"dsl_dict": relay_flow("ws-relay")})
        job_id = (await rest.post("/api/jobs", json={"flow_id": "ws-relay"})).json()["job_id"]
        ws = await secured.ws(f"/api/ws/jobs/{job_id}/monitor", additional_headers=AUTH)
        try:
            snapshot = await recv(ws)
            assert snapshot["type"] == "snapshot" and snapshot["job_id"] == job_id
            for value in ("a", "b"):
                posted = await rest.post(f"/api/jobs/{job_id}/post",
                                         json={"routine_id": "relay", "slot_name": "input", "data": value})
                assert posted.status_code == 202, posted.text
            assert (await rest.post(f"/api/jobs/{job_id}/complete")).status_code == 200
            frames = await recv_until(ws, job_end_of(job_id))
        finally:
            await ws.close()
        stored = (await rest.get(f"/api/jobs/{job_id}/events", params={"since": snapshot["last_seq"]})).json()
    assert frames == stored["events"]  # every event, in order, none lost on the way
    assert [f["data"]["data"] for f in frames if f["type"] == "slot_call" and f["routine_id"] == "relay"] == [
        {"data": "a"}, {"data": "b"}]
    assert frames[-1]["data"]["status"] == "completed"


# -- API keys through the proxy ----------------------------------------------------------------
def test_rest_needs_the_key_through_the_proxy_except_the_liveness_probe(secured: Nginx) -> None:
    with secured.client() as http:
        missing = http.get("/api/flows")
        wrong = http.get("/api/flows", headers={"X-API-Key": "not-the-key"})
        right = http.get("/api/flows", headers=AUTH)
        live = http.get("/api/health/live")
    assert missing.status_code == 401 and missing.json()["detail"]["error"] == "authentication_required"
    assert "WWW-Authenticate" in missing.headers
    assert wrong.status_code == 403 and wrong.json()["detail"]["error"] == "invalid_api_key"
    assert right.status_code == 200
    assert live.status_code == 200 and live.json() == {"status": "ok"}


async def test_a_socket_without_the_key_is_closed_with_1008_through_the_proxy(secured: Nginx) -> None:
    ws = await secured.ws("/api/ws")
    try:
        code, reason, frames = await expect_close(ws)
    finally:
        await ws.close()
    assert (code, frames) == (1008, []), (code, reason, frames)


async def test_a_socket_key_in_the_url_or_the_subprotocol_works_and_stays_out_of_the_log(secured: Nginx) -> None:
    ways = (({}, f"/api/ws?api_key={KEY}&x=1"), ({"subprotocols": ["routilux", f"apikey.{KEY}"]}, "/api/ws"))
    for options, path in ways:
        ws = await secured.ws(path, **options)
        try:
            await ws.send(json.dumps({"type": "ping"}))
            assert await recv(ws) == {"type": "pong"}
        finally:
            await ws.close()
    log = secured.access_log.read_text()
    assert "/api/ws?api_key=[REDACTED]&x=1" in log, log[-2000:]
    assert KEY not in log


# -- limits ------------------------------------------------------------------------------------
def test_a_body_over_the_limit_is_refused_by_nginx_in_the_apis_error_shape(secured: Nginx) -> None:
    limit = 1_048_576
    with secured.client(headers={**AUTH, "Content-Type": "application/json"}) as http:
        too_big = http.post("/api/flows", content=b" " * (limit + 1))
        at_limit = http.post("/api/flows", content=b" " * limit)  # reaches the app, which reads it
    assert too_big.status_code == 413
    assert too_big.json()["detail"] == {
        "error": "payload_too_large",
        "message": "the request body is larger than 1048576 bytes",
        "limit": limit,
    }
    assert at_limit.status_code not in (413, 502) and "detail" in at_limit.json(), at_limit.text


def test_an_unreachable_app_is_a_json_502(tmp_path: Path, nginx_binary: str, cert: Cert) -> None:
    nginx = Nginx(nginx_binary, tmp_path / "nginx", free_port(), cert).start()  # nothing listens there
    try:
        with nginx.client() as http:
            response = http.get("/api/flows")
    finally:
        nginx.stop()
    assert response.status_code == 502
    assert response.json()["detail"]["error"] == "upstream_unavailable"
    assert response.headers["Retry-After"] == "1"  # clients may retry, as after a 503


# -- rate limiting by the forwarded client -----------------------------------------------------
def test_each_forwarded_client_has_its_own_budget(limited: Nginx) -> None:
    """The test client talks to nginx from 127.0.0.1, which the app trusts as a proxy here (it is
    nginx's address too): so the address it writes in X-Forwarded-For is the client nginx
    forwards, and each such client is counted on its own."""
    with limited.client() as http:
        first = [http.get("/api/flows", headers={"X-Forwarded-For": "198.51.100.1"}) for _ in range(LIMIT + 1)]
        other = http.get("/api/flows", headers={"X-Forwarded-For": "198.51.100.2"})
    assert [r.status_code for r in first] == [200] * LIMIT + [429]
    assert [int(r.headers["RateLimit-Remaining"]) for r in first[:LIMIT]] == list(range(LIMIT - 1, -1, -1))
    refused = first[-1]
    assert refused.json()["detail"]["error"] == "rate_limited" and refused.json()["detail"]["message"]
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["RateLimit-Limit"] == str(LIMIT) and refused.headers["RateLimit-Remaining"] == "0"
    assert int(refused.headers["RateLimit-Reset"]) >= 1
    assert other.status_code == 200 and other.headers["RateLimit-Remaining"] == str(LIMIT - 1)


async def test_a_limited_client_cannot_open_sockets_either(limited: Nginx) -> None:
    with limited.client() as http:
        statuses = [
            http.get("/api/flows", headers={"X-Forwarded-For": "198.51.100.3"}).status_code for _ in range(LIMIT)
        ]
    assert statuses == [200] * LIMIT
    with pytest.raises(websockets.InvalidStatus) as refused:
        await limited.ws("/api/ws", additional_headers={"X-Forwarded-For": "198.51.100.3"})
    assert refused.value.response.status_code == 429
    ws = await limited.ws("/api/ws", additional_headers={"X-Forwarded-For": "198.51.100.4"})
    try:
        await ws.send(json.dumps({"type": "ping"}))
        assert await recv(ws) == {"type": "pong"}
    finally:
        await ws.close()


def test_a_client_cannot_escape_the_limit_by_writing_its_own_x_forwarded_for(limited: Nginx) -> None:
    """From 127.0.0.2 — an address the app does not trust — a forged X-Forwarded-For is only a
    claim: nginx appends the real peer, and the app counts that peer, whatever precedes it."""
    transport = httpx.HTTPTransport(local_address="127.0.0.2", verify=limited.cert.client_context())
    with httpx.Client(base_url=limited.url, transport=transport, timeout=10) as http:
        statuses = [
            http.get("/api/flows", headers={"X-Forwarded-For": f"203.0.113.{n}"}).status_code for n in range(LIMIT + 2)
        ]
    assert statuses == [200] * LIMIT + [429, 429]

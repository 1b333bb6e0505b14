"""API keys: with auth on, every /api request needs one; the docs and the liveness probe stay
public; keys never reach the logs; CORS headers reach browsers on refusals too."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from routilux.server.settings import Settings, SettingsError
from tests.support.servers import ServerProcess


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(
        tmp_path_factory.mktemp("auth") / "a.db",
        api_key="first-key",
        ROUTILUX_API_KEY_ENABLED="true",
        ROUTILUX_API_KEY="first-key",
        ROUTILUX_API_KEYS=" second-key , third-key",
    ).start()
    yield server
    server.stop()


def test_missing_key_is_401_with_the_spec_body(secured: ServerProcess) -> None:
    response = httpx.get(secured.url + "/api/flows")
    assert response.status_code == 401
    assert response.json() == {"detail": {"error": "authentication_required",
                                          "message": "API key is required. Provide it in the X-API-Key header."}}
    assert response.headers["www-authenticate"].startswith("ApiKey")


def test_wrong_key_is_403_and_every_configured_key_works(secured: ServerProcess) -> None:
    wrong = httpx.get(secured.url + "/api/flows", headers={"X-API-Key": "nope"})
    assert wrong.status_code == 403 and wrong.json()["detail"]["error"] == "invalid_api_key"
    for key in ("first-key", "second-key", "third-key"):
        ok = httpx.get(secured.url + "/api/health", headers={"X-API-Key": key})
        assert ok.status_code == 200 and ok.json()["auth_required"] is True


def test_docs_stay_public(secured: ServerProcess) -> None:
    assert httpx.get(secured.url + "/openapi.json").status_code == 200
    assert httpx.get(secured.url + "/docs").status_code == 200


def test_the_liveness_probe_is_public_and_says_only_ok_while_health_needs_the_key(secured: ServerProcess) -> None:
    live = httpx.get(secured.url + "/api/health/live")
    assert live.status_code == 200 and live.json() == {"status": "ok"}
    assert httpx.get(secured.url + "/api/health").status_code == 401
    assert httpx.post(secured.url + "/api/health/live").status_code in (401, 405)  # GET only


def test_a_refusal_carries_cors_headers_for_an_allowed_origin(secured: ServerProcess) -> None:
    refused = httpx.get(secured.url + "/api/flows", headers={"Origin": "http://localhost:3000"})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "access-control-allow-credentials" not in refused.headers


def test_keys_never_appear_in_the_server_logs(tmp_path: Path) -> None:
    """uvicorn logs every path with its query string, WebSocket handshakes included."""
    server = ServerProcess(tmp_path / "logs.db", api_key="sekrit-key-123", ROUTILUX_LOG_LEVEL="info",
                           ROUTILUX_API_KEY_ENABLED="true", ROUTILUX_API_KEY="sekrit-key-123").start()
    try:
        httpx.get(server.url + "/api/flows?api_key=sekrit-key-123", headers={"X-API-Key": "sekrit-key-123"})
        httpx.get(server.url + "/api/flows?limit=5&API_KEY=other-guess&x=1")

        async def open_socket() -> None:
            url = server.url.replace("http://", "ws://") + "/api/ws?api_key=sekrit-key-123"
            async with connect(url, proxy=None, open_timeout=5) as ws:
                await ws.send('{"type": "ping"}')
                await ws.recv()

        asyncio.run(open_socket())
    finally:
        server.stop()
    log = server.output()
    assert "/api/flows?api_key=[redacted]" in log and "/api/ws?api_key=[redacted]" in log, log[-2000:]
    assert "API_KEY=[redacted]&x=1" in log, log[-2000:]
    assert "sekrit-key-123" not in log and "other-guess" not in log


def test_docs_can_be_switched_off(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "nodocs.db", ROUTILUX_DOCS_ENABLED="false").start()
    try:
        for path in ("/openapi.json", "/docs", "/redoc", "/docs/assets/swagger-ui.css"):
            assert httpx.get(server.url + path).status_code == 404, path
        assert httpx.get(server.url + "/api/health/live").status_code == 200
    finally:
        server.stop()


def test_cors_star_warns_loudly_at_start_up(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "star.db", ROUTILUX_CORS_ORIGINS="*").start()
    try:
        anywhere = httpx.get(server.url + "/api/flows", headers={"Origin": "https://any.example"})
        assert anywhere.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in anywhere.headers
    finally:
        server.stop()
    assert "ROUTILUX_CORS_ORIGINS=*: ANY website may call this API" in server.output()


def test_enabled_without_a_key_refuses_to_start() -> None:
    with pytest.raises(SettingsError, match="no key is configured"):
        Settings.from_env({"ROUTILUX_API_KEY_ENABLED": "true"})


def test_cors_allows_localhost_by_default_and_not_others(server: ServerProcess) -> None:
    ok = httpx.options(server.url + "/api/flows", headers={
        "Origin": "http://localhost:3000", "Access-Control-Request-Method": "GET"})
    assert ok.headers["access-control-allow-origin"] == "http://localhost:3000"
    bad = httpx.options(server.url + "/api/flows", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in bad.headers


def test_settings_parse_keys_and_origins() -> None:
    settings = Settings.from_env({"ROUTILUX_API_KEY": "a", "ROUTILUX_API_KEYS": "b, a ,c",
                                  "ROUTILUX_CORS_ORIGINS": "https://x.example/, http://y:8080"})
    assert settings.api_keys == ("a", "b", "c")
    assert settings.cors_origins == ("https://x.example", "http://y:8080")
    with pytest.raises(SettingsError, match="ROUTILUX_CORS_ORIGINS"):
        Settings.from_env({"ROUTILUX_CORS_ORIGINS": "ftp://x"})

"""API keys: with auth on, every /api request needs one; the docs stay public."""

from __future__ import annotations

from collections.abc import Iterator
import httpx
import pytest
from server import ServerProcess

from routilux.api.settings import Settings, SettingsError


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

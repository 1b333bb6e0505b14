"""The socket limits come from the settings, checked at start-up like every other variable."""

from __future__ import annotations

import resource

import pytest

from routilux.api.transport import SocketLimits
from routilux.api.transport.protocol import default_max_connections
from routilux.server.settings import Settings, SettingsError


def test_the_limits_are_the_settings() -> None:
    settings = Settings.from_env({
        "ROUTILUX_MAX_HEADER_LINE_BYTES": "4096", "ROUTILUX_MAX_HEADER_BYTES": "32768",
        "ROUTILUX_HEADER_TIMEOUT_SECONDS": "5", "ROUTILUX_BODY_TIMEOUT_SECONDS": "20",
        "ROUTILUX_BODY_MIN_RATE": "0", "ROUTILUX_MAX_CONNECTIONS": "500",
    })
    assert SocketLimits.from_settings(settings) == SocketLimits(
        max_line=4096, max_head=32768, header_timeout=5.0, body_timeout=20.0, body_min_rate=0, max_connections=500)


def test_by_default_the_connection_cap_stays_below_the_open_file_limit() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    cap = SocketLimits.from_settings(Settings()).max_connections
    assert cap == default_max_connections() == min(10_000, soft - 100)


@pytest.mark.parametrize(("environ", "named"), [
    ({"ROUTILUX_MAX_HEADER_LINE_BYTES": "100"}, "ROUTILUX_MAX_HEADER_LINE_BYTES"),
    ({"ROUTILUX_MAX_HEADER_LINE_BYTES": "65536", "ROUTILUX_MAX_HEADER_BYTES": "8192"}, "more than"),
    ({"ROUTILUX_HEADER_TIMEOUT_SECONDS": "0"}, "ROUTILUX_HEADER_TIMEOUT_SECONDS"),
    ({"ROUTILUX_BODY_MIN_RATE": "-1"}, "ROUTILUX_BODY_MIN_RATE"),
    ({"ROUTILUX_MAX_CONNECTIONS": "5"}, "ROUTILUX_MAX_CONNECTIONS"),
])
def test_a_bad_limit_stops_the_server_naming_the_variable(environ: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        Settings.from_env(environ)

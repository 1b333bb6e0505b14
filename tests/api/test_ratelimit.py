"""Rate limiting: ``ROUTILUX_RATE_LIMIT_PER_MINUTE`` requests per client IP in any sliding minute.

Over a real server: every HTTP response says where the client stands (``RateLimit-*``); past the
limit the answer is 429 in the API's error shape with ``Retry-After``; WebSocket handshakes count
and are refused the same way; unauthenticated requests count (guessing keys is limited);
preflights and the liveness probe do not. The client is the socket peer, or the
``X-Forwarded-For`` client only when the peer is a trusted proxy.

The window arithmetic itself (when a refused client may come back) is checked on the limiter
with a controlled clock.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
import websockets
from websockets.asyncio.client import connect

from routilux.api.middleware.ratelimit import RateLimiter
from tests.support.servers import ServerProcess
from tests.support.spec_check import httpx_sync_event_hook

LIMIT = 5
KEY = "rl-key"


def start(tmp_path_factory: pytest.TempPathFactory, name: str, **env: str) -> ServerProcess:
    return ServerProcess(
        tmp_path_factory.mktemp(name) / "r.db",
        api_key=KEY,
        ROUTILUX_RATE_LIMIT_ENABLED="true",
        ROUTILUX_RATE_LIMIT_PER_MINUTE=str(LIMIT),
        ROUTILUX_API_KEY_ENABLED="true",
        ROUTILUX_API_KEY=KEY,
        **env,
    )


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Trusts 127.0.0.1 as a proxy, so each test can be a different client by X-Forwarded-For.
    (``start()`` polls /api/health with the key, unforwarded: that is the proxy's own quota.)"""
    server = start(tmp_path_factory, "rl-proxied", ROUTILUX_TRUSTED_PROXIES="127.0.0.1").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Trusts no proxy: X-Forwarded-For is just a header anyone can send."""
    server = start(tmp_path_factory, "rl-direct").start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def clear_of_a_window_boundary() -> None:
    """The counters roll over at whole minutes (epoch multiples of 60 s): right after one, the
    previous minute's hits weigh a hair less than their count, and one more request may fit. The
    server tests take well under 5 s each, so start them 5 s clear of a boundary."""
    into_minute = time.time() % 60
    if into_minute > 55:
        time.sleep(60 - into_minute + 0.1)


def as_client(ip: str, *, key: str | None = KEY, **headers: str) -> dict[str, str]:
    sent = {"X-Forwarded-For": ip, **headers}
    if key is not None:
        sent["X-API-Key"] = key
    return sent


def test_each_response_counts_down_then_429_with_retry_after_and_the_error_shape(proxied: ServerProcess) -> None:
    headers = as_client("203.0.113.1")
    remaining = []
    for _ in range(LIMIT):
        ok = httpx.get(proxied.url + "/api/flows", headers=headers)
        assert ok.status_code == 200, ok.text
        assert ok.headers["ratelimit-limit"] == str(LIMIT)
        assert 0 < int(ok.headers["ratelimit-reset"]) <= 120
        remaining.append(int(ok.headers["ratelimit-remaining"]))
    assert remaining == [4, 3, 2, 1, 0]

    refused = httpx.get(proxied.url + "/api/flows", headers=headers)
    assert refused.status_code == 429
    assert refused.json()["detail"]["error"] == "rate_limited"
    assert f"{LIMIT} requests per minute" in refused.json()["detail"]["message"]
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert refused.headers["ratelimit-remaining"] == "0"
    assert refused.headers["ratelimit-reset"] == str(retry_after)
    httpx_sync_event_hook(refused)  # as documented in openapi.yaml


def test_clients_are_limited_separately(proxied: ServerProcess) -> None:
    for _ in range(LIMIT):
        assert httpx.get(proxied.url + "/api/flows", headers=as_client("203.0.113.2")).status_code == 200
    assert httpx.get(proxied.url + "/api/flows", headers=as_client("203.0.113.2")).status_code == 429
    other = httpx.get(proxied.url + "/api/flows", headers=as_client("203.0.113.3"))
    assert other.status_code == 200 and other.headers["ratelimit-remaining"] == str(LIMIT - 1)


def test_unauthenticated_requests_count_so_guessing_keys_is_limited(proxied: ServerProcess) -> None:
    guesses = [httpx.get(proxied.url + "/api/flows", headers=as_client("203.0.113.4", key=f"guess-{n}"))
               for n in range(LIMIT + 2)]
    assert [r.status_code for r in guesses] == [403] * LIMIT + [429, 429]
    # and the right key does not get around it either
    assert httpx.get(proxied.url + "/api/flows", headers=as_client("203.0.113.4")).status_code == 429


def test_preflights_and_the_liveness_probe_are_not_counted(proxied: ServerProcess) -> None:
    client = "203.0.113.5"
    for _ in range(LIMIT * 3):
        live = httpx.get(proxied.url + "/api/health/live", headers=as_client(client, key=None))
        assert live.status_code == 200 and live.json() == {"status": "ok"}
        preflight = httpx.options(proxied.url + "/api/flows", headers=as_client(
            client, key=None, Origin="http://localhost:3000", **{"Access-Control-Request-Method": "GET"}))
        assert preflight.status_code == 200
    counted = httpx.get(proxied.url + "/api/flows", headers=as_client(client))
    assert counted.headers["ratelimit-remaining"] == str(LIMIT - 1)


def test_a_refusal_carries_cors_headers_so_a_dashboard_can_read_it(proxied: ServerProcess) -> None:
    headers = as_client("203.0.113.6", Origin="http://localhost:3000")
    responses = [httpx.get(proxied.url + "/api/flows", headers=headers) for _ in range(LIMIT + 1)]
    refused = responses[-1]
    assert refused.status_code == 429
    assert refused.headers["access-control-allow-origin"] == "http://localhost:3000"
    exposed = {h.strip().lower() for h in refused.headers["access-control-expose-headers"].split(",")}
    assert {"retry-after", "ratelimit-remaining"} <= exposed


async def test_websocket_handshakes_count_and_are_refused_with_429(proxied: ServerProcess) -> None:
    headers = as_client("203.0.113.7")
    url = proxied.url.replace("http://", "ws://") + "/api/ws"
    for _ in range(LIMIT):
        async with connect(url, additional_headers=headers, proxy=None, open_timeout=5) as ws:
            await ws.send('{"type": "ping"}')
            assert await ws.recv() == '{"type":"pong"}'
    with pytest.raises(websockets.InvalidStatus) as refused:
        await connect(url, additional_headers=headers, proxy=None, open_timeout=5)
    response = refused.value.response
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1
    assert b'"rate_limited"' in response.body
    # REST shares the quota
    assert httpx.get(proxied.url + "/api/flows", headers=headers).status_code == 429


def test_without_trusted_proxies_x_forwarded_for_is_ignored(direct: ServerProcess) -> None:
    # every request comes from 127.0.0.1, whatever it claims; start() already used part of it
    statuses = [httpx.get(direct.url + "/api/flows", headers=as_client(f"198.51.100.{n}")).status_code
                for n in range(LIMIT + 1)]
    assert statuses[-1] == 429 and 200 in statuses


# -- the window arithmetic, with a controlled clock ----------------------------------------------
class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(60 * 16_667 + 20.0)  # 20 s into a minute window (windows start at multiples of 60)


def test_a_refused_client_is_let_in_exactly_when_retry_after_says(clock: Clock) -> None:
    limiter = RateLimiter(10, clock=clock.time)
    assert all(limiter.hit("c")[0] for _ in range(10))
    allowed, remaining, wait = limiter.hit("c")
    assert (allowed, remaining) == (False, 0)
    assert wait == pytest.approx(40.0, abs=0.01)  # the window closes in 40 s; then the old hits weigh < 10
    clock.now += wait - 0.5
    assert limiter.hit("c")[0] is False
    clock.now += 0.51
    assert limiter.hit("c")[0] is True
    assert limiter.limited == 2


def test_the_previous_minute_still_weighs_until_it_has_slid_out(clock: Clock) -> None:
    limiter = RateLimiter(10, clock=clock.time)
    assert all(limiter.hit("c")[0] for _ in range(10))  # at 20 s
    clock.now += 40.0 + 25.0  # 25 s into the next window: the 10 old hits weigh 10 * 35/60 = 5.83
    results = [limiter.hit("c") for _ in range(6)]
    assert [r[0] for r in results] == [True] * 5 + [False]  # 5.83 + 5 new ones reach 10
    assert results[-1][2] == pytest.approx(5.0, abs=0.01)  # in 5 s the old weigh 5: 5 + 5 < 10 then
    clock.now += 4.9
    assert limiter.hit("c")[0] is False
    clock.now += 0.11
    assert limiter.hit("c")[0] is True


def test_counters_of_gone_clients_are_swept(clock: Clock) -> None:
    limiter = RateLimiter(10, clock=clock.time)
    for n in range(100):
        limiter.hit(f"client-{n}")
    assert len(limiter.storage) == 100
    clock.now += 3 * 60 + 1  # every counter (kept two windows) has expired
    limiter.hit("newcomer")
    assert len(limiter.storage) == 1

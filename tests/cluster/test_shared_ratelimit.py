"""With ``ROUTILUX_REDIS_URL`` the rate limit is one limit for every server sharing the Redis
(``limits``' Redis storage), not one per process: what a client spent on A is spent on B."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import httpx
import pytest

from tests.support.servers import ServerProcess
from tests.support.ws import start_server

LIMIT = 200  # above the health polls of two servers starting up, which count too


@pytest.fixture(scope="module")
def limited(redis_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ServerProcess]]:  # type: ignore[no-untyped-def]
    env = {
        # a database of its own, so no other test's counters for 127.0.0.1 share these
        "ROUTILUX_REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/3",
        "ROUTILUX_RATE_LIMIT_ENABLED": "true",
        "ROUTILUX_RATE_LIMIT_PER_MINUTE": str(LIMIT),
    }
    a = start_server(tmp_path_factory.mktemp("rl_a"), **env)
    try:
        b = start_server(tmp_path_factory.mktemp("rl_b"), **env)
    except BaseException:
        a.stop()
        raise
    yield a, b
    codes = [(proc, proc.stop(timeout=10)) for proc in (b, a)]  # both stopped, then judged
    for proc, code in codes:
        assert code in (0, -signal.SIGTERM), proc.output()[-2000:]


def test_two_servers_share_one_limit(limited: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = limited
    with httpx.Client(timeout=10) as http:
        def remaining_on(server: ServerProcess) -> int:
            response = http.get(server.url + "/api/flows")
            assert response.status_code == 200, response.text
            return int(response.headers["RateLimit-Remaining"])

        before = remaining_on(a)
        for _ in range(5):
            remaining_on(b)
        # A's count moved by B's five requests and its own one (a per-process limit: one)
        assert remaining_on(a) <= before - 6 + 1  # +1: the weighted previous window may decay
        # spend the rest on B alone; then A refuses too, at its own first request
        for _ in range(LIMIT + 1):
            if http.get(b.url + "/api/flows").status_code == 429:
                break
        else:
            raise AssertionError("B never refused")
        on_a = http.get(a.url + "/api/flows")
        assert on_a.status_code == 429, on_a.text
        assert on_a.json()["detail"]["error"] == "rate_limited"
        assert int(on_a.headers["Retry-After"]) >= 1


async def test_an_unreachable_redis_falls_back_to_counting_locally() -> None:
    """While Redis cannot be reached, the limit is counted in this process (neither open nor
    closed), each answer comes at once, and Redis is asked again after ``retry_seconds``."""
    import time

    from routilux.api.middleware.ratelimit import SharedRateLimiter
    from tests.support.servers import free_port

    limiter = SharedRateLimiter(2, f"redis://127.0.0.1:{free_port()}/0", retry_seconds=0.2)
    started = time.monotonic()
    verdicts = [(await limiter.acquire("10.0.0.1"))[0] for _ in range(3)]
    assert verdicts == [True, True, False]
    assert (await limiter.acquire("10.0.0.2"))[0]  # counted per client, as always
    assert time.monotonic() - started < 2
    assert limiter.unchecked == 4 and limiter.limited == 1
    asked_at = limiter._redis_down_until
    time.sleep(0.25)
    await limiter.acquire("10.0.0.3")  # asks Redis again (still down): the next retry moves on
    assert limiter._redis_down_until > asked_at

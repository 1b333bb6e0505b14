"""A cluster server says at start-up when its Redis would lose acknowledged writes.

Real ``redis-server`` processes, one per persistence setting: ``deploy/redis.conf`` itself (AOF,
``appendfsync everysec``: nothing to say), no persistence at all, RDB snapshots only, AOF without
fsync, and ``CONFIG`` renamed away (as managed Redis services do: the check says it could not
check). Then a real server process on a Redis without persistence logs the warning.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from routilux.store.redis.persistence import read_persistence, warn_without_persistence
from tests.support.processes import REPO
from tests.support.redis_conf import ConfiguredRedisServer
from tests.support.redis_server import RedisServer
from tests.support.servers import ServerProcess

REDIS_CONF = REPO / "deploy" / "redis.conf"


@pytest.fixture
def redis_with(tmp_path: Path) -> Iterator[object]:
    """Start a redis-server with the given config file and options; every one stopped after."""
    started: list[RedisServer] = []

    def start(*options: str, conf: Path | None = None) -> RedisServer:
        directory = tmp_path / f"redis{len(started)}"
        directory.mkdir()
        server = ConfiguredRedisServer(directory, conf=conf, options=options)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
async def clients() -> AsyncIterator[list[aioredis.Redis]]:
    made: list[aioredis.Redis] = []
    yield made
    for client in made:
        await client.aclose()


async def _warned(server: RedisServer, clients: list[aioredis.Redis], caplog: pytest.LogCaptureFixture) -> str:
    client = aioredis.Redis.from_url(server.url)
    clients.append(client)
    caplog.clear()
    with caplog.at_level("WARNING", logger="routilux.store.redis"):
        await warn_without_persistence(client, server.url)
    return "\n".join(r.getMessage() for r in caplog.records if r.name == "routilux.store.redis")


async def test_the_shipped_config_is_durable_and_nothing_is_logged(redis_with, clients, caplog) -> None:  # type: ignore[no-untyped-def]
    server = redis_with(conf=REDIS_CONF)
    client = aioredis.Redis.from_url(server.url)
    clients.append(client)
    found = await read_persistence(client)
    assert (found.appendonly, found.appendfsync, found.problem) == (True, "everysec", None)
    assert await _warned(server, clients, caplog) == ""
    assert (Path(server.workdir) / "appendonlydir").is_dir()  # the AOF is really written


async def test_no_persistence_is_warned(redis_with, clients, caplog) -> None:  # type: ignore[no-untyped-def]
    logged = await _warned(redis_with("--save", "", "--appendonly", "no"), clients, caplog)
    assert "Redis has no persistence" in logged and "appendonly yes" in logged, logged


async def test_rdb_snapshots_only_are_warned(redis_with, clients, caplog) -> None:  # type: ignore[no-untyped-def]
    logged = await _warned(redis_with("--save", "60 1"), clients, caplog)
    assert "no AOF, only RDB snapshots" in logged and "60 1" in logged, logged


async def test_aof_without_fsync_is_warned(redis_with, clients, caplog) -> None:  # type: ignore[no-untyped-def]
    logged = await _warned(redis_with("--appendonly", "yes", "--appendfsync", "no"), clients, caplog)
    assert "appendfsync no" in logged and "machine crash" in logged, logged


async def test_config_refused_says_it_could_not_check(redis_with, clients, caplog) -> None:  # type: ignore[no-untyped-def]
    logged = await _warned(redis_with("--rename-command", "CONFIG", ""), clients, caplog)
    assert "could not check whether Redis persists its data (CONFIG GET refused" in logged, logged


def test_a_cluster_server_logs_the_warning_at_start_up(redis_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The session's redis-server (tests/cluster/conftest.py) runs without persistence."""
    server = ServerProcess(tmp_path / "r.db", ROUTILUX_REDIS_URL=redis_server.db_url(13)).start()
    try:
        output = server.output()
    finally:
        server.stop()
    assert "Redis has no persistence" in output and f"127.0.0.1:{redis_server.port}/13" in output, output[-3000:]

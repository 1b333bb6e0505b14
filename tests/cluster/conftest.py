"""Fixtures of the cluster tests: a real ``redis-server`` (see ``tests/support/redis_server.py``),
a client of it, and a key prefix of each test's own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from tests.support.redis_server import RedisServer, running_redis_server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    yield from running_redis_server(tmp_path_factory)


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    async with aioredis.Redis.from_url(redis_server.url) as client:
        yield client


@pytest.fixture
def prefix() -> str:
    """A namespace of the test's own on the shared server."""
    return f"t{uuid.uuid4().hex[:8]}"

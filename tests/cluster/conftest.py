"""Fixtures of the cluster tests: a real ``redis-server`` (see ``tests/support/redis_server.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.redis_server import RedisServer, running_redis_server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    yield from running_redis_server(tmp_path_factory)

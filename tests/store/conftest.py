"""Fixtures for the store suite: every store kind, opened and closed by one owner task; the
"redis" kind runs against a real redis-server, one per session (``tests/support/redis_server.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import stores
from tests.support.redis_server import RedisServer, running_redis_server
from tests.support.stores import KINDS, build, held


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    yield from running_redis_server(tmp_path_factory)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    if request.param == "redis":  # started on the first redis test only
        stores.redis_url = request.getfixturevalue("redis_server").url
    return request.param


@pytest.fixture
def make_store(kind: str, tmp_path: Path) -> Callable[..., Any]:
    """``async with make_store(**options) as store:`` — a store of this test's kind."""
    return lambda **options: held(build(kind, tmp_path, **options))


@pytest.fixture
async def store(kind: str, tmp_path: Path) -> AsyncIterator[Any]:
    async with held(build(kind, tmp_path)) as opened:
        yield opened

"""Fixtures of the cluster tests: a real ``redis-server`` (see ``tests/redis_support.py``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "api"))  # server.py
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "api" / "ws"))  # ws_support.py
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "store"))  # store_helpers.py

from redis_support import RedisServer, running_redis_server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    yield from running_redis_server(tmp_path_factory)

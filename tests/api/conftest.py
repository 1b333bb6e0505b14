"""API tests run against a real uvicorn server process on a loopback port, with a real SQLite
file, and every response they receive is validated against ``openapi/openapi.yaml``."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from server import ServerProcess  # noqa: E402
from spec_check import httpx_event_hook  # noqa: E402


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    db = tmp_path_factory.mktemp("api") / "routilux.db"
    proc = ServerProcess(db).start()
    yield proc
    proc.stop()


@pytest.fixture
async def client(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=server.url, timeout=30, event_hooks={"response": [httpx_event_hook]}
    ) as http:
        yield http


@pytest.fixture
def uid() -> str:
    """A fresh id suffix, so tests sharing one server never collide."""
    return uuid.uuid4().hex[:10]

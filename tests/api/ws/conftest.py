"""Fixtures of the WebSocket tests.

Every test talks to a real ``python -m routilux.api.main`` (uvicorn) over loopback with the
``websockets`` client. ``ws_server`` is the server a test module uses: the session's default
server unless the module overrides the fixture with its own (module-scoped, so the tests that
share settings share one process). ``rest`` is a plain HTTP client for that server, used to
drive jobs and to read back a job's events for comparison.

With ``ROUTILUX_TEST_DEPLOYMENT=cluster`` every one of those servers is the cluster deployment
instead (redis-server, ``gunicorn -w 4``, nginx in front: ``tests/support/cluster.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.support.servers import ServerProcess


@pytest.fixture(scope="module")
def ws_server(server: ServerProcess) -> ServerProcess:
    return server


@pytest.fixture
async def rest(ws_server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"X-API-Key": ws_server.api_key} if ws_server.api_key else {}
    async with httpx.AsyncClient(base_url=ws_server.url, timeout=30, headers=headers) as http:
        yield http

"""API tests run against a real uvicorn server process on a loopback port, with a real SQLite
file, and every response they receive is validated against ``openapi/openapi.yaml``.

``ROUTILUX_TEST_DEPLOYMENT=cluster`` runs the same tests against a cluster instead: redis-server,
``gunicorn -w 4`` and nginx in front (``tests/support/cluster.py``); tests marked
``single_process`` are skipped there."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.support.servers import ServerProcess, deployment_kind, start_deployment
from tests.support.spec_check import httpx_event_hook


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The server most API tests share: one process, or with ``ROUTILUX_TEST_DEPLOYMENT=cluster``
    redis-server + ``gunicorn -w 4`` + nginx (``tests/support/cluster.py``)."""
    proc = start_deployment(tmp_path_factory.mktemp("api"))
    yield proc
    proc.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under the cluster deployment, a test marked ``single_process`` (it checks what only one
    server process can have) is skipped, saying so; the cluster runs deselect them anyway."""
    if deployment_kind() != "cluster":
        return
    skip = pytest.mark.skip(reason="single_process: not meaningful under ROUTILUX_TEST_DEPLOYMENT=cluster")
    for item in items:
        if item.get_closest_marker("single_process") is not None:
            item.add_marker(skip)


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

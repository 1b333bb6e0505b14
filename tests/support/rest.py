"""Small builders shared by the API tests."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import httpx

T = TypeVar("T")

ETL_YAML = """\
flow_id: {flow_id}
description: extract, clean, keep
execution: {{timeout: 300}}
routines:
  source:   {{class: DataSource, config: {{items: [a, b, c]}}}}
  clean:    {{class: DataTransformer, config: {{transformation: upper}}, error_handler: {{strategy: retry, max_retries: 3}}}}
  sink:     {{class: DataSink}}
connections:
  - {{from: source.output, to: clean.input}}
  - {{from: clean.output, to: sink.input}}
"""  # noqa: E501 (the flow as a user writes it, one routine a line)


def etl_yaml(flow_id: str) -> str:
    return ETL_YAML.format(flow_id=flow_id)


def slow_flow(flow_id: str, delay: float = 5.0) -> dict[str, Any]:
    return {
        "flow_id": flow_id,
        "routines": {"slow": {"class": "Slow", "config": {"delay": delay}}, "sink": {"class": "Collect"}},
        "connections": [{"from": "slow.output", "to": "sink.input"}],
    }


async def create_flow(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/api/flows", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def start_job(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/api/jobs", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def wait_job(client: httpx.AsyncClient, job_id: str, timeout: float = 10) -> dict[str, Any]:
    response = await client.post(f"/api/jobs/{job_id}/wait", json={"timeout": timeout})
    assert response.status_code == 200, response.text
    return response.json()


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"detail"}, body
    detail = body["detail"]
    assert isinstance(detail["error"], str) and isinstance(detail["message"], str)
    return detail


async def poll(fetch: Callable[[], Awaitable[T]], done: Callable[[T], bool], what: str, timeout: float = 10.0) -> T:
    """``fetch()`` until ``done(value)``; fails with the last value after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await fetch()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last seen: {value!r}")
        await anyio.sleep(0.02)

"""Small builders shared by the API tests."""

from __future__ import annotations

from typing import Any

import httpx

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
"""


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

"""The README's resuming WebSocket client works as written against a live server."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
from pathlib import Path

import httpx

from tests.support.rest import create_flow, start_job

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def _client_code() -> str:
    block = re.search(r"A client that resumes where it left off:\n\n```python\n(.*?)```", README, re.S)
    assert block is not None
    return block.group(1).replace('asyncio.run(follow("<job_id>"))', "")


async def test_the_readme_client_follows_a_job_to_its_end(client: httpx.AsyncClient, server, uid: str) -> None:
    namespace: dict = {}
    exec(compile(_client_code(), "README.md", "exec"), namespace)  # noqa: S102
    flow_id = f"ws-readme-{uid}"
    await create_flow(client, dsl_dict={"flow_id": flow_id, "routines": {
        "slow": {"class": "Slow", "config": {"delay": 0.3}}, "keep": {"class": "Collect"}},
        "connections": [{"from": "slow.output", "to": "keep.input"}]})
    job = await start_job(client, flow_id=flow_id, complete_when_idle=True,
                          entry={"routine_id": "slow", "slot_name": "input", "data": 1})
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        await asyncio.wait_for(namespace["follow"](job["job_id"], server.url.replace("http", "ws")), 10)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("1 job_start")
    assert lines[-1].split()[1] == "job_end"
    assert [int(line.split()[0]) for line in lines] == list(range(1, len(lines) + 1))

"""Start a job over REST and print its events as they stream over ``/api/ws``.

    python examples/client.py --server http://localhost:20555 --flow-file examples/flows/etl.yaml \
        --entry source.trigger --data '"hello"'

The flow is created from ``--flow-file`` if the server does not have it yet (or named with
``--flow``). The job is started first and the socket then subscribes with ``since: 0``: the
server replays what already happened, so no event is missed however fast the job is. Exits 0
when the job completed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import websockets


def create_flow(http: httpx.Client, path: Path) -> str:
    """POST the flow file's DSL; a flow that already exists (409) is used as it is."""
    response = http.post("/api/flows", json={"dsl": path.read_text()})
    if response.status_code == 409:
        return str(response.json()["detail"]["flow_id"])
    response.raise_for_status()
    return str(response.json()["flow_id"])


def start_job(http: httpx.Client, flow_id: str, entry: str, data: Any) -> str:
    routine_id, _, slot = entry.partition(".")
    response = http.post("/api/jobs", json={
        "flow_id": flow_id,
        "complete_when_idle": True,
        "entry": {"routine_id": routine_id, "slot_name": slot, "data": data},
    })
    response.raise_for_status()
    return str(response.json()["job_id"])


async def follow(ws_url: str, job_id: str, headers: dict[str, str], timeout: float) -> str:
    """Print every event of the job until its ``job_end``; returns the final status."""
    async with websockets.connect(f"{ws_url}/api/ws", additional_headers=headers) as ws:
        await ws.send(json.dumps({"type": "subscribe", "job_id": job_id, "since": 0}))
        async with asyncio.timeout(timeout):
            async for raw in ws:
                frame = json.loads(raw)
                kind = frame.get("type")
                if kind == "error":
                    raise RuntimeError(frame.get("message", frame))
                if kind == "gap":
                    print(f"(lost events {frame['from_seq']}..{frame['to_seq']})")
                elif "seq" in frame:
                    where = frame.get("routine_id") or "-"
                    print(f"{frame['seq']:>4} {kind:<14} {where:<12} {json.dumps(frame['data'])[:100]}")
                    if kind == "job_end":
                        return str(frame["data"]["status"])
    raise RuntimeError("the socket closed before the job ended")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="http://localhost:20555")
    parser.add_argument("--api-key")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--flow", help="id of a flow the server has")
    group.add_argument("--flow-file", type=Path, help="create the flow from this DSL file first")
    parser.add_argument("--entry", default="source.trigger", metavar="ROUTINE.SLOT")
    parser.add_argument("--data", default="null", metavar="JSON")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()

    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    with httpx.Client(base_url=args.server, headers=headers, timeout=30) as http:
        flow_id = args.flow or create_flow(http, args.flow_file)
        job_id = start_job(http, flow_id, args.entry, json.loads(args.data))
    print(f"job {job_id} of flow {flow_id}")
    ws_url = "ws" + args.server.removeprefix("http")
    status = asyncio.run(follow(ws_url, job_id, headers, args.timeout))
    print(f"job {status}")
    return 0 if status == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())

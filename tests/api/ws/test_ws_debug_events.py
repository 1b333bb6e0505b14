"""Breakpoint hits and steps reach the debug and monitor sockets as they happen."""

from __future__ import annotations

import httpx

from tests.support.servers import ServerProcess
from tests.support.ws import control, create_flow, open_ws, post, recv, recv_until, relay_flow, start_job


async def test_breakpoint_hit_and_debug_step_reach_the_debug_and_monitor_sockets(
    ws_server: ServerProcess, rest: httpx.AsyncClient, uid: str
) -> None:
    flow = relay_flow(f"ws-debug-{uid}")
    flow_id = await create_flow(rest, flow)
    job_id = await start_job(rest, flow_id)
    first, last = list(flow["routines"])[0], list(flow["routines"])[-1]
    response = await rest.post(f"/api/breakpoints/{job_id}", json={"routine_id": last, "condition": "data == 7"})
    assert response.status_code == 201, response.text
    breakpoint_id = response.json()["breakpoint_id"]
    async with open_ws(ws_server, f"/api/ws/jobs/{job_id}/debug") as debug, \
            open_ws(ws_server, f"/api/ws/jobs/{job_id}/monitor") as monitor:
        assert (await recv(debug))["type"] == (await recv(monitor))["type"] == "snapshot"
        await post(rest, job_id, first, 7)
        for ws in (debug, monitor):
            frames = await recv_until(ws, lambda f: f["type"] == "breakpoint_hit")
            hit = frames[-1]
            assert hit["routine_id"] == last and hit["data"]["breakpoint_id"] == breakpoint_id
            assert hit["data"]["data"] == {"data": 7}  # a preview of the held item
        assert (await rest.post(f"/api/debug/{job_id}/step")).status_code == 200
        await post(rest, job_id, first, 8)
        frames = await recv_until(debug, lambda f: f["type"] == "debug_step")
        assert frames[-1]["routine_id"] in flow["routines"]
        assert {f["type"] for f in frames} <= {"routine_start", "routine_end", "slot_call", "job_pause",
                                                "job_resume", "debug_step", "breakpoint_hit"}
        await control(rest, job_id, "cancel")

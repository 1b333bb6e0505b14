"""Over REST, a job's history names what it lost: ``GET /api/jobs/{id}/events`` (and the trace
and logs views) answer ``gaps`` — every seq range that will never be returned — beside the
events, and ``last_seq`` covers a gap at the end so paging with ``since`` goes past it. The gap
here is a real one: the bus tells the recorder that a range of the job's events is lost (what a
relay that fell behind does), and the recorder records it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest

from routilux.api import Settings, create_app
from routilux.bus import Gap
from routilux.server.services import Services
from tests.support.spec_check import httpx_event_hook

FLOW = {"dsl_dict": {"flow_id": "g", "routines": {"src": {"class": "DataSource"}}}}
START = {"flow_id": "g", "entry": {"routine_id": "src", "slot_name": "trigger", "data": 1}}


@asynccontextmanager
async def serving() -> AsyncIterator[tuple[httpx.AsyncClient, Services]]:
    app = create_app(Settings(db=":memory:", docs_enabled=False))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://routilux.test",
                                     event_hooks={"response": [httpx_event_hook]}) as client:
            yield client, app.state.services


async def test_a_lost_range_is_named_in_events_trace_and_logs() -> None:
    with anyio.fail_after(20):
        async with serving() as (http, svc):
            assert (await http.post("/api/flows", json=FLOW)).status_code == 201
            job_id = (await http.post("/api/jobs", json=START)).json()["job_id"]
            before = (await http.get(f"/api/jobs/{job_id}/events")).json()
            assert before["gaps"] == []
            last = before["last_seq"]
            # The job's next three seqs are declared lost, as a relay that fell behind declares them.
            svc.engine.bus.publish_gap(Gap(job_id=job_id, from_seq=last + 1, to_seq=last + 3), "g")

            answer = (await http.get(f"/api/jobs/{job_id}/events")).json()
            assert answer["gaps"] == [{"from_seq": last + 1, "to_seq": last + 3}]
            assert [e["seq"] for e in answer["events"]] == list(range(1, last + 1))
            assert answer["last_seq"] == last + 3  # the next `since` goes past the gap

            inside = (await http.get(f"/api/jobs/{job_id}/events", params={"since": last + 1})).json()
            assert inside["gaps"] == [{"from_seq": last + 2, "to_seq": last + 3}]
            assert inside["events"] == [] and inside["last_seq"] == last + 3

            after = (await http.get(f"/api/jobs/{job_id}/events", params={"since": last + 3})).json()
            assert after == {"job_id": job_id, "events": [], "count": 0, "last_seq": None, "gaps": []}

            for view in ("trace", "logs"):
                got = (await http.get(f"/api/jobs/{job_id}/{view}")).json()
                assert got["gaps"] == [{"from_seq": last + 1, "to_seq": last + 3}], view


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_a_websocket_replay_sends_a_recorded_gap_in_its_place() -> None:
    """In process (the test must reach the server's bus to declare the loss), over a real socket
    protocol: a client replaying from 0 gets the gap frame where the lost seqs would be."""
    from starlette.testclient import TestClient

    app = create_app(Settings(db=":memory:", docs_enabled=False))
    with TestClient(app) as client:
        assert client.post("/api/flows", json=FLOW).status_code == 201
        job_id = client.post("/api/jobs", json=START).json()["job_id"]
        last = client.get(f"/api/jobs/{job_id}/events").json()["last_seq"]
        bus = app.state.services.engine.bus
        assert client.portal is not None
        client.portal.call(lambda: bus.publish_gap(Gap(job_id=job_id, from_seq=last + 1, to_seq=last + 2), "g"))
        client.get(f"/api/jobs/{job_id}/events")  # the recorder has it once a read sees it
        with client.websocket_connect(f"/api/ws/jobs/{job_id}/monitor?since=0") as ws:
            frames = [ws.receive_json() for _ in range(last + 2)]
    assert frames[0]["type"] == "snapshot"
    assert [f["seq"] for f in frames[1:last + 1]] == list(range(1, last + 1))
    assert frames[last + 1] == {"type": "gap", "job_id": job_id, "from_seq": last + 1, "to_seq": last + 2}

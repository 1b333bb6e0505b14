"""Three servers on one Redis act as one: the issue's scenario, end to end, on real processes.

A flow is created on A, a job started on B, watched on C (with replay); A pauses it, C posts to
it, A sets a breakpoint, C sees it hit, B (the owner) steps and A continues; every answer comes
from B, the only process that runs the job. Then B is killed: the job has no checkpoint (it was
started ``durable: false``), so it cannot move to another server: within the lease bound it is
``failed`` with ``interrupted: worker lost`` for everyone, C's socket sees its ``job_end``, and a
request about it never hangs. (Durable jobs move instead: ``test_moving_jobs.py``.)
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import redis

from tests.support.rest import poll
from tests.support.servers import ServerProcess
from tests.support.ws import (
    create_flow,
    is_event,
    job_end_of,
    open_ws,
    post,
    recv,
    recv_until,
    relay_flow,
    start_job,
    start_server,
    stored_events,
)

LEASE_SECONDS = 2.0
#: the lease, one reaper pass, and slack for a loaded 2-core machine
LOST_WITHIN = LEASE_SECONDS + 1.0 + 3.0


class Cluster:
    def __init__(self, servers: list[ServerProcess], redis_url: str) -> None:
        self.a, self.b, self.c = servers
        self.servers = servers
        self.redis_url = redis_url

    def owner_of(self, job_id: str) -> str | None:
        raw = redis.Redis.from_url(self.redis_url).hget("routilux:owners", job_id)
        return None if raw is None else json.loads(raw)["node"]


@pytest.fixture(scope="module")
def cluster(redis_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:  # type: ignore[no-untyped-def]
    url = redis_server.url.rsplit("/", 1)[0] + "/3"  # a database of its own: a cluster of its own
    redis.Redis.from_url(url).flushdb()
    env = {"ROUTILUX_REDIS_URL": url, "ROUTILUX_CLUSTER_LEASE_SECONDS": str(LEASE_SECONDS)}
    servers: list[ServerProcess] = []
    try:
        for name in "abc":
            group = {"ROUTILUX_WORKER_GROUP": "gpu"} if name == "c" else {}
            servers.append(start_server(tmp_path_factory.mktemp(name), ROUTILUX_NODE_ID=f"node-{name}", **group, **env))
        yield Cluster(servers, url)
    finally:
        codes = [(proc, proc.stop(timeout=10)) for proc in servers]
    for proc, code in codes:
        if proc is not servers[1]:  # B is killed by a test
            assert code in (0, -signal.SIGTERM), proc.output()[-2000:]
            assert "Traceback" not in proc.output(), proc.output()[-4000:]


@pytest.fixture
async def rest(cluster: Cluster) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    async with (
        httpx.AsyncClient(base_url=cluster.a.url, timeout=30) as a,
        httpx.AsyncClient(base_url=cluster.b.url, timeout=30) as b,
        httpx.AsyncClient(base_url=cluster.c.url, timeout=30) as c,
    ):
        yield {"a": a, "b": b, "c": c}


async def _session(client: httpx.AsyncClient, job_id: str) -> dict:  # type: ignore[type-arg]
    response = await client.get(f"/api/debug/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def test_flow_on_a_job_on_b_watched_on_c_controlled_from_everywhere_then_b_dies(
    cluster: Cluster, rest: dict[str, httpx.AsyncClient]
) -> None:
    a, b, c = rest["a"], rest["b"], rest["c"]
    flow_id = await create_flow(a, relay_flow(f"relay_{uuid.uuid4().hex[:8]}"))
    # The flow is in the shared store: B and C know it at once.
    for node in (b, c):
        assert (await node.get(f"/api/flows/{flow_id}")).json()["flow_id"] == flow_id
    job_id = await start_job(b, flow_id, durable=False)  # no checkpoint: it cannot move when B dies
    await post(b, job_id, "relay", {"n": 1})  # history C replays

    async with open_ws(cluster.c, f"/api/ws/jobs/{job_id}/monitor?since=0") as ws:
        snapshot = await recv(ws)
        assert snapshot["type"] == "snapshot" and snapshot["job_id"] == job_id

        # pause on A: B pauses it and A returns B's answer
        paused = await a.post(f"/api/jobs/{job_id}/pause", json={"reason": "from A"})
        assert paused.status_code == 200, paused.text
        assert paused.json()["status"] == "paused" and paused.json()["job_id"] == job_id
        # post on C while paused: accepted and held by B
        posted = await c.post(f"/api/jobs/{job_id}/post", json={"routine_id": "relay", "slot_name": "input",
                                                                  "data": {"n": 2}})
        assert posted.status_code == 202, posted.text
        assert posted.json()["status"] == "paused"
        resumed = await c.post(f"/api/jobs/{job_id}/resume")
        assert resumed.status_code == 200 and resumed.json()["status"] in ("running", "idle")

        # breakpoint set on A, hit by data posted on C, stepped on B, continued on A
        bp = await a.post(f"/api/breakpoints/{job_id}", json={"routine_id": "keep"})
        assert bp.status_code == 201, bp.text
        listed = (await c.get(f"/api/jobs/{job_id}/breakpoints")).json()
        assert [x["breakpoint_id"] for x in listed["breakpoints"]] == [bp.json()["breakpoint_id"]]
        await post(c, job_id, "relay", {"n": 3})
        stopped = await poll(
            lambda: _session(c, job_id), lambda s: s["paused_at"] is not None, "the breakpoint to be hit"
        )
        assert stopped["paused_at"]["routine_id"] == "keep"
        value = await a.post(f"/api/debug/{job_id}/evaluate", json={"expression": "item.n * 10"})
        assert value.status_code == 200, value.text
        assert value.json()["result"] == 30  # the frame held on B
        stepped = await b.post(f"/api/debug/{job_id}/step")
        assert stepped.status_code == 200, stepped.text
        continued = await a.post(f"/api/debug/{job_id}/continue")
        assert continued.status_code == 200, continued.text
        state = await poll(
            lambda: c.get(f"/api/jobs/{job_id}/state"), lambda r: r.json()["status"] == "idle", "the job to go idle"
        )
        assert state.status_code == 200

        # C's socket saw the job's whole history, in order, each event once
        hit = False

        def idle_after_the_breakpoint(frame: dict) -> bool:  # type: ignore[type-arg]
            nonlocal hit
            hit = hit or frame.get("type") == "breakpoint_hit"
            return hit and frame.get("type") == "job_idle"

        frames = await recv_until(ws, idle_after_the_breakpoint, timeout=10)
        seen = [f for f in frames if is_event(f)]
        assert [f["seq"] for f in seen] == list(range(1, len(seen) + 1))
        types = [f["type"] for f in seen]
        for expected in ("job_start", "job_pause", "job_resume", "breakpoint_hit"):
            assert expected in types, types

        # B dies without a word: the job fails with the worker-lost reason within the bound
        killed_at = time.monotonic()
        cluster.b.process.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        cluster.b.process.wait(5)  # type: ignore[union-attr]
        started = time.monotonic()
        during = await a.post(f"/api/jobs/{job_id}/pause")  # never a hang: B is gone
        assert time.monotonic() - started < LEASE_SECONDS + 2.5
        assert during.status_code in (503, 409), during.text
        if during.status_code == 503:
            assert during.json()["detail"]["error"] == "owner_unavailable"
            assert "Retry-After" in during.headers

        # until then, reads about the job are 503 owner_unavailable too (B alone knew its live state)
        record = await poll(
            lambda: a.get(f"/api/jobs/{job_id}"),
            lambda r: r.status_code == 200 and r.json()["status"] == "failed",
            "the job to fail after its owner died",
            LOST_WITHIN,
        )
        lost_after = time.monotonic() - killed_at
        assert lost_after < LOST_WITHIN
        assert record.json()["error_detail"] == {"type": "interrupted", "message": "interrupted: worker lost"}
        end = await recv_until(ws, job_end_of(job_id), timeout=LOST_WITHIN)
        assert end[-1]["data"]["status"] == "failed"

    # Everyone agrees, and control now says why not (409, not a hang or a 503)
    for node in (a, c):
        assert (await node.get(f"/api/jobs/{job_id}")).json()["status"] == "failed"
        refused = await node.post(f"/api/jobs/{job_id}/resume")
        assert refused.status_code == 409, refused.text
    events = await stored_events(c, job_id)
    assert events[-1]["type"] == "job_end" and events[-1]["seq"] == len(events)


async def test_a_job_started_anywhere_is_listed_everywhere(
    cluster: Cluster, rest: dict[str, httpx.AsyncClient]
) -> None:
    a, c = rest["a"], rest["c"]
    flow_id = await create_flow(c, relay_flow(f"relay_{uuid.uuid4().hex[:8]}"))
    job_id = await start_job(c, flow_id)

    async def listed() -> list[str]:
        response = await a.get("/api/jobs", params={"flow_id": flow_id})
        return [j["job_id"] for j in response.json()["jobs"]]

    await poll(listed, lambda ids: job_id in ids, "A to list C's job", 5)
    discovered = (await a.get("/api/discovery/jobs")).json()
    assert job_id in [j["job_id"] for j in discovered["jobs"]]  # C's live job, seen from A
    cancelled = await a.post(f"/api/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"


async def test_flow_revisions_hold_across_servers(cluster: Cluster, rest: dict[str, httpx.AsyncClient]) -> None:
    a, c = rest["a"], rest["c"]
    flow = relay_flow(f"relay_{uuid.uuid4().hex[:8]}")
    flow_id = await create_flow(a, flow)
    again = await c.post("/api/flows", json={"dsl_dict": flow})
    assert again.status_code == 409 and again.json()["detail"]["error"] == "flow_exists"
    # both read revision 1; A writes first; C's write with If-Match: 1 is refused, nothing lost
    body = {"dsl_dict": {**flow, "description": "A's edit"}}
    first = await a.put(f"/api/flows/{flow_id}", json=body, headers={"If-Match": "1"})
    assert first.status_code == 200, first.text
    lost = await c.put(
        f"/api/flows/{flow_id}", json={"dsl_dict": {**flow, "description": "C's edit"}}, headers={"If-Match": "1"}
    )
    assert lost.status_code == 409 and lost.json()["detail"]["error"] == "revision_mismatch", lost.text
    assert (await c.get(f"/api/flows/{flow_id}")).json()["revision"] == 2


async def test_a_runtime_with_a_worker_group_runs_its_jobs_on_that_group_only(
    cluster: Cluster, rest: dict[str, httpx.AsyncClient]
) -> None:
    """C alone is in worker group "gpu": a job of a "gpu" runtime started on A runs on C."""
    a, c = rest["a"], rest["c"]
    runtime_id = f"gpu-{uuid.uuid4().hex[:6]}"
    created = await a.post("/api/runtimes", json={"runtime_id": runtime_id, "worker_group": "gpu"})
    assert created.status_code == 201 and created.json()["worker_group"] == "gpu", created.text
    flow_id = await create_flow(a, relay_flow(f"relay_{uuid.uuid4().hex[:8]}"))
    for _ in range(3):
        job_id = await start_job(a, flow_id, runtime_id=runtime_id)
        assert cluster.owner_of(job_id) == "node-c"
        assert (await c.get(f"/api/jobs/{job_id}")).json()["runtime_id"] == runtime_id
        assert (await a.post(f"/api/jobs/{job_id}/cancel")).json()["status"] == "cancelled"
    plain = await start_job(a, flow_id)  # a runtime without a group: where it was asked
    assert cluster.owner_of(plain) == "node-a"
    nobody = f"tpu-{uuid.uuid4().hex[:6]}"
    assert (await c.post("/api/runtimes", json={"runtime_id": nobody, "worker_group": "tpu"})).status_code == 201
    refused = await a.post("/api/jobs", json={"flow_id": flow_id, "runtime_id": nobody})
    assert refused.status_code == 503 and refused.json()["detail"]["error"] == "no_worker_in_group", refused.text
    assert refused.headers["Retry-After"] == "5"

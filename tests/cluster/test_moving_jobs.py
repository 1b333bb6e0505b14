"""Jobs move instead of dying: real servers on one real redis-server, with a short lease.

- **Lost server.** ``kill -9`` of a job's owner: its durable jobs (idle with data and posts,
  paused with a parked post, running) resume on another server within the lease and reaper bound,
  from their checkpoints plus the posts acknowledged after them, and end with the right results.
- **Drain.** ``SIGTERM`` of a server under load (clients posting to its jobs through the others):
  no job fails, no acknowledged post is lost, the jobs move at once and complete elsewhere; a
  socket on another server keeps streaming every seq once, a socket on the stopping server closes
  with 1001 and a reconnection elsewhere with ``since`` gets the rest once.
- **Fencing.** A server frozen past its lease (``SIGSTOP``) whose job was adopted meanwhile, then
  thawed (``SIGCONT``), writes nothing more for that job and stops it without failing it.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx
import pytest
import redis

from tests.support.rest import poll
from tests.support.servers import ServerProcess
from tests.support.ws import expect_close, is_event, open_ws, recv, recv_until, start_server

T = TypeVar("T")

LEASE_SECONDS = 2.0
#: the lease, a reaper pass, the restore, and slack for a loaded 2-core machine
MOVED_WITHIN = LEASE_SECONDS + 1.0 + 4.0
KEEP = {"routines": {"sink": {"class": "DataSink"}}}


def _slow_sink(delay: float) -> dict[str, Any]:
    return {"routines": {"slow": {"class": "Slow", "config": {"delay": delay}}, "sink": {"class": "DataSink"}},
            "connections": [{"from": "slow.output", "to": "sink.input"}]}


def _ticker(delay: float) -> dict[str, Any]:
    """loop -> tick (sleeps) -> loop: writes events steadily for as long as it runs."""
    return {"routines": {"loop": {"class": "Loop"}, "tick": {"class": "Slow", "config": {"delay": delay}}},
            "connections": [{"from": "loop.output", "to": "tick.input"}, {"from": "tick.output", "to": "loop.input"}]}


class Cluster:
    def __init__(self, redis_url: str, directory: Path) -> None:
        self.redis_url = redis_url
        self.directory = directory
        self.servers: dict[str, ServerProcess] = {}
        self.redis = redis.Redis.from_url(redis_url)

    def start(self, *names: str) -> None:
        env = {"ROUTILUX_REDIS_URL": self.redis_url, "ROUTILUX_CLUSTER_LEASE_SECONDS": str(LEASE_SECONDS),
               "ROUTILUX_SHUTDOWN_SECONDS": "8"}
        for name in names:
            path = self.directory / name
            path.mkdir()
            self.servers[name] = start_server(path, ROUTILUX_NODE_ID=f"node-{name}", **env)

    def owner(self, job_id: str) -> str | None:
        raw = self.redis.hget("routilux:owners", job_id)
        return None if raw is None else str(json.loads(raw)["node"])

    def stream_nodes(self, job_id: str) -> list[tuple[int, str, str, dict[str, Any]]]:
        """The job's stream: (seq, writing node, type, data) per entry."""
        out = []
        for entry_id, fields in self.redis.xrange(f"routilux:job:{job_id}"):
            event = json.loads(fields[b"event"])
            out.append((int(entry_id.split(b"-")[0]), bytes(fields[b"node"]).decode(), event["type"], event["data"]))
        return out

    def stop(self) -> None:
        for server in self.servers.values():
            if server.process is not None and server.process.poll() is None:
                server.stop(timeout=15)


@pytest.fixture
def cluster(redis_server, tmp_path: Path) -> Iterator[Cluster]:  # type: ignore[no-untyped-def]
    url = redis_server.url.rsplit("/", 1)[0] + "/5"  # a database of its own: a cluster of its own
    redis.Redis.from_url(url).flushdb()
    found = Cluster(url, tmp_path)
    try:
        yield found
    finally:
        found.stop()
    for server in found.servers.values():
        assert "Traceback" not in server.output(), server.output()[-4000:]


async def _now(read: Callable[[], T]) -> T:
    """``read()`` as an awaitable, for :func:`poll`."""
    return read()


async def _flow(http: httpx.AsyncClient, flow: dict[str, Any]) -> str:
    flow_id = f"f{uuid.uuid4().hex[:8]}"
    response = await http.post("/api/flows", json={"dsl_dict": {"flow_id": flow_id, **flow}})
    assert response.status_code == 201, response.text
    return flow_id


async def _start(http: httpx.AsyncClient, flow_id: str) -> str:
    response = await http.post("/api/jobs", json={"flow_id": flow_id})
    assert response.status_code == 201, response.text
    return str(response.json()["job_id"])


async def _post(http: httpx.AsyncClient, job_id: str, routine: str, value: Any) -> httpx.Response:
    return await http.post(f"/api/jobs/{job_id}/post", json={"routine_id": routine, "slot_name": "input",
                                                             "data": value})


async def _post_ok(http: httpx.AsyncClient, job_id: str, routine: str, value: Any) -> None:
    response = await _post(http, job_id, routine, value)
    assert response.status_code == 202, response.text


async def _state(http: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    response = await http.get(f"/api/jobs/{job_id}/state")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def _results(state: dict[str, Any]) -> list[Any]:
    return [item["data"] for item in state["shared_data"].get("results", {}).get("sink", [])]


async def _settled(http: httpx.AsyncClient, job_id: str, timeout: float = 15.0) -> dict[str, Any]:
    """The job's state once it is idle (or paused)."""
    async def fetch() -> dict[str, Any]:
        response = await http.get(f"/api/jobs/{job_id}/state")
        return response.json() if response.status_code == 200 else {"status": f"http {response.status_code}"}

    return await poll(fetch, lambda s: s.get("status") in ("idle", "paused"), f"job {job_id} to settle", timeout)


async def _events(http: httpx.AsyncClient, job_id: str) -> list[dict[str, Any]]:
    response = await http.get(f"/api/jobs/{job_id}/events", params={"since": 0, "limit": 1000})
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["events"]
    return found


def _moved_once(events: list[dict[str, Any]]) -> None:
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    moves = [e for e in events if e["type"] == "job_resume" and e["data"].get("reason") == "moved"]
    assert len(moves) == 1, [(e["seq"], e["type"], e["data"]) for e in events]
    assert not [e for e in events if e["type"] == "job_end"], "the job ended"


async def test_a_killed_servers_jobs_resume_on_another_with_their_data_and_posts(cluster: Cluster) -> None:
    cluster.start("a", "b")
    a, b = cluster.servers["a"], cluster.servers["b"]
    async with httpx.AsyncClient(base_url=a.url, timeout=30) as on_a, \
            httpx.AsyncClient(base_url=b.url, timeout=30) as on_b:
        keep = await _flow(on_a, KEEP)
        slow = await _flow(on_a, _slow_sink(0.3))
        idle = await _start(on_a, keep)
        for v in range(3):
            await _post_ok(on_a, idle, "sink", v)
        await _settled(on_a, idle)
        paused = await _start(on_a, keep)
        assert (await on_a.post(f"/api/jobs/{paused}/pause")).status_code == 200
        await _post_ok(on_b, paused, "sink", "parked")  # through B, acknowledged by A
        running = await _start(on_a, slow)
        for v in range(4):
            await _post_ok(on_a, running, "slow", v)  # queued behind a 0.3 s activation
        assert {cluster.owner(j) for j in (idle, paused, running)} == {"node-a"}

        killed_at = time.monotonic()
        a.process.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        a.process.wait(5)  # type: ignore[union-attr]

        during = await on_b.post(f"/api/jobs/{idle}/pause")  # A is gone, the job not yet moved
        assert during.status_code in (200, 503), during.text  # 200 if it moved already; never a 500
        if during.status_code == 200:
            assert (await on_b.post(f"/api/jobs/{idle}/resume")).status_code == 200
        else:
            assert "Retry-After" in during.headers

        async def on_b_now() -> list[str | None]:
            return [cluster.owner(j) for j in (idle, paused, running)]

        await poll(on_b_now, lambda owners: owners == ["node-b"] * 3, "B to own the jobs", MOVED_WITHIN)
        state = await poll(lambda: on_b.get(f"/api/jobs/{idle}/state"),
                           lambda r: r.status_code == 200 and r.json()["status"] == "idle", "B to run it", MOVED_WITHIN)
        moved_after = time.monotonic() - killed_at
        assert moved_after < MOVED_WITHIN
        print(f"\nadoption after kill -9: {moved_after:.2f}s (lease {LEASE_SECONDS}s)")
        assert _results(state.json()) == [0, 1, 2]

        # more data after the move, and the other two carry on
        for v in (3, 4):
            await _post_ok(on_b, idle, "sink", v)
        assert _results(await _settled(on_b, idle)) == [0, 1, 2, 3, 4]
        assert (await on_b.get(f"/api/jobs/{paused}")).json()["status"] == "paused"
        assert (await on_b.post(f"/api/jobs/{paused}/resume")).status_code == 200
        assert _results(await _settled(on_b, paused)) == ["parked"]
        done = _results(await _settled(on_b, running, timeout=20))
        assert sorted(set(done)) == [0, 1, 2, 3]  # at-least-once: an activation cut short runs again

        for job_id in (idle, paused, running):
            assert (await on_b.post(f"/api/jobs/{job_id}/complete")).status_code == 200
            assert (await on_b.get(f"/api/jobs/{job_id}")).json()["status"] == "completed"
        _moved_once((await _events(on_b, idle))[:-1])  # all but the job_end of its completion


async def test_a_drained_server_hands_its_jobs_over_under_load(cluster: Cluster) -> None:
    cluster.start("a", "b", "c")
    a, b, c = (cluster.servers[n] for n in "abc")
    async with httpx.AsyncClient(base_url=a.url, timeout=30) as on_a, \
            httpx.AsyncClient(base_url=b.url, timeout=30) as on_b, \
            httpx.AsyncClient(base_url=c.url, timeout=30) as on_c:
        keep = await _flow(on_a, KEEP)
        jobs = [await _start(on_a, keep) for _ in range(6)]
        busy = await _start(on_a, await _flow(on_a, _slow_sink(0.3)))  # mid-activation when A stops
        assert {cluster.owner(j) for j in [*jobs, busy]} == {"node-a"}
        acknowledged: dict[str, list[int]] = {j: [] for j in jobs}
        refusals: list[int] = []
        drained = anyio.Event()
        stop_posting = anyio.Event()

        async def client(http: httpx.AsyncClient, mine: list[str]) -> None:
            n = 0
            while not stop_posting.is_set():
                for job_id in mine:
                    response = await _post(http, job_id, "sink", n)
                    if response.status_code == 202:
                        acknowledged[job_id].append(n)
                    else:
                        assert response.status_code == 503, response.text  # never a 500 or a 409
                        assert "Retry-After" in response.headers
                        refusals.append(n)
                        await anyio.sleep(0.1)
                    n += 1
                await anyio.sleep(0.02)

        started_jobs: list[str] = []

        async def starter() -> None:
            """Starts jobs on A (on B once A refuses) and posts to each through C."""
            n = 0
            while not stop_posting.is_set():
                try:
                    response = await on_a.post("/api/jobs", json={"flow_id": keep})
                except httpx.TransportError:  # A closed its socket: it is stopping
                    response = await on_b.post("/api/jobs", json={"flow_id": keep})
                if response.status_code == 503:  # shutting_down
                    response = await on_b.post("/api/jobs", json={"flow_id": keep})
                assert response.status_code == 201, response.text
                job_id = response.json()["job_id"]
                started_jobs.append(job_id)
                acknowledged[job_id] = []
                for _ in range(3):
                    answer = await _post(on_c, job_id, "sink", n)
                    if answer.status_code == 202:
                        acknowledged[job_id].append(n)
                    else:
                        assert answer.status_code == 503 and "Retry-After" in answer.headers, answer.text
                        refusals.append(n)
                    n += 1
                await anyio.sleep(0.05)

        # a socket on B follows one of A's jobs across the move; one on A is closed with 1001
        watched = jobs[0]
        async with open_ws(b, f"/api/ws/jobs/{watched}/monitor?since=0") as ws_b, \
                open_ws(a, f"/api/ws/jobs/{watched}/monitor?since=0") as ws_a:
            assert (await recv(ws_b))["type"] == "snapshot"
            assert (await recv(ws_a))["type"] == "snapshot"
            async with anyio.create_task_group() as tg:
                for i, http in enumerate((on_b, on_c, on_b)):
                    tg.start_soon(client, http, jobs[2 * i: 2 * i + 2])
                tg.start_soon(starter)
                await poll(lambda: _now(lambda: sum(map(len, acknowledged.values()))), lambda n: n >= 30,
                           "posts before the drain")
                for v in range(4):
                    await _post_ok(on_b, busy, "slow", v)
                started = time.monotonic()
                a.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
                code, _reason, seen_on_a = await expect_close(ws_a, timeout=10)
                assert code == 1001
                with anyio.fail_after(15):
                    while a.process.poll() is None:  # type: ignore[union-attr]
                        await anyio.sleep(0.05)
                drain_seconds = time.monotonic() - started
                drained.set()
                await poll(lambda: _now(lambda: [cluster.owner(j) for j in [*jobs, *started_jobs]]),
                           lambda owners: set(owners) <= {"node-b", "node-c"}, "the jobs to move", 5)
                moved_by = time.monotonic() - started
                await anyio.sleep(1.5)  # and more posts on the new owners
                stop_posting.set()
            assert a.process.returncode in (0, -signal.SIGTERM), a.output()[-3000:]  # type: ignore[union-attr]
            print(f"\ndrain: SIGTERM to exit {drain_seconds:.2f}s, all jobs owned elsewhere after {moved_by:.2f}s, "
                  f"{sum(map(len, acknowledged.values()))} posts acknowledged to {len(acknowledged)} jobs "
                  f"({len(started_jobs)} started meanwhile), {len(refusals)} answered 503")
            assert "drained: " in a.output() and " live job(s) checkpointed and handed to node-" in a.output()
            assert "the others wait" not in a.output(), a.output()[-3000:]

            for job_id in [*jobs, *started_jobs]:
                state = await _settled(on_c, job_id)
                assert sorted(_results(state)) == sorted(acknowledged[job_id]), job_id  # none lost, none twice
            busy_done = _results(await _settled(on_c, busy, timeout=20))
            assert sorted(set(busy_done)) == [0, 1, 2, 3]  # at-least-once: a cut activation runs again
            # the socket on B saw every seq once, across the move
            last = (await _events(on_c, watched))[-1]["seq"]
            frames = await recv_until(ws_b, lambda f: is_event(f) and f["seq"] >= last, timeout=10)
            seqs = [f["seq"] for f in frames if is_event(f)]
            assert seqs == list(range(1, last + 1))
        # reconnecting elsewhere with since= gets the rest, once
        seen = max([f["seq"] for f in seen_on_a if is_event(f)], default=0)
        async with open_ws(c, f"/api/ws/jobs/{watched}/monitor?since={seen}") as ws_c:
            frames = await recv_until(ws_c, lambda f: is_event(f) and f["seq"] >= last, timeout=10)
            assert [f["seq"] for f in frames if is_event(f)] == list(range(seen + 1, last + 1))
        for job_id in [*jobs, *started_jobs, busy]:
            assert (await on_b.post(f"/api/jobs/{job_id}/complete")).status_code == 200
            assert (await on_c.get(f"/api/jobs/{job_id}")).json()["status"] == "completed"
        _moved_once((await _events(on_b, watched))[:-1])


async def test_a_frozen_server_writes_nothing_for_a_job_adopted_meanwhile(cluster: Cluster) -> None:
    cluster.start("a", "b")
    a, b = cluster.servers["a"], cluster.servers["b"]
    async with httpx.AsyncClient(base_url=a.url, timeout=30) as on_a, \
            httpx.AsyncClient(base_url=b.url, timeout=30) as on_b:
        ticker = await _flow(on_a, _ticker(0.05))
        job_id = await _start(on_a, ticker)
        response = await on_a.post(f"/api/jobs/{job_id}/post", json={"routine_id": "loop", "slot_name": "input",
                                                                    "data": 100_000})
        assert response.status_code == 202, response.text
        await poll(lambda: _now(lambda: len(cluster.stream_nodes(job_id))), lambda n: n > 20, "A's events")

        a.process.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
        try:
            await poll(lambda: _now(lambda: cluster.owner(job_id)), lambda o: o == "node-b", "B to adopt it",
                       MOVED_WITHIN)
            await poll(lambda: on_b.get(f"/api/jobs/{job_id}"), lambda r: r.json()["status"] == "running",
                       "B to run it")
        finally:
            a.process.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
        # A wakes up with the job still in memory, mid-activation: its writes are refused and it
        # stops the job (no job_end, no failure), then rejoins the cluster.
        await poll(lambda: _now(lambda: a.output()), lambda out: "stopped here (not failed)" in out,
                   "A to stop its copy", 10)
        await anyio.sleep(1.0)  # what A would have written by now, it would have written
        entries = cluster.stream_nodes(job_id)
        moved = [seq for seq, _node, kind, data in entries if kind == "job_resume" and data.get("reason") == "moved"]
        assert len(moved) == 1
        after = [(seq, node) for seq, node, _kind, _data in entries if seq >= moved[0]]
        assert after and {node for _seq, node in after} == {"node-b"}, after
        seqs = [seq for seq, *_ in entries]
        assert seqs == sorted(set(seqs))
        assert (await on_a.get(f"/api/jobs/{job_id}")).json()["status"] == "running"  # forwarded to B
        assert (await on_b.post(f"/api/jobs/{job_id}/cancel")).status_code == 200
        record = (await on_a.get(f"/api/jobs/{job_id}")).json()
        assert record["status"] == "cancelled", record
        assert [kind for _s, _n, kind, _d in cluster.stream_nodes(job_id)].count("job_end") == 1

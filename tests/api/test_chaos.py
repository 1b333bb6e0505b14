"""Chaos: clients create flows, start jobs, post, pause and resume while the server is killed
(``SIGKILL``) or stopped (``SIGTERM``) at random moments, several times over one SQLite file.

After each restart: every acknowledged flow, job and post is there; every job that was live is
live again (not failed), paused if its last acknowledged action paused it; its events have no
gap in ``seq`` and one ``job_resume`` (``reason: "restart"``) per restart it lived through. After a
``SIGTERM`` the server exits within its bound and no job failed.

``make test`` runs a few rounds; ``make bench`` (``-m slow``) runs more.
"""

from __future__ import annotations

import itertools
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.servers import ServerProcess

pytestmark = pytest.mark.single_process

CLIENTS = 3
LIVE = {"running", "idle", "paused"}
SHUTDOWN_SECONDS = 10


@dataclass
class TrackedJob:
    owner: int  # the client thread that drives it (so its actions are ordered)
    posts: set[int] = field(default_factory=set)
    paused: bool = False
    uncertain: bool = False  # an action was in flight when the server went away
    restarts: int = 0


@dataclass
class World:
    flows: set[str] = field(default_factory=set)
    jobs: dict[str, TrackedJob] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    values: itertools.count[int] = field(default_factory=itertools.count)
    #: Answers no client should get from a server that is up (checked after each round).
    surprises: list[str] = field(default_factory=list)


def flow_doc(flow_id: str) -> dict[str, Any]:
    return {"dsl_dict": {"flow_id": flow_id, "routines": {"sink": {"class": "DataSink"}}}}


def client_loop(url: str, me: int, world: World, stop: threading.Event, rng: random.Random) -> None:
    with httpx.Client(base_url=url, timeout=5) as http:
        while not stop.is_set():
            with world.lock:
                mine = [j for j, t in world.jobs.items() if t.owner == me]
                flows = sorted(world.flows)
            roll = rng.random()
            job_id = rng.choice(mine) if mine else None
            tracked = world.jobs[job_id] if job_id else None
            try:
                if roll < 0.08 or not flows:
                    flow_id = f"f{me}-{next(world.values)}"
                    if http.post("/api/flows", json=flow_doc(flow_id)).status_code == 201:
                        with world.lock:
                            world.flows.add(flow_id)
                elif roll < 0.25 or tracked is None:
                    answer = http.post("/api/jobs", json={"flow_id": rng.choice(flows)})
                    if answer.status_code == 201:
                        with world.lock:
                            world.jobs[answer.json()["job_id"]] = TrackedJob(owner=me)
                elif roll < 0.85:
                    value = next(world.values)
                    answer = http.post(f"/api/jobs/{job_id}/post", json={
                        "routine_id": "sink", "slot_name": "input", "data": {"v": value}})
                    if answer.status_code == 202:
                        tracked.posts.add(value)
                    elif not stop.is_set():
                        world.surprises.append(f"post: {answer.status_code} {answer.text[:200]}")
                else:
                    action = "resume" if tracked.paused else "pause"
                    answer = http.post(f"/api/jobs/{job_id}/{action}")
                    if answer.status_code == 200:
                        tracked.paused = action == "pause"
                    elif not stop.is_set():
                        world.surprises.append(f"{action}: {answer.status_code} {answer.text[:200]}")
            except httpx.TransportError:  # the server went away under this request
                if tracked is not None:
                    tracked.uncertain = True
                return


def run_round(db: Path, world: World, sig: signal.Signals, rng: random.Random) -> None:
    server = ServerProcess(db, ROUTILUX_SHUTDOWN_SECONDS=str(SHUTDOWN_SECONDS)).start()
    stop = threading.Event()
    clients = [threading.Thread(target=client_loop, args=(server.url, me, world, stop, random.Random(rng.random())))
               for me in range(CLIENTS)]
    for client in clients:
        client.start()
    time.sleep(rng.uniform(0.3, 1.2))  # a random moment: the chaos itself, not a wait for an event
    assert server.process is not None
    stopped_at = time.monotonic()
    stop.set()  # from here on, a refusal is the stop's doing, not a surprise
    server.process.send_signal(sig)
    for client in clients:
        client.join(30)
    exit_code = server.process.wait(SHUTDOWN_SECONDS + 15)
    server.stop()
    if sig == signal.SIGTERM:
        assert time.monotonic() - stopped_at < SHUTDOWN_SECONDS + 10
        assert exit_code in (0, -signal.SIGTERM), server.output()[-3000:]
    with world.lock:
        for tracked in world.jobs.values():
            tracked.restarts += 1
    assert not world.surprises, world.surprises


def check(db: Path, world: World) -> None:
    server = ServerProcess(db).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            lost = [f for f in sorted(world.flows) if http.get(f"/api/flows/{f}").status_code != 200]
            assert not lost, f"acknowledged flows lost: {lost}"
            for job_id, tracked in world.jobs.items():
                job = http.get(f"/api/jobs/{job_id}")
                assert job.status_code == 200, f"acknowledged job {job_id} lost"
                status = job.json()["status"]
                assert status in LIVE, f"job {job_id} did not come back: {job.json()}"
                if not tracked.uncertain:
                    assert (status == "paused") == tracked.paused, f"job {job_id} is {status}"
                if status == "paused":  # every round starts with every job running
                    assert http.post(f"/api/jobs/{job_id}/resume").status_code == 200
                tracked.paused = False
                _settled(http, job_id)
                state = http.get(f"/api/jobs/{job_id}/state").json()
                kept = {item["v"] for item in state["shared_data"].get("results", {}).get("sink", [])}
                assert tracked.posts <= kept, f"job {job_id} lost acknowledged posts {sorted(tracked.posts - kept)}"
                found = http.get(f"/api/jobs/{job_id}/events", params={"since": 0, "limit": 10_000}).json()["events"]
                seqs = [e["seq"] for e in found]
                assert seqs == list(range(1, len(seqs) + 1)), f"job {job_id}: a gap in {seqs}"
                restarts = sum(1 for e in found if e["type"] == "job_resume" and e["data"].get("reason") == "restart")
                assert restarts == tracked.restarts, f"job {job_id}: {restarts} restart marks for {tracked.restarts}"
                tracked.uncertain = False
    finally:
        server.stop(signal.SIGKILL)  # the next round starts from this very state
    with world.lock:
        for tracked in world.jobs.values():
            tracked.restarts += 1


def _settled(http: httpx.Client, job_id: str) -> None:
    """Until the job has taken what was queued (idle); bounded."""
    deadline = time.monotonic() + 15
    while http.get(f"/api/jobs/{job_id}").json()["status"] == "running":
        assert time.monotonic() < deadline, f"job {job_id} stays running"
        http.post(f"/api/jobs/{job_id}/wait", json={"timeout": 0.05})


def chaos(tmp_path: Path, rounds: int, sig: signal.Signals, seed: int) -> World:
    rng = random.Random(seed)
    world = World()
    db = tmp_path / "chaos.db"
    for _ in range(rounds):
        run_round(db, world, sig, rng)
        check(db, world)
    assert world.jobs and any(t.posts for t in world.jobs.values()), "the clients did nothing"
    return world


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill -9", "SIGTERM"])
def test_nothing_acknowledged_is_lost_when_the_server_dies_at_random_moments(
    tmp_path: Path, sig: signal.Signals
) -> None:
    chaos(tmp_path, rounds=3, sig=sig, seed=20261207 + int(sig))


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill -9", "SIGTERM"])
def test_chaos_soak(tmp_path: Path, sig: signal.Signals) -> None:
    chaos(tmp_path, rounds=12, sig=sig, seed=int(time.time()))

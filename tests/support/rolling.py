"""The rolling-deploy test's deployment and load (``tests/deploy/test_rolling_deploy.py``).

    load clients --HTTP--> nginx (deploy/nginx.conf) --> gunicorn -c deploy/gunicorn.conf.py (-w 4)
                                                            every worker: ROUTILUX_REDIS_URL --> redis-server
                                                                                  (deploy/redis.conf: AOF)

Each of the three runs its file from ``deploy/``, with only what a test machine needs swapped in
(loopback ports, directories; nginx speaks plain HTTP to the clients, see
:func:`tests.support.nginx.render`), so the procedure the README describes is the one tested.

:class:`RollingCluster` restarts gunicorn's workers the two ways the README documents:
:meth:`~RollingCluster.roll` one worker at a time (``kill -TTIN`` the master for a new worker, wait
until it has joined the cluster, then ``kill -TTOU``: gunicorn stops its oldest worker, which
drains), and :meth:`~RollingCluster.reload` (``kill -HUP``: gunicorn starts a new set of workers
and stops the old ones). A worker has joined when its pid is in the cluster's node table in Redis.

:class:`Load` is the clients: each starts a job of a flow that waits for posts, posts to it, then
completes it, over and over, recording every acknowledged (2xx) job and post in a
:class:`Ledger`. Like any real client it retries an answer that says "try again" — 502 and 504
from nginx while no worker answers, 503 with ``Retry-After`` — and counts each retry by status.
"""

from __future__ import annotations

import collections
import itertools
import json
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import anyio
import httpx
import psutil
import redis

from tests.support.nginx import Nginx, self_signed_cert, tool
from tests.support.processes import REPO
from tests.support.redis_conf import ConfiguredRedisServer
from tests.support.servers import ServerProcess, stop_all

REDIS_CONF: Final = REPO / "deploy" / "redis.conf"
GUNICORN_CONF: Final = REPO / "deploy" / "gunicorn.conf.py"
WORKERS: Final = 4
#: Answers a client retries (the request was not acknowledged; trying again is what they ask).
RETRIED: Final = frozenset({502, 503, 504})
RETRY_AFTER_CAP: Final = 1.0  # seconds: honour Retry-After, but the test is bounded


def gunicorn_argv() -> list[str]:
    """``gunicorn -c deploy/gunicorn.conf.py`` on the server's loopback port."""
    return ["-m", "gunicorn", "-c", str(GUNICORN_CONF), "--bind", "127.0.0.1:{port}", "routilux.api.main:app"]


class RollingCluster:
    """redis-server (AOF) + ``gunicorn -w 4`` cluster workers + nginx in front, in ``directory``."""

    def __init__(self, directory: Path, **env: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "redis").mkdir(exist_ok=True)
        (directory / "tls").mkdir(exist_ok=True)
        self.redis = ConfiguredRedisServer(directory / "redis", conf=REDIS_CONF)
        self.app = ServerProcess(directory / "routilux.db", argv=gunicorn_argv(), ROUTILUX_TRUSTED_PROXIES="127.0.0.1",
                                 **env, ROUTILUX_REDIS_URL=self.redis.url)
        self.nginx = Nginx(tool("nginx", "nginx"), directory / "nginx", self.app.port,
                           self_signed_cert(directory / "tls"), tls=False)
        self.url = self.nginx.url
        self._redis_client: redis.Redis | None = None

    def start(self, timeout: float = 60.0) -> RollingCluster:
        try:
            self.redis.start()
            self.app.start(timeout=timeout)
            self.nginx.start()
            self._redis_client = redis.Redis.from_url(self.redis.url)
            self.wait_for(lambda: len(self.joined()) == WORKERS, timeout, "all workers joined the cluster")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        try:
            self.nginx.stop()
        finally:
            try:
                stop_all(self.app, signal.SIGTERM, 60)
            finally:
                if self._redis_client is not None:
                    self._redis_client.close()
                self.redis.stop()

    def output(self) -> str:
        return self.app.output()

    # -- gunicorn's workers and the cluster's nodes ----------------------------------------------
    @property
    def master(self) -> psutil.Process:
        assert self.app.process is not None
        return psutil.Process(self.app.process.pid)

    def workers(self) -> list[int]:
        """gunicorn's live workers, oldest first."""
        children = []
        for child in self.master.children():
            try:
                if child.status() != psutil.STATUS_ZOMBIE:
                    children.append((child.create_time(), child.pid))
            except psutil.NoSuchProcess:
                pass
        return [pid for _created, pid in sorted(children)]

    def joined(self) -> set[int]:
        """The pids of the workers in the cluster's node table (they joined and have not left)."""
        assert self._redis_client is not None
        nodes = self._redis_client.hgetall("routilux:nodes")
        return {int(json.loads(info)["pid"]) for info in nodes.values()}

    def wait_for(self, condition: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout}s: {what}\nworkers {self.workers()}, joined "
                                     f"{sorted(self.joined())}\n{self.output()[-4000:]}")
            if self.app.process is not None and self.app.process.poll() is not None:
                raise AssertionError(f"gunicorn exited with {self.app.process.returncode}:\n{self.output()[-4000:]}")
            time.sleep(0.05)

    def _gone(self, pids: set[int]) -> bool:
        """Every one of ``pids`` has exited and left the cluster's node table."""
        return not pids & set(self.workers()) and not pids & self.joined()

    def roll(self, timeout: float = 30.0) -> None:
        """Replace every worker, one at a time: TTIN, wait for the new worker to join, TTOU (the
        master stops its oldest worker, which drains), wait for that one to be gone."""
        for old in self.workers():
            before = set(self.workers())
            self.master.send_signal(signal.SIGTTIN)
            self.wait_for(lambda b=before: bool((set(self.workers()) - b) & self.joined()), timeout,
                          "the new worker joined")
            assert self.workers()[0] == old, "gunicorn stops its oldest worker on TTOU"
            self.master.send_signal(signal.SIGTTOU)
            self.wait_for(lambda o=old: self._gone({o}), timeout, f"worker {old} stopped and left")
        self.wait_for(lambda: len(self.joined()) == WORKERS, timeout, "four workers in the cluster")

    def reload(self, timeout: float = 40.0) -> None:
        """``kill -HUP`` the master; wait until a whole new set of workers serves and the old ones
        are gone."""
        old = set(self.workers())
        self.master.send_signal(signal.SIGHUP)
        self.wait_for(lambda: self._gone(old) and len(self.joined() - old) == WORKERS, timeout,
                      "the new workers joined and the old ones left")


# -- the load ----------------------------------------------------------------------------------
def waiting_flow(flow_id: str) -> dict[str, Any]:
    """relay -> keep: a job that waits for posts and keeps what each one brought."""
    return {
        "flow_id": flow_id,
        "routines": {"relay": {"class": "Relay"}, "keep": {"class": "Collect"}},
        "connections": [{"from": "relay.output", "to": "keep.input"}],
    }


@dataclass
class Ledger:
    """What the clients were told: every acknowledged job, post and completion."""

    posts: dict[str, list[str]] = field(default_factory=dict)  # job id -> acknowledged post values
    completed: set[str] = field(default_factory=set)  # jobs whose /complete answered 200
    retries: collections.Counter[int] = field(default_factory=collections.Counter)  # status -> retries
    refused: list[str] = field(default_factory=list)  # answers no client should get (not retried)

    @property
    def post_count(self) -> int:
        return sum(len(values) for values in self.posts.values())


class Load:
    """``clients`` clients through ``url``, each: start a job, ``posts`` posts ``pause`` seconds
    apart, complete, again. The pause keeps every client's job live most of the time, so a
    stopping worker nearly always has jobs to move."""

    def __init__(self, url: str, flow_id: str, *, clients: int = 8, posts: int = 4, pause: float = 0.05) -> None:
        self.url = url
        self.flow_id = flow_id
        self.clients = clients
        self.posts = posts
        self.pause = pause
        self.ledger = Ledger()
        self._stopping = anyio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0)
                                     ) as http, anyio.create_task_group() as tg:
            for n in range(self.clients):
                tg.start_soon(self._client, http, n)
            task_status.started()

    async def _client(self, http: httpx.AsyncClient, n: int) -> None:
        for job_number in itertools.count():
            if self._stopping.is_set():
                return
            started = await self.request(http, "/api/jobs", {"flow_id": self.flow_id}, 201)
            if started is None:
                continue
            job_id = started["job_id"]
            acknowledged = self.ledger.posts[job_id] = []
            for p in range(self.posts):
                await anyio.sleep(self.pause)
                value = f"c{n}-j{job_number}-p{p}"
                body = {"routine_id": "relay", "slot_name": "input", "data": value}
                if await self.request(http, f"/api/jobs/{job_id}/post", body, 202) is not None:
                    acknowledged.append(value)
            if await self.request(http, f"/api/jobs/{job_id}/complete", None, 200) is not None:
                self.ledger.completed.add(job_id)

    async def request(self, http: httpx.AsyncClient, path: str, body: Any, expected: int) -> dict[str, Any] | None:
        return await retrying_post(http, path, body, expected, self.ledger)


async def retrying_post(http: httpx.AsyncClient, path: str, body: Any, expected: int, ledger: Ledger,
                        patience: float = 30.0) -> dict[str, Any] | None:
    """POST until it answers ``expected`` (its JSON) or something not worth retrying (None,
    recorded in ``ledger.refused``); 502/503/504 are retried after ``Retry-After`` (capped), as
    long as ``patience`` lasts."""
    deadline = time.monotonic() + patience
    while True:
        try:
            response = await http.post(path, json=body)
        except httpx.TransportError as exc:  # nginx itself stays up: this is a finding
            ledger.refused.append(f"POST {path}: {exc!r}")
            return None
        if response.status_code == expected:
            found: dict[str, Any] = response.json()
            return found
        if response.status_code in RETRIED and time.monotonic() < deadline:
            ledger.retries[response.status_code] += 1
            retry_after = response.headers.get("Retry-After", "")
            await anyio.sleep(min(float(retry_after) if retry_after.isdigit() else 0.1, RETRY_AFTER_CAP))
            continue
        ledger.refused.append(f"POST {path}: {response.status_code} {response.text[:300]}")
        return None

"""The cluster bench's Routilux servers: a plain uvicorn, ``gunicorn -w N`` of cluster nodes, or
``python -m routilux.api.main``; their processes, CPU, connection placement and log checks.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import psutil
from tests.support.processes import repo_pythonpath

from bench.api.servers import ROUTILUX_HTTP, UVICORN_FLAGS
from bench.cluster.redis_server import LOG_PROBLEMS, PREFIX, WORKER_CLASS
from bench.report import (
    BenchFailure,
)
from bench.server import HOST, ServerProcess, free_port
from bench.ws.frames import ROUTINE_MODULES


# =============================================================================================
# Routilux server processes
# =============================================================================================
def _base_env(workdir: Path, name: str) -> dict[str, str]:
    """The parent's environment minus every ROUTILUX_* variable, plus what all servers share."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("ROUTILUX_")}
    return {
        **base,
        "ROUTILUX_DB": str(workdir / f"{name}.db"),  # unused with ROUTILUX_REDIS_URL (the store is Redis)
        "ROUTILUX_API_RELOAD": "false",
        "ROUTILUX_LOG_LEVEL": "warning",
        "ROUTILUX_ROUTINE_MODULES": ROUTINE_MODULES,
        "ROUTILUX_WS_IDLE_TIMEOUT": "600",
        # Retention would prune beyond 10,000 finished jobs: a repeated POST measurement (noisy
        # machine) posts more than that, and every one of them must be counted as completed.
        "ROUTILUX_JOBS_KEEP": "100000000",
        "PYTHONPATH": repo_pythonpath(base),
    }


def _log_problems(text: str, limit: int = 12) -> list[str]:
    return [line for line in text.splitlines() if LOG_PROBLEMS.search(line)][:limit]


class Node(ServerProcess):
    """Routilux in one or more processes (a plain uvicorn, a gunicorn with N workers, or a
    ``python -m routilux.api.main``); ``redis_url`` None means no cluster (SQLite)."""

    def __init__(self, name: str, workdir: Path, *, kind: str, workers: int = 1, redis_url: str | None = None) -> None:
        port = free_port()
        env = _base_env(workdir, f"{name}.{port}")
        if redis_url is not None:
            env["ROUTILUX_REDIS_URL"] = redis_url
        if kind == "uvicorn":  # bench.api's plain server
            argv = [sys.executable, "-m", "uvicorn", "routilux.api.main:app", "--host", HOST, "--port", str(port),
                    "--http", ROUTILUX_HTTP, *UVICORN_FLAGS]
        elif kind == "main":
            argv = [sys.executable, "-m", "routilux.api.main"]
            env |= {"ROUTILUX_API_HOST": HOST, "ROUTILUX_API_PORT": str(port)}
        elif kind == "gunicorn":
            argv = [sys.executable, "-m", "gunicorn", "-w", str(workers), "-k", WORKER_CLASS,
                    "--bind", f"{HOST}:{port}", "--graceful-timeout", "10", *_no_control_socket(),
                    "routilux.api.main:app"]
        else:
            raise ValueError(kind)
        super().__init__(name, port, argv, env, "/api/health", workdir / f"{name}.{port}.log")
        self.kind = "routilux"  # what bench.ws's trigger() asks
        self.server_kind = kind
        self.workers = workers if kind == "gunicorn" else 1
        self.redis_url = redis_url
        self.procs: list[psutil.Process] = []  # the serving processes (gunicorn: its workers)

    def start(self, timeout: float = 60.0) -> Node:
        super().start(timeout)
        deadline = time.monotonic() + timeout
        if self.server_kind == "gunicorn":
            # The port answers as soon as one worker serves: wait for all of them.
            while True:
                kids = psutil.Process(self.pid).children()
                started = self.output().count("Application startup complete")
                if len(kids) == self.workers and started >= self.workers:
                    break
                if time.monotonic() > deadline or self.process is None or self.process.poll() is not None:
                    self.stop()
                    raise BenchFailure(f"{self.name}: {len(kids)} of {self.workers} workers started:\n"
                                       f"{self.output()[-3000:]}")
                time.sleep(0.05)
            self.procs = kids
        else:
            self.procs = [psutil.Process(self.pid)]
        if self.redis_url is not None:  # every process has joined the cluster
            pids = {p.pid for p in self.procs}
            while pids - set(self.node_pids().values()):
                if time.monotonic() > deadline:
                    self.stop()
                    raise BenchFailure(f"{self.name}: not every process joined the cluster: {self.node_pids()}")
                time.sleep(0.05)
        return self

    def node_pids(self) -> dict[str, int]:
        """Cluster node id -> pid, from the membership hash in Redis."""
        import redis

        with redis.Redis.from_url(self.redis_url) as client:  # type: ignore[arg-type]
            nodes = client.hgetall(f"{PREFIX}:nodes")
        return {k.decode(): int(json.loads(v)["pid"]) for k, v in nodes.items()}

    def owner_pid(self, job_id: str) -> int:
        import redis

        with redis.Redis.from_url(self.redis_url) as client:  # type: ignore[arg-type]
            raw = client.hget(f"{PREFIX}:owners", job_id)
        if raw is None:
            raise BenchFailure(f"{self.name}: job {job_id} has no owner in Redis")
        node = json.loads(raw)["node"]
        pid = self.node_pids().get(node)
        if pid is None:
            raise BenchFailure(f"{self.name}: the owner of job {job_id}, node {node}, is not a member")
        return pid

    def cpu_seconds(self) -> float:
        """User + system CPU of every process of the server (arbiter and workers) so far."""
        total = super().cpu_seconds()
        for p in self.procs:
            if p.pid == self.pid:
                continue
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess as exc:
                raise BenchFailure(f"{self.name}: worker {p.pid} died:\n{self.output()[-3000:]}") from exc
        return total

    def placement(self) -> dict[int, int]:
        """pid -> established connections each serving process holds on the server's port."""
        out: dict[int, int] = {}
        for p in self.procs:
            out[p.pid] = sum(1 for c in p.net_connections("tcp")
                             if c.laddr and c.laddr.port == self.port and c.status == psutil.CONN_ESTABLISHED)
        return out

    def check_alive(self) -> None:
        """Every serving process still the one that started, and no problem in the log."""
        if self.process is None or self.process.poll() is not None:
            raise BenchFailure(f"{self.name} exited:\n{self.output()[-3000:]}")
        if self.server_kind == "gunicorn":
            kids = {p.pid for p in psutil.Process(self.pid).children()}
            if kids != {p.pid for p in self.procs}:
                raise BenchFailure(f"{self.name}: workers changed {sorted(p.pid for p in self.procs)} -> "
                                   f"{sorted(kids)} (a worker died):\n{self.output()[-3000:]}")
        problems = _log_problems(self.output())
        if problems:
            raise BenchFailure(f"{self.name} logged problems:\n" + "\n".join(problems) + f"\n--- log tail ---\n"
                               f"{self.output()[-3000:]}")

    def stop(self, timeout: float = 30.0) -> int:
        kids: list[psutil.Process] = []
        if self.process is not None and self.process.poll() is None:
            try:
                kids = psutil.Process(self.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                pass
        code = super().stop(timeout)
        for kid in kids:  # a worker left behind would keep the port
            try:
                kid.kill()
            except psutil.NoSuchProcess:
                pass
        return code


def _no_control_socket() -> list[str]:
    """gunicorn >= 24 opens a control socket in $XDG_RUNTIME_DIR or ~/.gunicorn; servers side by
    side (other people's tests) must not fight over it."""
    from gunicorn.config import KNOWN_SETTINGS

    return ["--no-control-socket"] if any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS) else []



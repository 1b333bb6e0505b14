"""The cluster bench's ``redis-server``: a free loopback port, nothing on disk, a database per
scenario, its CPU and its busiest commands.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Final, Self

import psutil

from bench.report import (
    BenchFailure,
)
from bench.server import HOST, free_port

REDIS_BINARY: Final[str] = "/usr/bin/redis-server"
WORKER_CLASS: Final[str] = "routilux.api.worker.UvicornWorker"
PREFIX: Final[str] = "routilux"  # the cluster's key prefix (routilux.cluster.redis_events)
FANOUT_CONNECT_PARALLEL: Final[int] = 5  # handshakes in flight: a burst lands mostly on one worker
LOG_PROBLEMS: Final = re.compile(r"Traceback|\bERROR\b|\bCRITICAL\b|\[ERROR\]|WORKER TIMEOUT|Worker \(pid:\d+\) was")
FORWARD_SAMPLES: Final = 300  # GET /api/jobs/{id} on A and on B, each, per hop row
SPREAD_TRIES: Final = 10  # POST connections reopened until every worker holds some (see _connect)
STALLED_SECONDS: Final = 30.0  # no job completing for this long fails the POST row
DB_POST: Final = {"w1": 1, "w2": 2}  # Redis database per scenario (emptied before it starts)
DB_FANOUT: Final = {"fanout_w1": 3, "fanout_w2": 4, "capacity_w1": 5, "capacity_w2": 6}
DB_HOP: Final = {"hop": 7, "hop_capacity": 8}
DB_RELAY: Final = 9


# =============================================================================================
# redis-server
# =============================================================================================
class Redis:
    """``redis-server`` on a free loopback port, nothing written to disk; stopped by :meth:`stop`."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.log_path = workdir / f"redis.{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._ps: psutil.Process | None = None

    def url(self, db: int) -> str:
        return f"redis://{HOST}:{self.port}/{db}"

    def start(self, timeout: float = 10.0) -> Redis:
        binary = shutil.which("redis-server") or REDIS_BINARY
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no",
                 "--dir", str(self.workdir), "--databases", "16"],
                stdout=log, stderr=subprocess.STDOUT,
            )
        self._ps = psutil.Process(self.process.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchFailure(f"redis-server exited with {self.process.returncode}: "
                                   f"{self.log_path.read_text(errors='replace')[-2000:]}")
            try:
                if self.command(0, "PING") in (True, "PONG"):
                    return self
            except Exception:  # noqa: BLE001, S110 - not up yet (redis.ConnectionError)
                pass
            time.sleep(0.05)
        self.stop()
        raise BenchFailure(f"redis-server did not answer PING within {timeout}s")

    def client(self, db: int) -> Any:
        import redis

        return redis.Redis.from_url(self.url(db))

    def command(self, db: int, *args: str) -> Any:
        with self.client(db) as client:
            reply = client.execute_command(*args)
        return reply.decode() if isinstance(reply, bytes) else reply

    def flush(self, db: int) -> None:
        if self.command(db, "FLUSHDB") not in ("OK", True):
            raise BenchFailure(f"FLUSHDB of Redis database {db} failed")

    def cpu_seconds(self) -> float:
        if self._ps is None:
            return 0.0
        t = self._ps.cpu_times()
        return t.user + t.system

    def reset_stats(self) -> None:
        self.command(0, "CONFIG", "RESETSTAT")

    def top_commands(self, n: int = 5) -> list[dict[str, Any]]:
        """The commands that took most of Redis' time since :meth:`reset_stats` (INFO commandstats)."""
        with self.client(0) as client:
            stats = client.info("commandstats")
        ranked = sorted(stats.items(), key=lambda kv: -kv[1]["usec"])[:n]
        return [{"command": name.removeprefix("cmdstat_"), "calls": v["calls"], "usec": v["usec"],
                 "usec_per_call": round(v["usec_per_call"], 1)} for name, v in ranked]

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()



"""A server under measurement: a child process on a free loopback port, probed until it answers,
always stopped. The API, WebSocket and cluster benches build their servers' command lines; this
runs them, with the process helpers the tests use (:mod:`tests.support.processes`)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Self

import psutil
from tests.support.processes import HOST, cpu_seconds, free_port, http_ok, stop_process, wait_ready

from bench.report import BenchFailure

__all__ = ["HOST", "ServerProcess", "free_port", "new_loop"]


class ServerProcess:
    """Runs ``argv`` with ``env``; ready once ``GET url + ready_path`` answers 200."""

    def __init__(
        self, name: str, port: int, argv: list[str], env: dict[str, str], ready_path: str, log_path: Path
    ) -> None:
        self.name = name
        self.port = port
        self.url = f"http://{HOST}:{port}"
        self.argv = argv
        self.env = env
        self.ready_path = ready_path
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._ps: psutil.Process | None = None

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0

    def start(self, timeout: float = 60.0) -> Self:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self._ps = psutil.Process(self.process.pid)
        outcome = wait_ready(self.process, http_ok(self.url + self.ready_path, timeout=2), timeout)
        if outcome == "ready":
            return self
        if outcome == "exited":
            raise BenchFailure(f"{self.name} server exited with {self.process.returncode}:\n{self.output()}")
        self.stop()
        raise BenchFailure(f"{self.name} server did not answer within {timeout}s:\n{self.output()}")

    def cpu_seconds(self) -> float:
        """User + system CPU of the server process so far (all its threads)."""
        return cpu_seconds(self._ps) if self._ps is not None else 0.0

    def rss_bytes(self) -> int:
        return int(self._ps.memory_info().rss) if self._ps is not None else 0

    def num_fds(self) -> int:
        return int(self._ps.num_fds()) if self._ps is not None else 0

    def output(self, tail: int | None = None) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-tail:] if tail else text

    def stop(self, timeout: float = 30.0) -> int:
        process, self.process = self.process, None
        return stop_process(process, timeout=timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def new_loop() -> asyncio.AbstractEventLoop:
    """The event loop of the benches' own clients: uvloop, as the servers under test use."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()

"""A server under measurement: a child process on a free loopback port, probed until it answers,
always stopped. The API and WebSocket benches build their servers' command lines; this runs them."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Self

import httpx
import psutil
from _common import BenchFailure

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchFailure(f"{self.name} server exited with {self.process.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.url + self.ready_path, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise BenchFailure(f"{self.name} server did not answer within {timeout}s:\n{self.output()}")

    def cpu_seconds(self) -> float:
        """User + system CPU of the server process so far (all its threads)."""
        if self._ps is None:
            return 0.0
        times = self._ps.cpu_times()
        return times.user + times.system

    def rss_bytes(self) -> int:
        return int(self._ps.memory_info().rss) if self._ps is not None else 0

    def num_fds(self) -> int:
        return int(self._ps.num_fds()) if self._ps is not None else 0

    def output(self, tail: int | None = None) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-tail:] if tail else text

    def stop(self, timeout: float = 30.0) -> int:
        process, self.process = self.process, None
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

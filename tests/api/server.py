"""A real Routilux server in a child process, on a free loopback port, for the API tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

TESTS = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``python -m routilux.api.main`` (uvicorn underneath) with the given environment.

    ``argv`` replaces the command (after the interpreter) — e.g. to serve ``routilux.api.main:app``
    with plain ``uvicorn``; ``{port}`` in it is replaced by the server's port.
    """

    def __init__(
        self, db: Path | str, *, api_key: str | None = None, argv: list[str] | None = None, **env: str
    ) -> None:
        self.api_key = api_key
        self.argv = argv if argv is not None else ["-m", "routilux.api.main"]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "ROUTILUX_DB": str(db),
            "ROUTILUX_API_RELOAD": "false",
            "ROUTILUX_API_HOST": "127.0.0.1",
            "ROUTILUX_API_PORT": str(self.port),
            "ROUTILUX_LOG_LEVEL": "warning",
            "ROUTILUX_ROUTINE_MODULES": "routines",
            "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self._log = None
        self.log_path = Path(str(db) + f".{self.port}.log") if str(db) != ":memory:" else None

    def start(self, timeout: float = 30.0) -> ServerProcess:
        self._log = open(self.log_path, "wb") if self.log_path else None  # noqa: SIM115 (closed in stop)
        log = self._log if self._log is not None else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [sys.executable, *(arg.replace("{port}", str(self.port)) for arg in self.argv)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.output()}")
            try:
                headers = {"X-API-Key": self.api_key} if self.api_key else {}
                if httpx.get(self.url + "/api/health", headers=headers, timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not start within {timeout}s:\n{self.output()}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        try:
            return self._stop(sig, timeout)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def _stop(self, sig: int, timeout: float) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

"""A real Routilux server in a child process, on a free loopback port, for the API tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.processes import descendants, free_port, http_ok, kill_all, repo_pythonpath, stop_process, wait_ready

#: ``ROUTILUX_TEST_DEPLOYMENT``: what :func:`start_deployment` starts for the API and WebSocket
#: suites. ``single`` (the default): one ``python -m routilux.api.main`` process on SQLite.
#: ``cluster``: redis-server + ``gunicorn -w 4`` cluster nodes + nginx in front
#: (``tests/support/cluster.py``); tests marked ``single_process`` cannot pass there.
DEPLOYMENTS = ("single", "cluster")
#: The routines every test server loads (``ROUTILUX_ROUTINE_MODULES``), importable because the
#: server's ``PYTHONPATH`` starts with the repository root.
ROUTINE_MODULES = "tests.support.routines"

__all__ = ["DEPLOYMENTS", "ROUTINE_MODULES", "ServerProcess", "deployment_kind", "free_port", "gunicorn_argv",
           "start_deployment", "stop_all"]


def deployment_kind() -> str:
    """``ROUTILUX_TEST_DEPLOYMENT`` (``single`` unless set)."""
    deployment = os.environ.get("ROUTILUX_TEST_DEPLOYMENT", "single") or "single"
    if deployment not in DEPLOYMENTS:
        raise RuntimeError(f"ROUTILUX_TEST_DEPLOYMENT={deployment!r}: expected one of {DEPLOYMENTS}")
    return deployment


def start_deployment(directory: Path, *, api_key: str | None = None, **env: str) -> ServerProcess:
    """A started server for the API suites, its files in ``directory``: a :class:`ServerProcess`,
    or with ``ROUTILUX_TEST_DEPLOYMENT=cluster`` a ``ClusterDeployment``, which offers the same
    attributes (``url``, ``port``, ``api_key``, ``process``, ``output()``, ``stop()``...)."""
    if deployment_kind() == "cluster":
        if "argv" in env:
            raise RuntimeError("a server with its own command (argv) is not a deployment: mark its test single_process")
        from tests.support.cluster import ClusterDeployment

        return ClusterDeployment(directory, api_key=api_key, **env).start()  # type: ignore[return-value]
    return ServerProcess(directory / "routilux.db", api_key=api_key, **env).start()


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
            "ROUTILUX_ROUTINE_MODULES": ROUTINE_MODULES,
            "PYTHONPATH": repo_pythonpath(),
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
        headers = {"X-API-Key": self.api_key} if self.api_key else {}
        outcome = wait_ready(self.process, http_ok(self.url + "/api/health", headers), timeout)
        if outcome == "ready":
            return self
        if outcome == "exited":
            raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.output()}")
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
        return stop_process(self.process, sig, timeout)


def gunicorn_argv(workers: int, worker_class: str, *options: str) -> list[str]:
    """``ServerProcess`` argv for the spec's production command, ``gunicorn -w N -k CLASS
    routilux.api.main:app``, bound to the server's loopback port, with more gunicorn ``options``."""
    from gunicorn.config import KNOWN_SETTINGS

    # gunicorn >= 24 opens a control socket in $XDG_RUNTIME_DIR or ~/.gunicorn; servers running
    # side by side (tests, other sessions) must not fight over it.
    has_switch = any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS)
    no_control_socket = ["--no-control-socket"] if has_switch else []
    return ["-m", "gunicorn", "-w", str(workers), "-k", worker_class, "--bind", "127.0.0.1:{port}",
            "--graceful-timeout", "10", *no_control_socket, *options, "routilux.api.main:app"]


def stop_all(server: ServerProcess, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
    """Stop the server (``sig``, then SIGKILL after ``timeout``) and kill any of its children still
    alive (a gunicorn worker orphaned by a stuck arbiter would keep the port and the store); the
    server's exit code."""
    alive = server.process is not None and server.process.poll() is None
    children = descendants(server.process.pid) if alive else []  # type: ignore[union-attr]
    code = server.stop(sig, timeout)
    kill_all(children)
    return code

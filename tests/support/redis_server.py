"""A real ``redis-server`` for the tests that need one (Debian's package, installed by
``.ci/run``): on a free loopback port, with no persistence, as a child process of the test run.

Both the cluster tests and the store contract suite use it, each through a session fixture of
its conftest (``redis_server``), so one test run starts at most one server per suite.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import free_port, stop_process, wait_ready

REDIS_BINARY = "/usr/bin/redis-server"

__all__ = ["REDIS_BINARY", "RedisServer", "free_port", "running_redis_server"]


class RedisServer:
    """``redis-server`` on 127.0.0.1:``port``; nothing is written to disk unless ``persistent``.

    ``persistent``: an append-only file in ``workdir`` synced on every write (``--appendonly yes
    --appendfsync always``), so a server killed with SIGKILL and started again (:meth:`kill`,
    :meth:`start` once more: same port, same directory) has every write it acknowledged — what
    the outage tests need. The default (no persistence) is what every other test uses.
    """

    def __init__(self, workdir: Path, *, persistent: bool = False) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        self.persistent = persistent
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start the server (again, after :meth:`kill` or :meth:`stop`: on the same port)."""
        self.process = subprocess.Popen(
            [shutil.which("redis-server") or REDIS_BINARY, *self.arguments()],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        outcome = wait_ready(self.process, self.ping, timeout)
        if outcome == "ready":
            return self
        if outcome == "exited":
            raise RuntimeError(f"redis-server exited with {self.process.returncode}")
        self.stop()
        raise RuntimeError(f"redis-server did not answer PING within {timeout}s")

    def arguments(self) -> list[str]:
        """redis-server's command-line arguments (a subclass may start it differently)."""
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        return ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *persistence, "--dir", str(self.workdir)]

    def db_url(self, db: int) -> str:
        """The URL of database ``db`` of this server (tests that must not share keys use their own)."""
        return f"redis://127.0.0.1:{self.port}/{db}"

    def flush(self, db: int) -> None:
        """Empty database ``db`` (SELECT + FLUSHDB in the RESP protocol over a plain socket)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(f"SELECT {db}\r\nFLUSHDB\r\n".encode())
            replies = b""
            while replies.count(b"\r\n") < 2:
                chunk = sock.recv(64)
                if not chunk:
                    break
                replies += chunk
        if replies != b"+OK\r\n+OK\r\n":
            raise RuntimeError(f"FLUSHDB of db {db} failed: {replies!r}")

    def ping(self) -> bool:
        """PING in the RESP protocol over a plain socket (no client library needed to wait)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        stop_process(self.process, timeout=10)

    def pause(self) -> None:
        """SIGSTOP: the server freezes (connections stay open, nothing answers)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the server (no shutdown, no final save) and wait until it is gone."""
        stop_process(self.process, signal.SIGKILL, timeout=10)

    def serving(self) -> Iterator[RedisServer]:
        """The body of a fixture that freezes or kills it: start, yield, then thaw it (a failed
        test may have left it frozen) and stop it."""
        self.start()
        try:
            yield self
        finally:
            if self.process is not None:
                self.resume()
            self.stop()


def running_redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The body of a session fixture: start a server, yield it, stop it."""
    if shutil.which("redis-server") is None and not Path(REDIS_BINARY).exists():
        pytest.fail("redis-server is not installed (.ci/run installs Debian's redis-server)")
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()

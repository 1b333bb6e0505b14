"""The WebSocket bench's server processes (bare and Routilux) and the client processes the parent
drives by lines on their stdin/stdout.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from array import array
from pathlib import Path
from typing import Any

from tests.support.processes import repo_pythonpath

from bench.report import BenchFailure
from bench.server import HOST, ServerProcess, free_port
from bench.ws.frames import ROUTINE_MODULES

# =============================================================================================
# Server processes
# =============================================================================================
_PROFILE_BOOT = """\
import cProfile, signal, sys
out = sys.argv[1]
# uvicorn re-raises the signal that stopped it once it has shut down; with the default handler
# that would kill the process before the profile is written.
signal.signal(signal.SIGTERM, lambda *_: None)
import routilux.api.main as main
profiler = cProfile.Profile()
profiler.enable()
try:
    main.main()
finally:
    profiler.disable()
    profiler.dump_stats(out)
"""


class Server(ServerProcess):
    """One uvicorn process on a free loopback port; stopped by :meth:`stop` (always)."""

    def __init__(self, kind: str, workdir: Path, *, cprofile_to: Path | None = None) -> None:
        self.kind = kind  # "bare" | "routilux"
        port = free_port()
        base = {k: v for k, v in os.environ.items() if not k.startswith("ROUTILUX_")}
        if kind == "bare":
            argv = [sys.executable, "-m", "bench.ws", "--serve-bare", "--port", str(port)]
            ready_path, env = "/health", {**base, "PYTHONPATH": repo_pythonpath(base)}
        else:
            ready_path = "/api/health"
            if cprofile_to is None:
                argv = [sys.executable, "-m", "routilux.api.main"]
            else:
                argv = [sys.executable, "-c", _PROFILE_BOOT, str(cprofile_to)]
            env = {
                **base,
                "ROUTILUX_DB": str(workdir / f"routilux.{port}.db"),
                "ROUTILUX_API_RELOAD": "false",
                "ROUTILUX_API_HOST": HOST,
                "ROUTILUX_API_PORT": str(port),
                "ROUTILUX_LOG_LEVEL": "warning",
                "ROUTILUX_ROUTINE_MODULES": ROUTINE_MODULES,
                "ROUTILUX_WS_IDLE_TIMEOUT": "600",
                "PYTHONPATH": repo_pythonpath(base),
            }
        super().__init__(kind, port, argv, env, ready_path, workdir / f"{kind}.{port}.log")

    def rss(self) -> int:
        return self.rss_bytes()

    def output(self, tail: int | None = 4000) -> str:
        return super().output(tail)


# =============================================================================================
# Driving client processes from the parent
# =============================================================================================
class ClientProc:
    """One client worker process, spoken to by lines on its stdin/stdout."""

    #: The child's command after the interpreter, the spec (JSON) appended.
    ENTRY: tuple[str, ...] = ("-m", "bench.ws", "--worker")

    def __init__(self, spec: dict[str, Any], workdir: Path, index: int) -> None:
        self.out = workdir / f"client.{os.getpid()}.{time.monotonic_ns()}.{index}.json"
        self.spec = {**spec, "out": str(self.out)}
        self.err_path = Path(str(self.out) + ".err")
        with open(self.err_path, "wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, *self.ENTRY, json.dumps(self.spec)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                env={**os.environ, "PYTHONPATH": repo_pythonpath()},
            )
        self._pending = b""

    def expect_line(self, word: str, timeout: float) -> str:
        """Wait (bounded) for a stdout line starting with ``word``."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while True:
            if b"\n" in self._pending:
                line, self._pending = self._pending.split(b"\n", 1)
                text = line.decode(errors="replace")
                if text.startswith(word):
                    return text
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchFailure(f"client process: no '{word}' within {timeout:.0f}s; stderr:\n{self.stderr()}")
            readable, _, _ = select.select([fd], [], [], min(left, 0.5))
            if readable:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise BenchFailure(f"client process exited before '{word}'; stderr:\n{self.stderr()}")
                self._pending += chunk

    def tell(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def result(self) -> tuple[dict[str, Any], array]:
        lat = array("d")
        lat.frombytes(Path(str(self.out) + ".lat").read_bytes())
        return json.loads(self.out.read_text()), lat

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")[-3000:] if self.err_path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        for path in (self.out, Path(str(self.out) + ".lat"), self.err_path):
            path.unlink(missing_ok=True)


def _split(total: int, parts: int) -> list[int]:
    parts = max(1, min(parts, total))
    return [total // parts + (1 if k < total % parts else 0) for k in range(parts)]



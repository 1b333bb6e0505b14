"""Child processes, for the tests and the benchmarks alike: a free loopback port, waiting until a
process answers, stopping it (and whatever it spawned), and its CPU time and memory.

This is the one place for these, shared by ``tests/support`` (the API server, redis-server, nginx)
and by ``bench/`` (the servers under measurement). The dependency points one way: ``bench``
imports ``tests.support.processes``, never the reverse. The test suite must not depend on the
benchmark scripts (it only runs them, from ``tests/bench``), while the benchmarks always run from
the repository root (``python -m bench.engine``), where the ``tests`` package is importable. So
that importing it from a benchmark pulls in nothing of the test suite, this module needs only the
standard library, httpx and psutil (no pytest, no fixtures).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Final, Literal, TypeVar

import httpx
import psutil

#: The repository root: the working directory and ``PYTHONPATH`` of children that import
#: ``tests.support...`` or ``bench...`` modules by name (e.g. ``ROUTILUX_ROUTINE_MODULES``).
REPO: Final = Path(__file__).resolve().parents[2]
HOST: Final = "127.0.0.1"
T = TypeVar("T")


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def repo_pythonpath(environ: Mapping[str, str] = os.environ) -> str:
    """``PYTHONPATH`` for a child: the repository root first, then what ``environ`` already has."""
    return os.pathsep.join(p for p in (str(REPO), environ.get("PYTHONPATH", "")) if p)


def http_ok(url: str, headers: Mapping[str, str] | None = None, timeout: float = 1.0) -> Callable[[], bool]:
    """A readiness probe: ``GET url`` answers 200 (a connection error is "not yet")."""

    def probe() -> bool:
        try:
            return httpx.get(url, headers=dict(headers or {}), timeout=timeout).status_code == 200
        except httpx.HTTPError:
            return False

    return probe


def wait_ready(
    process: subprocess.Popen[bytes], ready: Callable[[], bool], timeout: float, interval: float = 0.05
) -> Literal["ready", "exited", "timeout"]:
    """Call ``ready()`` every ``interval`` seconds until it is true (``"ready"``), the process
    exits (``"exited"``) or ``timeout`` seconds pass (``"timeout"``); the caller says what failed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return "exited"
        if ready():
            return "ready"
        time.sleep(interval)
    return "timeout"


def stop_process(process: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
    """Send ``sig`` to a running process, wait ``timeout`` seconds, then SIGKILL; its exit code
    (0 for no process)."""
    if process is None:
        return 0
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def descendants(pid: int) -> list[psutil.Process]:
    """Every process below ``pid`` (gunicorn's workers, nginx's), or none if it is gone."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def kill_all(processes: Iterable[psutil.Process]) -> None:
    """SIGKILL each of ``processes`` still alive (a worker left behind would keep a port)."""
    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


def cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU of ``process`` so far (all its threads)."""
    times = process.cpu_times()
    return times.user + times.system


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all cores, all processes)."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)


async def peak_rss_growth(pid: int, work: Awaitable[T], every: float = 0.01) -> tuple[T, int]:
    """Await ``work`` while sampling the RSS of process ``pid``: its result, and how far the RSS
    rose above where it was before, at its highest (memory freed afterwards is no excuse)."""
    process = psutil.Process(pid)
    before = peak = process.memory_info().rss
    task = asyncio.ensure_future(work)
    while not task.done():
        peak = max(peak, process.memory_info().rss)
        await asyncio.wait([task], timeout=every)
    return task.result(), max(peak, process.memory_info().rss) - before

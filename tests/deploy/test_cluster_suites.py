"""Issue 9's acceptance: ``gunicorn -w 4`` behind nginx passes the REST and WebSocket suites.

The suites below run in a pytest subprocess with ``ROUTILUX_TEST_DEPLOYMENT=cluster``: their
session server, and every server the WebSocket modules start for themselves, is then the cluster
deployment of ``cluster_support.py`` — a fresh redis-server, four gunicorn workers that are
cluster nodes on it, and a real nginx running ``deploy/nginx.conf`` in front (plain HTTP, no
upstream keepalive, ``--reuse-port``: each request and socket reaches a worker at random, so
most requests about a job arrive at a worker that does not run it).

Deselected: ``slow`` (as in ``make test``) and ``single_process`` (tests of what only one server
process has; each mark says why).

The subset, kept to about two minutes on two cores: the job, flow, debugger, monitoring and
catalogue REST modules and the whole WebSocket suite. ``tests/api/test_hostile_input.py`` also
passes against the cluster (about 30 s more) and is left out for time.

The subprocess runs in a session of its own: on a timeout the whole session (pytest, gunicorn
and its workers, nginx, redis-server) is killed, and after any run a process still in that
session fails the test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

import psutil
import pytest

ROOT: Final = Path(__file__).resolve().parent.parent.parent
SUITES: Final = [
    "tests/api/test_jobs.py",
    "tests/api/test_flows.py",
    "tests/api/test_debug_api.py",
    "tests/api/test_monitoring.py",
    "tests/api/test_catalogue.py",
    "tests/api/ws",
]
TIMEOUT: Final = 480.0  # the suites take about 2 minutes on 2 busy cores
TAIL: Final = 15_000


def _session_processes(sid: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid:
                found.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return found


def _kill_session(sid: int) -> list[str]:
    """Kill every process left in session ``sid``; what they were."""
    left = _session_processes(sid)
    names = []
    for proc in left:
        try:
            names.append(f"{proc.pid} {' '.join(proc.cmdline())[:200]}")
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(left, timeout=10)
    return names


def test_the_rest_and_websocket_suites_pass_against_gunicorn_w_4_behind_nginx(tmp_path: Path) -> None:
    env = {**os.environ, "ROUTILUX_TEST_DEPLOYMENT": "cluster"}
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--tb=short",
            "-m", "not single_process and not slow", "--basetemp", str(tmp_path / "basetemp"), *SUITES]
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    timed_out = False
    try:
        output, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        left = _kill_session(proc.pid)
    took = time.monotonic() - started
    text = output.decode(errors="replace")
    tail = text[-TAIL:]
    assert not timed_out, f"the cluster suites did not finish within {TIMEOUT:.0f}s:\n{tail}"
    assert proc.returncode == 0, f"the suites failed against the cluster (exit {proc.returncode}, {took:.0f}s):\n{tail}"
    assert not left, f"processes left behind by the cluster run: {left}"
    if " passed" not in text.splitlines()[-1]:
        pytest.fail(f"no test passed?\n{tail}")

"""A full disk under a real server: a change is acknowledged only once it is saved.

The server's SQLite file lives on a small tmpfs mounted for the test (root only; elsewhere the
in-process stores that fail on demand, ``test_store_failures.py``, cover the same answers, and
a read-only database too: a tmpfs in use cannot be remounted read-only).
While writes fail, job starts answer 503 ``store_unavailable`` (never a 201 for a job that was
not saved, never the store's path), and ``GET /api/health`` answers 503 ``degraded``. When space
returns, health recovers by itself and jobs start again. After a crash and a restart every job
that was answered 201 is there.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.rest import etl_yaml
from tests.support.servers import ServerProcess

pytestmark = pytest.mark.single_process

#: Job starts tried while the disk is full, at most: one of them must be refused.
MAX_TRIES = 3000
START = {"flow_id": "etl", "complete_when_idle": True,
         "entry": {"routine_id": "source", "slot_name": "trigger", "data": {"n": 1}}}


@contextmanager
def small_disk(path: Path, size: str = "8m") -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (test_store_failures.py covers the answers in process)")
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path) -> Path:
    """Take every free byte of ``disk``; the file is returned so that removing it frees them."""
    filler = disk / "filler"
    # Unbuffered: a buffered file would try to write its rest again when closed, and raise there.
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    return filler


def start_jobs_until_refused(http: httpx.Client) -> tuple[list[str], httpx.Response]:
    """Start jobs until one is refused; the ids of those answered 201, and the refusal."""
    acknowledged: list[str] = []
    for _ in range(MAX_TRIES):
        response = http.post("/api/jobs", json=START)
        if response.status_code != 201:
            return acknowledged, response
        acknowledged.append(response.json()["job_id"])
    raise AssertionError(f"{MAX_TRIES} jobs started on a full disk: nothing was refused")


def assert_store_unavailable(response: httpx.Response, disk: Path) -> None:
    assert response.status_code == 503, response.text
    detail: dict[str, Any] = response.json()["detail"]
    assert detail["error"] == "store_unavailable"
    assert response.headers["Retry-After"]
    assert str(disk) not in response.text and "routilux.db" not in response.text


def test_a_full_disk_acknowledges_nothing_unsaved_and_recovers(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk") as disk:
        db = disk / "routilux.db"
        server = ServerProcess(db).start()
        try:
            with httpx.Client(base_url=server.url, timeout=30) as http:
                assert http.post("/api/flows", json={"dsl": etl_yaml("etl")}).status_code == 201
                before = [http.post("/api/jobs", json=START).json()["job_id"] for _ in range(5)]
                filler = fill(disk)

                during, refusal = start_jobs_until_refused(http)
                assert_store_unavailable(refusal, disk)
                health = http.get("/api/health")
                assert health.status_code == 503, health.text
                assert health.json()["status"] == "degraded" and "writes fail" in health.json()["reason"]
                assert str(disk) not in health.text

                filler.unlink()  # space returns: health finds out by itself, with no other traffic
                health = http.get("/api/health")
                assert health.status_code == 200 and health.json()["status"] == "healthy", health.text
                after = http.post("/api/jobs", json=START)
                assert after.status_code == 201, after.text
                acknowledged = [*before, *during, after.json()["job_id"]]
        finally:
            server.stop(signal.SIGKILL)  # a crash: only what was committed is left

        restarted = ServerProcess(db).start()
        try:
            with httpx.Client(base_url=restarted.url, timeout=30) as http:
                lost = [job_id for job_id in acknowledged if http.get(f"/api/jobs/{job_id}").status_code != 200]
                assert lost == [], f"{len(lost)} of {len(acknowledged)} acknowledged jobs were lost: {lost[:5]}"
        finally:
            restarted.stop()

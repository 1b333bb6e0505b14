"""A graceful stop (SIGTERM) is not held up by a client: a long poll answers at once, no new job
starts, and the process exits within ``ROUTILUX_SHUTDOWN_SECONDS``."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.processes import wait_ready
from tests.support.rest import slow_flow
from tests.support.servers import ServerProcess

pytestmark = pytest.mark.single_process

SHUTDOWN_SECONDS = 10
#: How long after SIGTERM the long poll may take to answer (it should be at once; margin for CI).
ANSWER_WITHIN = 5.0


def test_sigterm_answers_a_long_poll_now_and_exits_within_the_bound(tmp_path: Path) -> None:
    # uvicorn's trace log says when the application has taken the /wait request.
    server = ServerProcess(tmp_path / "r.db", ROUTILUX_LOG_LEVEL="trace",
                           ROUTILUX_SHUTDOWN_SECONDS=str(SHUTDOWN_SECONDS)).start()
    answered: dict[str, Any] = {}
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            assert http.post("/api/flows", json={"dsl_dict": slow_flow("slow", 60)}).status_code == 201
            job = http.post("/api/jobs", json={"flow_id": "slow", "entry": {
                "routine_id": "slow", "slot_name": "input", "data": 1}}).json()
            wait_path = f"/api/jobs/{job['job_id']}/wait"

        def long_poll() -> None:
            with httpx.Client(base_url=server.url, timeout=60) as client:
                response = client.post(wait_path, json={"timeout": 300})
                answered["at"] = time.monotonic()
                answered["response"] = response

        poller = threading.Thread(target=long_poll)
        poller.start()
        assert server.process is not None
        taken = wait_ready(server.process, lambda: wait_path in server.output(), 15)
        assert taken == "ready", f"the server never took the /wait request ({taken})"
        stopped_at = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        poller.join(ANSWER_WITHIN + 5)
        assert not poller.is_alive(), "the long poll held the stop up"
        response: httpx.Response = answered["response"]
        assert response.status_code == 200, response.text
        assert response.json()["timed_out"] is True and response.json()["status"] == "running"
        assert answered["at"] - stopped_at < ANSWER_WITHIN
        exit_code = server.process.wait(SHUTDOWN_SECONDS + 10)
        # uvicorn re-raises the signal once it has shut down cleanly: the conventional exit by SIGTERM
        assert exit_code in (0, -signal.SIGTERM), server.output()[-2000:]
        assert "Application shutdown complete" in server.output()
        assert time.monotonic() - stopped_at < SHUTDOWN_SECONDS + 5
    finally:
        server.stop()

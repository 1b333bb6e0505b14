"""A rolling restart of ``gunicorn -w 4`` cluster workers behind nginx, under load: no job fails,
no acknowledged post is lost.

The deployment is the files in ``deploy/`` (``tests/support/rolling.py``): redis-server with
``deploy/redis.conf`` (AOF), ``gunicorn -c deploy/gunicorn.conf.py`` (4 workers, each a cluster
node), nginx with ``deploy/nginx.conf``. Eight clients go through nginx the whole time, each
starting a job of a flow that waits for posts, posting to it (50 ms apart, so jobs are live when
workers stop) and completing it, again and again, and retrying what asks to be retried (502/504
from nginx, 503 with ``Retry-After``) as a real client would. Meanwhile the workers are replaced:

- one at a time (the README's procedure): ``kill -TTIN`` the master, wait until the new worker
  has joined the cluster, ``kill -TTOU`` (gunicorn stops its oldest worker: it drains, and the
  others adopt its jobs); four times;
- all at once: ``kill -HUP`` (gunicorn starts four new workers and stops the four old ones).

Then every acknowledged job must end ``completed`` (none ``failed``, in the whole cluster), with
every acknowledged post in its output. Figures (jobs, posts, retries by status, the restart's
duration, the live jobs the stopping workers handed on) are printed; ``pytest -s`` shows them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.support.redis_server import REDIS_BINARY
from tests.support.rolling import Ledger, Load, RollingCluster, retrying_post, waiting_flow

FLOW = "rolling"
WARM_UP_SECONDS = 2.0
AFTER_SECONDS = 1.5


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RollingCluster]:
    if not Path(REDIS_BINARY).exists():
        pytest.fail("redis-server is not installed (.ci/run installs Debian's redis-server)")
    deployment = RollingCluster(tmp_path_factory.mktemp("rolling")).start()
    try:
        response = httpx.post(deployment.url + "/api/flows", json={"dsl_dict": waiting_flow(FLOW)}, timeout=10)
        assert response.status_code == 201, response.text
        yield deployment
    finally:
        deployment.stop()
    output = deployment.output()
    assert "Traceback" not in output, output[-6000:]


DRAINED = re.compile(r"^drained: (\d+) of (\d+) live job", re.MULTILINE)


async def _under_load(cluster: RollingCluster, restart: Callable[[], None]) -> tuple[Ledger, float, tuple[int, int]]:
    """Run the load, ``restart`` (in a thread: it waits on processes) once it is warm, go on a
    little, stop; the ledger, how long the restart took, and how many live jobs the stopping
    workers had and handed to others (their "drained:" log lines)."""
    logged = len(cluster.output())
    load = Load(cluster.url, FLOW)
    async with anyio.create_task_group() as tg:
        await tg.start(load.run)
        await anyio.sleep(WARM_UP_SECONDS)
        began = time.monotonic()
        try:
            await anyio.to_thread.run_sync(restart)
        finally:
            took = time.monotonic() - began
            await anyio.sleep(AFTER_SECONDS)
            load.stop()
    drains = [(int(moved), int(live)) for moved, live in DRAINED.findall(cluster.output()[logged:])]
    return load.ledger, took, (sum(live for _, live in drains), sum(moved for moved, _ in drains))


async def _outcome(http: httpx.AsyncClient, job_id: str) -> tuple[str, list[Any]]:
    """The job's final status (waiting for it to end) and the values it kept."""
    ledger = Ledger()
    waited = await retrying_post(http, f"/api/jobs/{job_id}/wait", {"timeout": 10}, 200, ledger)
    assert waited is not None, ledger.refused
    for _ in range(20):
        response = await http.get(f"/api/jobs/{job_id}/state")
        if response.status_code not in (502, 503, 504):
            break
        await anyio.sleep(0.2)
    assert response.status_code == 200, response.text
    kept = response.json().get("shared_data", {}).get("batches", {}).get("keep", [])
    return waited["status"], [value for batch in kept for value in batch]


async def _check(cluster: RollingCluster, ledger: Ledger, what: str, took: float, drained: tuple[int, int]) -> None:
    print(f"\n{what}: {len(ledger.posts)} jobs, {ledger.post_count} posts acknowledged, "
          f"{len(ledger.completed)} completions; retries {dict(ledger.retries)}; restart took {took:.1f} s; "
          f"stopping workers had {drained[0]} live jobs, handed {drained[1]} on at once")
    assert not ledger.refused, ledger.refused[:10]
    assert len(ledger.completed) >= 20, "the load hardly ran"
    outcomes: dict[str, tuple[str, list[Any]]] = {}
    limiter = anyio.CapacityLimiter(8)

    async def judge(job_id: str) -> None:
        async with limiter:
            outcomes[job_id] = await _outcome(http, job_id)

    async with httpx.AsyncClient(base_url=cluster.url, timeout=30) as http:
        async with anyio.create_task_group() as tg:
            for job_id in ledger.posts:
                tg.start_soon(judge, job_id)
        failed = (await http.get("/api/jobs", params={"status": "failed", "limit": 10})).json()
    not_completed = {j: status for j, (status, _) in outcomes.items() if status != "completed"}
    lost = {j: sorted(set(ledger.posts[j]) - set(kept)) for j, (_, kept) in outcomes.items()
            if set(ledger.posts[j]) - set(kept)}
    assert not not_completed, not_completed
    assert not lost, lost
    assert failed["total"] == 0, failed["jobs"]


async def test_restarting_the_workers_one_at_a_time_fails_no_job_and_loses_no_post(cluster: RollingCluster) -> None:
    ledger, took, drained = await _under_load(cluster, cluster.roll)
    await _check(cluster, ledger, "TTIN/TTOU, worker by worker", took, drained)


async def test_a_hup_reload_fails_no_job_and_loses_no_post(cluster: RollingCluster) -> None:
    ledger, took, drained = await _under_load(cluster, cluster.reload)
    await _check(cluster, ledger, "kill -HUP", took, drained)
    # Every old worker stops at once, so together they hold every live job (one per client,
    # nearly always). One at a time (above), the oldest worker may by chance own none.
    assert drained[0] > 0, "no stopping worker had a live job: nothing moved"

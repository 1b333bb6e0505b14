"""``GET /api/jobs`` reads its own writes: a job is listed as soon as its 201 is out, and the
``status`` filter is applied to the status the job has now, not to one recorded a moment ago.

A job's record is stored with each status change, a little later (and the change from ``idle``
back to ``running`` not at all), so a listing filtered on the store alone would miss new jobs or
show an ``idle`` job under ``?status=running``. Generated clients (and the dashboard) list right
after they write; these rounds do exactly that, 100 times in a row.

Single process: in a cluster, jobs that run on another server are filtered by the status their
owner last recorded (the spec says so: `listJobs`).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.rest import create_flow, poll, start_job

pytestmark = pytest.mark.single_process

ROUNDS = 100


async def listed(client: httpx.AsyncClient, flow_id: str, status: str | None = None, limit: int = 1) -> dict[str, Any]:
    """The newest jobs of the flow (in the status): every answer is checked against the spec,
    which costs per job listed, and the newest is the one each round looks for."""
    params = {"flow_id": flow_id, "limit": limit, **({"status": status} if status else {})}
    response = await client.get("/api/jobs", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def slow_flow(client: httpx.AsyncClient, flow_id: str) -> None:
    """Without an entry a job goes idle at once; a post to ``slow`` keeps it running a minute."""
    await create_flow(client, dsl_dict={"flow_id": flow_id,
                                        "routines": {"slow": {"class": "SlowProcessor", "config": {"delay": 60}}}})


async def test_a_new_job_is_listed_at_once_under_the_status_it_has_now(client: httpx.AsyncClient, uid: str) -> None:
    flow_id = f"listing-{uid}"
    await slow_flow(client, flow_id)
    for round_ in range(ROUNDS):
        job_id = (await start_job(client, flow_id=flow_id))["job_id"]
        newest = await listed(client, flow_id)
        assert newest["jobs"][0]["job_id"] == job_id, f"round {round_}: the new job is not listed first"
        assert newest["total"] == round_ + 1
        # Running, then idle once its (empty) work is done; the earlier jobs are all idle. It heads
        # the running list or the idle one (both, if it went idle between the two calls), always
        # listed with the status it was found under.
        heads = {status: (await listed(client, flow_id, status))["jobs"][:1] for status in ("running", "idle")}
        found_under = [status for status, head in heads.items() if head and head[0]["job_id"] == job_id]
        assert found_under, f"round {round_}: the new job heads neither the running nor the idle list: {heads}"
        for status in found_under:
            assert heads[status][0]["status"] == status, f"round {round_}: {heads}"


async def test_the_status_filter_sees_changes_the_store_has_not_recorded(client: httpx.AsyncClient, uid: str) -> None:
    """``idle`` -> ``running`` is never written to the store (it happens on every post), and a
    control action's answer comes once it is saved: the filter follows both at once."""
    flow_id = f"changes-{uid}"
    await slow_flow(client, flow_id)
    for round_ in range(10):
        job_id = (await start_job(client, flow_id=flow_id))["job_id"]
        url = f"/api/jobs/{job_id}"
        await poll(lambda: client.get(url), lambda r: r.json()["status"] == "idle", "idle")  # noqa: B023
        assert (await listed(client, flow_id, "idle"))["jobs"][0]["job_id"] == job_id
        assert (await listed(client, flow_id, "running"))["total"] == 0

        posted = await client.post(f"/api/jobs/{job_id}/post", json={"routine_id": "slow", "slot_name": "input"})
        assert posted.status_code == 202, posted.text
        running = await listed(client, flow_id, "running", limit=10)
        assert [job["job_id"] for job in running["jobs"]] == [job_id] and running["total"] == 1, f"round {round_}"
        assert running["jobs"][0]["status"] == "running"
        assert (await listed(client, flow_id, "idle"))["total"] == 0

        assert (await client.post(f"/api/jobs/{job_id}/cancel")).status_code == 200
        ended = await listed(client, flow_id, "cancelled")
        assert ended["jobs"][0]["job_id"] == job_id and ended["jobs"][0]["status"] == "cancelled"
        assert ended["total"] == round_ + 1
        assert (await listed(client, flow_id, "running"))["total"] == 0


async def test_paging_a_status_filter_counts_every_job_once(client: httpx.AsyncClient, uid: str) -> None:
    """Jobs in memory and jobs that are only stored, on pages of one: each shown once, in order."""
    flow_id = f"paging-{uid}"
    await create_flow(client, dsl_dict={"flow_id": flow_id, "routines": {"sink": {"class": "DataSink"}}})
    ids = [(await start_job(client, flow_id=flow_id))["job_id"] for _ in range(7)]
    for job_id in ids[::2]:
        assert (await client.post(f"/api/jobs/{job_id}/complete")).status_code == 200
    completed = ids[::2][::-1]  # newest first
    pages = [(await client.get("/api/jobs", params={"flow_id": flow_id, "status": "completed", "limit": 1,
                                                      "offset": offset})).json() for offset in range(5)]
    assert [page["jobs"][0]["job_id"] if page["jobs"] else None for page in pages] == [*completed, None]
    assert {page["total"] for page in pages} == {4}

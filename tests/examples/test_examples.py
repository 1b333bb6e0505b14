"""Every example runs and does what its comment says."""

from __future__ import annotations

import runpy
from pathlib import Path

import anyio
import pytest

from routilux import Engine, Entry, JobStatus, default_registry
from routilux.engine.dsl import load_flow
from routilux.engine.plan import validate_flow

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_quickstart_prints_hello() -> None:
    module = runpy.run_path(str(EXAMPLES / "quickstart.py"))
    assert anyio.run(module["main"]) == ["HELLO!"]


@pytest.mark.parametrize("path", sorted((EXAMPLES / "flows").glob("*.yaml")), ids=lambda p: p.name)
def test_example_flows_validate_without_errors(path: Path) -> None:
    report = validate_flow(load_flow(path.read_text()), default_registry())
    assert report.errors == []


async def test_etl_example_keeps_good_records_and_rejects_bad_ones() -> None:
    flow = load_flow((EXAMPLES / "flows" / "etl.yaml").read_text())
    async with Engine() as engine:
        job = await engine.start_job(
            flow,
            entries=[Entry("source", "trigger", v) for v in ("apple", "", 42, "pear")],
            complete_when_idle=True,
        )
        assert await job.wait(10) is JobStatus.COMPLETED
    results = job.shared_data["results"]
    assert [i["data"] for i in results["kept"]] == ["APPLE", "PEAR"]
    assert [i["data"] for i in results["rejected"]] == ["", 42]


async def test_batching_example_routes_batches_and_doubles() -> None:
    flow = load_flow((EXAMPLES / "flows" / "batching.yaml").read_text())
    async with Engine() as engine:
        job = await engine.start_job(flow, entries=[Entry("source", "trigger", {})], complete_when_idle=True)
        assert await job.wait(10) is JobStatus.COMPLETED
    results = job.shared_data["results"]
    assert [i["data"] for i in results["big_batches"]] == [[50, 70, 80], [90]]
    assert [i["data"] for i in results["small_doubled"]] == [2, 4, 6]


async def test_branching_example_retries_the_flaky_branch_and_continues_past_bad_input() -> None:
    flow = load_flow((EXAMPLES / "flows" / "branching.yaml").read_text())
    async with Engine() as engine:
        job = await engine.start_job(flow, entries=[Entry("source", "trigger", None)], complete_when_idle=True)
        assert await job.wait(10) is JobStatus.COMPLETED
    results = job.shared_data["results"]
    assert [i["data"] for i in results["small"]] == [12, 7]
    assert sorted(i["data"] for i in results["big"]) == [250, 900]
    strategies = {(e.routine_id, e.strategy) for e in job.errors}
    assert ("parse", "continue") in strategies  # "n/a" was recorded, the job went on
    assert ("flaky", "retry") in strategies  # the flaky service failed at least once and was retried


async def test_agent_example_calls_the_mocked_service_concurrently(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from routilux import Registry
    from routilux.builtins import register_builtins

    monkeypatch.syspath_prepend(EXAMPLES / "agent")
    registry = Registry()
    register_builtins(registry)
    assert set(registry.load_modules(["agent_routines"])) == {"Planner", "Researcher", "Writer"}
    flow = load_flow((EXAMPLES / "agent" / "agent.yaml").read_text())
    started = time.monotonic()
    async with Engine(registry=registry) as engine:
        job = await engine.start_job(flow, entries=[Entry("planner", "question", "routilux")], complete_when_idle=True)
        assert await job.wait(10) is JobStatus.COMPLETED
    elapsed = time.monotonic() - started
    service = job.shared_data["service"]
    assert service["calls"] == 4 and service["max_in_flight"] >= 2
    assert elapsed < 4 * 0.3  # four 0.3 s calls, overlapped
    [answer] = job.shared_data["results"]["answer"]
    assert answer["data"].startswith("routilux: notes on routilux: definition")

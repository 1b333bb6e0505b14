"""The aggregator's place in the server (routilux.server.metrics): finished jobs' metrics reach
the store a burst at a time, and a store that fails loses those figures (logged), not the server."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import pytest

from routilux.engine import Engine, Entry
from routilux.server.metrics import start_metrics
from routilux.store import MemoryStore
from tests.support.routines import chain, make_registry


class NoCatalog:
    def find(self, flow_id: str) -> None:
        return None


class FailingOnce(MemoryStore):
    """A memory store whose first metrics write fails."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[list[str]] = []

    async def put_job_metrics(self, items: Sequence[tuple[str, str, bytes]]) -> None:
        self.writes.append([job_id for job_id, _flow, _blob in items])
        if len(self.writes) == 1:
            raise OSError("disk full")
        await super().put_job_metrics(items)


async def test_a_failed_metrics_write_is_logged_and_later_ones_still_land(caplog: pytest.LogCaptureFixture) -> None:
    store = FailingOnce()
    async with store, Engine(registry=make_registry()) as engine, anyio.create_task_group() as tg:
        aggregator = await start_metrics(tg, engine, store, NoCatalog())  # type: ignore[arg-type]
        flow = chain("stored", "Relay", "Collect")
        jobs: list[Any] = []
        for n in range(3):
            job = await engine.start_job(flow, entries=[Entry("r0", "input", n)], complete_when_idle=True)
            await job.wait(5)
            jobs.append(job)
            with anyio.fail_after(5):
                while sum(len(w) for w in store.writes) < n + 1:
                    await anyio.sleep(0.005)
        assert "could not store the metrics of 1 finished job(s)" in caplog.text and jobs[0].job_id in caplog.text
        assert await store.get_job_metrics(jobs[0].job_id) is None  # that one is lost, and said so
        for job in jobs[1:]:
            assert await store.get_job_metrics(job.job_id) is not None
        assert aggregator.job(jobs[0].job_id) is not None  # memory still has it
        tg.cancel_scope.cancel()

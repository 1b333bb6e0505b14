"""Job retention: old finished jobs leave the store (and memory) so neither grows without end.

Two rules, both from the settings: keep the newest ``ROUTILUX_JOBS_KEEP`` finished jobs
(completed, failed or cancelled), and — if ``ROUTILUX_JOBS_MAX_AGE_SECONDS`` is set — drop any that
ended longer ago than that. A pruned job is gone everywhere: its record and its events from the
store, and the job itself and its replay history from memory (so ``GET /api/jobs/{id}`` and its
``/events`` answer 404, and the job leaves ``GET /api/jobs``). Jobs that have not finished are
never pruned, however old.

When it runs: once at start-up (the rules may have changed since the last run), every
``interval`` seconds (60, or a quarter of the maximum age when that is shorter, so the age rule is
kept within a quarter of its period), and soon after many jobs ended — the recorder reports each
``job_end``, and after ``keep // 10`` of them (1 to 1000) the pruner wakes up, at most once per
``min_gap`` seconds so a burst of endings costs one pass. A pass with nothing to delete is one
indexed query. A pass with much to delete works in batches of :data:`PRUNE_BATCH` jobs, each its
own short write, so the store's single writer is never held for long.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import anyio
import anyio.lowlevel

from routilux.bus.events import utc_now
from routilux.engine import Engine
from routilux.server.eventlog.history import EventHistory
from routilux.store.base import PRUNE_BATCH, JobQuery, Store

log = logging.getLogger("routilux.server")

DEFAULT_INTERVAL = 60.0
MIN_GAP = 1.0


class JobPruner:
    """Applies the retention rules to the store, the engine and the replay history (module
    docstring).

    Run it as a task of the application's task group: ``tg.start_soon(pruner.run,
    recorder.finished)``. It returns by itself once that event is set (the recorder wrote the
    last records: the engine stopped), so the group is never left waiting on it.
    """

    def __init__(
        self,
        store: Store,
        engine: Engine,
        history: EventHistory,
        *,
        keep: int | None,
        max_age_seconds: float | None = None,
        interval: float | None = None,
        min_gap: float = MIN_GAP,
        batch: int = PRUNE_BATCH,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        if keep is not None and keep < 0:
            raise ValueError("keep must be None or >= 0")
        self.store = store
        self.engine = engine
        self.history = history
        self.keep = keep
        self.max_age = None if max_age_seconds is None else timedelta(seconds=max_age_seconds)
        if interval is None:
            interval = DEFAULT_INTERVAL
            if max_age_seconds is not None:
                interval = min(interval, max(MIN_GAP, max_age_seconds / 4))
        self.interval = interval
        self.min_gap = min_gap
        self.batch = batch
        self.now = now
        #: Job ends that wake the pruner early: a tenth of what is kept, from 1 to 1000.
        self.wake_after = 1000 if keep is None else min(1000, max(1, keep // 10))
        self.pruned = 0  # in all, since start (for logs and tests)
        self._ended = 0  # job ends since the last pass
        self._wake = anyio.Event()

    def job_ended(self) -> None:
        """Called by the recorder for each ``job_end`` it records (cheap: a counter)."""
        self._ended += 1
        if self._ended >= self.wake_after:
            self._wake.set()

    async def prune(self) -> int:
        """One pass: delete in batches until nothing is left over; returns how many went."""
        self._ended = 0
        if self.keep is None and self.max_age is None:
            return 0
        total = 0
        while True:
            ended_before = None if self.max_age is None else self.now() - self.max_age
            ids = await self.store.prune_jobs(keep=self.keep, ended_before=ended_before, limit=self.batch)
            forget_locally(self.engine, self.history, ids)
            total += len(ids)
            if len(ids) < self.batch:
                break
            await anyio.lowlevel.checkpoint()  # let requests and the recorder in between batches
        if total:
            self.pruned += total
            log.info(
                "pruned %d finished job(s) with their events (ROUTILUX_JOBS_KEEP=%s, "
                "ROUTILUX_JOBS_MAX_AGE_SECONDS=%s)",
                total, self.keep, None if self.max_age is None else self.max_age.total_seconds(),
            )
        return total

    async def run(self, until: anyio.Event) -> None:
        """Prune now, then whenever woken (see the module docstring), until ``until`` is set."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._loop)
            await until.wait()
            tg.cancel_scope.cancel()

    async def _loop(self) -> None:
        while True:
            try:
                await self.prune()
            except Exception:  # noqa: BLE001 - housekeeping must not take the server down
                log.exception("pruning old jobs failed; trying again in %g s", self.interval)
            await anyio.sleep(self.min_gap)  # a burst of job ends is pruned once
            with anyio.move_on_after(self.interval):
                await self._wake.wait()
            self._wake = anyio.Event()


def forget_locally(engine: Engine, history: EventHistory, job_ids: Sequence[str]) -> None:
    """Deleted jobs leave this server's memory: the engine's finished jobs and the replay history."""
    for job_id in job_ids:
        engine.forget_job(job_id)
        history.forget(job_id)


async def jobs_to_clean_up(
    store: Store, *, statuses: Sequence[str], ended_before: datetime, flow_id: str | None, limit: int
) -> list[str]:
    """The ids ``POST /api/jobs/cleanup`` deletes: finished jobs of ``statuses`` (of ``flow_id``,
    if given) that ended before ``ended_before``, at most ``limit``. Jobs that have not finished
    are never chosen."""
    chosen: list[str] = []
    for status in sorted(set(statuses)):
        offset = 0
        while len(chosen) < limit:
            records, _ = await store.list_jobs(
                JobQuery(flow_id=flow_id, status=status, limit=1000, offset=offset, with_state=False)
            )
            if not records:
                break
            offset += len(records)
            chosen.extend(r.job_id for r in records if r.completed_at is not None and r.completed_at <= ended_before)
    return chosen[:limit]

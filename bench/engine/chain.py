"""The Routilux chains of the engine bench (bus on, one draining subscriber) and the rows they make:
each Routilux row paired with its raw anyio baseline, and the metrics aggregator's overhead.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread

from bench.engine.baselines import (
    _timeout_for,
    baseline_async,
    baseline_async_batched,
    baseline_sync,
    baseline_sync_blocking,
)
from bench.engine.common import (
    HOPS_PER_ITEM,
    TARGET_ASYNC_HOPS,
    TARGET_SYNC_HOPS,
    Result,
    Tally,
    bench_registry,
    chain_flow,
)
from bench.report import BenchFailure
from routilux import Engine, JobStatus, RoutiluxError
from routilux.bus import Gap, Subscription
from routilux.monitor import MetricsAggregator


# Routilux chains
# ---------------------------------------------------------------------------------------------
@dataclass
class BusStats:
    received: int = 0
    gaps: int = 0
    lost_in_gaps: int = 0
    last_type: str = ""


async def _drain(sub: Subscription, stats: BusStats) -> None:
    """The one subscriber: consume every event as it comes (as a WebSocket or metrics would)."""
    async for ev in sub:
        if isinstance(ev, Gap):
            stats.gaps += 1
            stats.lost_in_gaps += ev.to_seq - ev.from_seq + 1
        else:
            stats.received += 1
            stats.last_type = ev.type


async def _feed(scenario: str, job: Any, n: int, tally: Tally, done: anyio.Event) -> float:
    """Post ``n`` items to ``s1.input`` and wait for the sink; return the seconds it took."""
    t0 = time.perf_counter()
    try:
        with anyio.fail_after(_timeout_for(n)):
            for i in range(n):
                await job.post("s1", "input", {"i": i})
            # Wait for the sink; a job that goes idle first has lost items (idle means nothing
            # queued or running, and the sink sets `done` inside its own activation).
            while not done.is_set():
                with anyio.move_on_after(0.05):
                    await done.wait()
                if not done.is_set() and job.status is JobStatus.IDLE:
                    raise BenchFailure(
                        f"{scenario}: the job went idle with {tally.count} of {n} items at the sink "
                        f"({tally.disorder} out of order, e.g. (expected, got) {tally.examples})"
                    )
    except RoutiluxError as exc:  # e.g. posting to a job that failed under us
        raise BenchFailure(f"{scenario}: {type(exc).__name__}: {exc}; job {job.status.value} {job.error}") from exc
    except TimeoutError:
        raise BenchFailure(
            f"{scenario}: timed out with {tally.count} of {n} items at the sink; job {job.status.value}, "
            f"queues {[(q.routine_id, q.unconsumed) for q in job.queue_status()]}"
        ) from None
    seconds = time.perf_counter() - t0
    if job.is_terminal:
        raise BenchFailure(f"{scenario}: the job ended early: {job.status.value} {job.error}")
    tally.verify(scenario)
    return seconds


async def routilux_chain(n: int, *, sync: bool, subscriber: bool = True, metrics: bool = False) -> Result:
    """A 5-routine chain in one job, fed by ``await job.post`` (back-pressure applies); with
    ``metrics``, a :class:`MetricsAggregator` is subscribed too."""
    kind = "sync" if sync else "async"
    scenario = f"routilux, {kind}, bus + 1 subscriber" if subscriber else f"routilux, {kind}, no subscriber"
    if metrics:
        scenario += " + metrics"
    plan_class = "SyncPass" if sync else "AsyncPass"
    tally = Tally(n)
    stats = BusStats()
    failure: BenchFailure | None = None
    seconds = 0.0
    async with Engine(registry=bench_registry()) as engine:
        plan = engine.compile(chain_flow(f"bench_{kind}", plan_class))
        async with anyio.create_task_group() as tg:
            sub = engine.bus.subscribe() if subscriber else None
            if sub is not None:
                tg.start_soon(_drain, sub, stats)
            aggregator = MetricsAggregator(engine.bus) if metrics else None
            if aggregator is not None:
                tg.start_soon(aggregator.run)
            job = await engine.start_job(plan)
            done = anyio.Event()
            job.shared_data["tally"] = tally
            job.shared_data["done"] = done

            async def watch() -> None:
                await job.wait()
                done.set()  # a job that ends early must not leave the bench waiting

            tg.start_soon(watch)
            cpu0 = time.process_time()
            try:
                seconds = await _feed(scenario, job, n, tally, done)
            except BenchFailure as exc:
                failure = exc  # raised below, outside the task group (no ExceptionGroup)
                tg.cancel_scope.cancel()
            else:
                job.complete()
                # Let the subscriber catch up with the tail (job_end included), then stop it.
                with anyio.move_on_after(30):
                    while sub is not None and sub.pending():
                        await anyio.sleep(0.005)
                if sub is not None:
                    sub.close()
                if aggregator is not None:
                    with anyio.move_on_after(30):
                        while aggregator.pending:
                            await anyio.sleep(0.005)
                    aggregator.close()
            published = job.last_seq
            cpu_seconds = time.process_time() - cpu0  # the tails drained included: all the work
    if failure is not None:
        raise failure
    extra: dict[str, Any] = {"events_published": published, "cpu_seconds": round(cpu_seconds, 4)}
    if aggregator is not None:
        seen = aggregator.job(job.job_id)
        if seen is None or seen.events_seen + seen.events_lost != published or (
                not seen.events_lost and seen.totals.slot_calls != n * HOPS_PER_ITEM):
            raise BenchFailure(f"{scenario}: the aggregator's figures are off: {seen}")
        extra |= {"metrics_events_seen": seen.events_seen, "metrics_events_lost": seen.events_lost}
    if sub is not None:
        extra |= {
            "events_received": stats.received,
            "events_dropped": sub.dropped,
            "gap_notices": stats.gaps,
            "events_lost_per_gaps": stats.lost_in_gaps,
        }
        if stats.received + sub.dropped != published:
            raise BenchFailure(
                f"{scenario}: bus accounting is off: {published} published for the job, "
                f"{stats.received} received + {sub.dropped} dropped"
            )
    target = TARGET_SYNC_HOPS if sync else TARGET_ASYNC_HOPS
    result = Result(scenario, items=n, seconds=seconds, hops=n * HOPS_PER_ITEM, extra=extra)
    if subscriber:
        result.target = f">= {target:,.0f} hops/s"
        result.passed = result.hops_per_s >= target
    return result


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------
def run(coro_fn: Callable[..., Awaitable[Result]], *args: Any, **kwargs: Any) -> Result:
    """Run one scenario in its own event loop (so no scenario inherits another's garbage)."""
    return anyio.run(lambda: coro_fn(*args, **kwargs))


def throughput_rows(n: int, *, kinds: tuple[str, ...] = ("async", "sync"), extras: bool = True) -> list[Result]:
    """The throughput scenarios, each Routilux row paired with its raw anyio baseline."""
    rows: list[Result] = []
    if "async" in kinds:
        base = run(baseline_async, n)
        rows.append(base)
        if extras:
            batched = run(baseline_async_batched, n)
            batched.baseline = base
            rows.append(batched)
        engine_row = run(routilux_chain, n, sync=False)
        engine_row.baseline = base
        rows.append(engine_row)
        if extras:
            bare = run(routilux_chain, n, sync=False, subscriber=False)
            bare.baseline = base
            rows.append(bare)
    if "sync" in kinds:
        base = run(baseline_sync, n)
        rows.append(base)
        if extras:
            blocking = run(baseline_sync_blocking, n)
            blocking.baseline = base
            rows.append(blocking)
        engine_row = run(routilux_chain, n, sync=True)
        engine_row.baseline = base
        rows.append(engine_row)
    return rows


TARGET_METRICS_RATIO = 0.90  # the chain with the metrics aggregator subscribed, of the same without


def metrics_overhead_row(n: int, rounds: int = 5) -> Result:
    """The async chain (bus + 1 subscriber) with and without a :class:`MetricsAggregator`
    subscribed, ``rounds`` times interleaved. The row's ratio is the median of the per-round
    ratios of throughput per CPU second (process CPU time, the drained tails included): on a
    shared machine, time spent waiting for a core would otherwise count as the aggregator's."""
    ratios: list[float] = []
    withs: list[Result] = []
    for _ in range(rounds):
        without = run(routilux_chain, n, sync=False)
        with_metrics = run(routilux_chain, n, sync=False, metrics=True)
        ratios.append(without.extra["cpu_seconds"] / with_metrics.extra["cpu_seconds"])
        withs.append(with_metrics)
    ratios_sorted = sorted(ratios)
    ratio = ratios_sorted[len(ratios_sorted) // 2]
    row = sorted(withs, key=lambda r: r.seconds)[len(withs) // 2]
    row.extra |= {"ratio_vs_without_metrics": round(ratio, 3), "rounds_ratio": [round(r, 3) for r in ratios]}
    row.target = f">= {TARGET_METRICS_RATIO:.0%} of without (is {ratio:.0%})"
    row.passed = ratio >= TARGET_METRICS_RATIO
    return row



"""Engine throughput and idle-cost benchmark (``make bench``; a bounded run is in ``make test``).

    python bench/engine.py [--items N] [--idle-jobs N] [--quick] [--check] [--profile]
                           [--only async,sync,idle] [--json FILE]

In one run it measures a 5-stage pass-through chain fed N items (default 100,000), built twice:
from raw anyio memory object streams (the baseline) and as a Routilux flow of five routines in one
job, first with ``async def`` logic and then with sync ``def`` logic. Every Routilux run has the
event bus on with one wildcard subscriber that drains events as they come, and reports how many
events it got and lost. Each sink checks that all N items arrived in order; a loss, a duplicate,
a reordering or a failed job raises :class:`BenchFailure` (the run fails loudly, always).

The definition of a hop (the same for the baseline and the engine) is printed with the table:
one item delivered to one stage, so 5 hops per item.

Rows, in order (the ``×raw`` column divides a row's µs/hop by its reference baseline's):

- ``raw anyio, async``: the reference — each stage a task forwarding item by item.
- ``raw anyio, async (batch drain)``: informational — stages take everything waiting, as the
  engine's ``immediate`` policy does; the fastest plain anyio gets.
- ``routilux, async, bus + 1 subscriber``: the target row (>= 20,000 hops/s).
- ``routilux, async, no subscriber``: informational — what the bus costs.
- ``raw anyio, sync (thread per batch, loop sends)``: the reference for sync (see
  :func:`baseline_sync` for why it mirrors the engine).
- ``raw anyio, sync (thread per batch, blocking hop per item)``: informational — the naive way.
- ``routilux, sync, bus + 1 subscriber``: the target row (>= 5,000 hops/s).
- ``routilux, async, bus + 1 subscriber + metrics``: the async chain with the metrics aggregator
  subscribed as well, interleaved 5 times with the same chain without it (30,000 items each);
  target: >= 90% of the throughput without, per CPU second of the process (the median of the
  per-round ratios; CPU time, because waiting for a core on a shared machine is not a cost of
  the aggregator).

Then it starts --idle-jobs jobs (default 10,000) of a 5-routine flow in a fresh interpreter
(``bench/idle_jobs.py``), lets each run one item and go idle, and measures RSS growth, CPU while
idle and job-lookup latency.

Targets (issue, 2-core machine): >= 20,000 async hops/s with the bus on and one subscriber,
>= 5,000 sync hops/s, 10,000 idle jobs in <= 300 MB RSS growth. ``--check`` makes a missed
target exit 1; without it the table just says FAIL.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
from anyio.abc import ObjectReceiveStream, ObjectSendStream

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    HOP_DEFINITION,
    HOPS_PER_ITEM,
    STAGES,
    TARGET_ASYNC_HOPS,
    TARGET_SYNC_HOPS,
    BenchFailure,
    Result,
    Tally,
    bench_registry,
    chain_flow,
    format_table,
)
from idle_jobs import idle_rows, run_idle_jobs, run_idle_jobs_subprocess

from routilux import Engine, JobStatus, RoutiluxError
from routilux.bus import Gap, Subscription
from routilux.monitor import MetricsAggregator

STREAM_BUFFER = 1000  # the same bound as a Routilux slot's default capacity
Item = dict[str, Any]


def _timeout_for(n: int) -> float:
    """Generous wall-clock limit for one scenario: a stall or a lost item must not hang the run."""
    return 120.0 + n * 0.005


# ---------------------------------------------------------------------------------------------
# Raw anyio baselines
# ---------------------------------------------------------------------------------------------
def _streams() -> tuple[list[ObjectSendStream[Item]], list[ObjectReceiveStream[Item]]]:
    sends, recvs = [], []
    for _ in range(STAGES):
        send, recv = anyio.create_memory_object_stream[Item](STREAM_BUFFER)
        sends.append(send)
        recvs.append(recv)
    return sends, recvs


async def _run_chain(
    scenario: str,
    n: int,
    stage: Callable[[ObjectReceiveStream[Item], ObjectSendStream[Item]], Awaitable[None]],
) -> Result:
    """Feed ``n`` items through ``STAGES - 1`` copies of ``stage`` and a checking sink."""
    tally = Tally(n)
    sends, recvs = _streams()

    async def feed(send: ObjectSendStream[Item]) -> None:
        async with send:
            for i in range(n):
                await send.send({"i": i})

    async def sink(recv: ObjectReceiveStream[Item]) -> None:
        async with recv:
            async for item in recv:
                tally.add_one(item)

    t0 = time.perf_counter()
    with anyio.fail_after(_timeout_for(n)):
        async with anyio.create_task_group() as tg:
            for k in range(STAGES - 1):
                tg.start_soon(stage, recvs[k], sends[k + 1])
            tg.start_soon(sink, recvs[-1])
            tg.start_soon(feed, sends[0])
    seconds = time.perf_counter() - t0
    tally.verify(scenario)
    return Result(scenario, items=n, seconds=seconds, hops=n * HOPS_PER_ITEM)


async def baseline_async(n: int) -> Result:
    """Each stage is a task forwarding item by item between bounded memory streams."""

    async def forward(recv: ObjectReceiveStream[Item], send: ObjectSendStream[Item]) -> None:
        async with recv, send:
            async for item in recv:
                await send.send(item)

    return await _run_chain("raw anyio, async", n, forward)


async def baseline_async_batched(n: int) -> Result:
    """Informational: each stage takes everything waiting (as the ``immediate`` policy does) and
    forwards it with ``send_nowait``, awaiting only when the next stream is full. The fastest a
    hand-written anyio chain gets; the per-item chain above is the reference baseline."""

    async def forward(recv: ObjectReceiveStream[Item], send: ObjectSendStream[Item]) -> None:
        async with recv, send:
            async for first in recv:
                for item in _take_batch(first, recv):
                    try:
                        send.send_nowait(item)
                    except anyio.WouldBlock:
                        await send.send(item)

    return await _run_chain("raw anyio, async (batch drain)", n, forward)


def _take_batch(first: Item, recv: ObjectReceiveStream[Item]) -> list[Item]:
    """``first`` plus everything already waiting: what Routilux's ``immediate`` policy takes."""
    batch = [first]
    while True:
        try:
            batch.append(recv.receive_nowait())
        except (anyio.WouldBlock, anyio.EndOfStream):
            return batch


async def baseline_sync(n: int) -> Result:
    """The reference for sync routines: the engine's sync path written by hand with anyio.

    Per batch, not per item. Like the ``immediate`` policy, a stage takes every item waiting and
    makes one worker-thread call (``to_thread.run_sync``) for the whole batch. A sync routine's
    ``ctx.emit`` only queues the payload in the activation's outbox, and a pump on the loop
    delivers it with back-pressure; for a pass-through that amounts to "the thread hands its
    batch back and the loop sends each item", which is what this stage does. The ratio to it is
    the engine's own overhead, not the cost of threads.
    """

    def work(batch: list[Item]) -> list[Item]:
        return [item for item in batch]

    async def stage(recv: ObjectReceiveStream[Item], send: ObjectSendStream[Item]) -> None:
        async with recv, send:
            async for first in recv:
                for item in await anyio.to_thread.run_sync(work, _take_batch(first, recv)):
                    await send.send(item)

    return await _run_chain("raw anyio, sync (thread per batch, loop sends)", n, stage)


async def baseline_sync_blocking(n: int) -> Result:
    """Informational: one blocking ``from_thread.run(send.send, item)`` per item from the thread.

    The naive hand-written version, and what Routilux's ``ctx.emit`` did before it had an outbox:
    each emit is a round trip thread -> loop -> thread.
    """

    def work(batch: list[Item], send: ObjectSendStream[Item]) -> None:
        for item in batch:
            anyio.from_thread.run(send.send, item)

    async def stage(recv: ObjectReceiveStream[Item], send: ObjectSendStream[Item]) -> None:
        async with recv, send:
            async for first in recv:
                await anyio.to_thread.run_sync(work, _take_batch(first, recv), send)

    return await _run_chain("raw anyio, sync (thread per batch, blocking hop per item)", n, stage)


# ---------------------------------------------------------------------------------------------
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


def profile_chain(n: int, *, sync: bool = False, top: int = 25) -> str:
    """cProfile of a Routilux chain (bus + 1 subscriber): top functions, two orders.

    cProfile sees the thread that enabled it only: for the sync chain that is the event loop
    (the engine's side of every emit), not the worker threads running ``logic``.
    """
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        result = run(routilux_chain, n, sync=sync)
    finally:
        profiler.disable()
    out = io.StringIO()
    out.write(
        f"cProfile of '{result.scenario}', {n:,} items: {result.hops_per_s:,.0f} hops/s under the profiler "
        f"({result.extra})\n"
    )
    for order in ("tottime", "cumulative"):
        out.write(f"\n--- top {top} by {order} ---\n")
        pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(order).print_stats(top)
    return out.getvalue()


def engine_fingerprint() -> str:
    """A short hash of the routilux sources this run imported (the engine changes under the bench)."""
    import hashlib

    import routilux

    root = Path(routilux.__file__).resolve().parent
    digest = hashlib.sha1()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return f"routilux {routilux.__version__}, sources sha1 {digest.hexdigest()[:12]} ({root})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Routilux engine benchmark (see the module docstring).")
    parser.add_argument("--items", type=int, default=None, help="items fed to each chain (default 100,000)")
    parser.add_argument("--idle-jobs", type=int, default=None, help="idle jobs to start (default 10,000)")
    parser.add_argument("--idle-seconds", type=float, default=None, help="idle CPU window (default 2)")
    parser.add_argument("--quick", action="store_true", help="small sizes (5,000 items, 1,000 idle jobs)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--profile", action="store_true", help="also print cProfiles of the async and sync chains")
    parser.add_argument("--only", default="async,sync,idle,metrics", help="comma list of: async, sync, idle, metrics")
    parser.add_argument("--in-process", action="store_true", help="run idle jobs in this interpreter")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON to FILE")
    args = parser.parse_args(argv)

    items = args.items if args.items is not None else (5_000 if args.quick else 100_000)
    idle_jobs = args.idle_jobs if args.idle_jobs is not None else (1_000 if args.quick else 10_000)
    idle_seconds = args.idle_seconds if args.idle_seconds is not None else (1.0 if args.quick else 2.0)
    only = {part.strip() for part in args.only.split(",") if part.strip()}

    print(f"Routilux engine bench: {items:,} items per chain, {idle_jobs:,} idle jobs, python {sys.version.split()[0]}")
    print(engine_fingerprint())
    print(HOP_DEFINITION)
    print("×raw µs/hop = µs/hop of the row / µs/hop of its raw anyio baseline (1.00 = as fast as raw anyio)\n")
    sys.stdout.flush()

    rows = throughput_rows(items, kinds=tuple(k for k in ("async", "sync") if k in only))
    if "metrics" in only:
        metrics_row = metrics_overhead_row(min(items, 30_000), rounds=3 if args.quick else 5)
        metrics_row.baseline = next((r for r in rows if r.scenario == "raw anyio, async"), None)
        rows.append(metrics_row)
    if "idle" in only:
        runner = run_idle_jobs if args.in_process else run_idle_jobs_subprocess
        rows += idle_rows(runner(idle_jobs, idle_seconds=idle_seconds))
    print(format_table(rows))

    bus_rows = [r for r in rows if "events_received" in r.extra]
    if bus_rows:
        print()
        for r in bus_rows:
            e = r.extra
            print(
                f"{r.scenario}: {e['events_published']:,} events published, {e['events_received']:,} received, "
                f"{e['events_dropped']:,} dropped ({e['gap_notices']} gap notices naming {e['events_lost_per_gaps']:,})"
            )

    if args.json:
        Path(args.json).write_text(json.dumps([r.as_dict() for r in rows], indent=2))

    slow = [r for r in rows if r.passed is False]
    for kind in ("async", "sync"):
        if kind in only and (args.profile or any(f", {kind}," in r.scenario for r in slow)):
            print()
            print(profile_chain(min(items, 50_000 if kind == "async" else 20_000), sync=kind == "sync"))
    if slow:
        print(f"\nMissed targets: {', '.join(r.scenario for r in slow)}")
        return 1 if args.check else 0
    print("\nAll targets met.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

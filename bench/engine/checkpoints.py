"""What checkpointing a running job costs: the async chain (bus + 1 subscriber) with a checkpoint
taken every 100 activations (encoded to JSON bytes, then discarded: the store's write is the
server's cost, not the engine's) against the same chain without.

The sink's order check cannot live in the job's ``shared_data`` here (a checkpoint must encode it,
and a :class:`~bench.engine.common.Tally` is not JSON), so both variants find it by job id in
:data:`SINKS`: they run the same code apart from the checkpoints. The subscriber that drains the
bus takes them, as a server watching the job would: at each ``routine_end`` it compares the
activations ended (the routine states' counts, exact even when the subscriber lost events) with
the count at the last checkpoint.

The chain fed as fast as it takes items batches heavily (the ``immediate`` policy takes whatever
queued: a few hundred activations for 30,000 items), so every 100 activations is rarely there and
each checkpoint carries full queues. The ``paced`` variant yields to the loop after each post so
each item goes through alone: five activations per item, a checkpoint every 20 items, each with
the full execution history (1,000 records): the harsh case for the same rule.

Rounds are interleaved; the row's ratio is the median per-round ratio of throughput per CPU second
of the process (as the metrics row: waiting for a core on a shared machine is no cost of the
checkpoints), the wall-clock ratio is reported next to it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import anyio
import anyio.lowlevel

from bench.engine.chain import _feed, run
from bench.engine.common import HOPS_PER_ITEM, STAGES, Result, Tally, bench_registry
from bench.report import BenchFailure
from routilux import Connection, Engine, Flow, Job, Routine, RoutineSpec
from routilux.bus import Gap, Subscription

CHECKPOINT_EVERY: Final[int] = 100  # activations
TARGET_CHECKPOINT_RATIO: Final[float] = 0.70  # of the throughput without checkpoints (the issue's)

#: job id -> (the sink's tally, set once it has every item)
SINKS: dict[str, tuple[Tally, anyio.Event]] = {}


class SideSink(Routine):
    """The chain's last stage, checking order with a tally kept outside the job's state."""

    slots: ClassVar[list[str]] = ["input"]

    async def logic(self, ctx: Any, input: list[dict[str, Any]]) -> None:
        tally, done = SINKS[ctx.job_id]
        if tally.add(input):
            done.set()


def side_sink_flow(flow_id: str) -> Flow:
    routines = {f"s{k}": RoutineSpec("AsyncPass") for k in range(1, STAGES)}
    routines[f"s{STAGES}"] = RoutineSpec("SideSink")
    connections = [Connection(f"s{k}.output", f"s{k + 1}.input") for k in range(1, STAGES)]
    return Flow(flow_id=flow_id, routines=routines, connections=connections)


@dataclass
class Checkpoints:
    taken: int = 0
    seconds: float = 0.0
    bytes: int = 0


def _activations(job: Job) -> int:
    return sum(state.execution_count for state in job.routine_states.values())


async def _drain(sub: Subscription, job: Job, every: int | None, cps: Checkpoints) -> None:
    last = 0
    async for ev in sub:
        if every is None or isinstance(ev, Gap) or ev.type != "routine_end" or job.is_terminal:
            continue
        ended = _activations(job)
        if ended - last >= every:
            last = ended
            t0 = time.perf_counter()
            data = job.checkpoint_bytes()
            cps.seconds += time.perf_counter() - t0
            cps.taken += 1
            cps.bytes += len(data)


async def _paced_feed(scenario: str, job: Job, n: int, tally: Tally, done: anyio.Event) -> float:
    """Post ``n`` items, letting the chain run after each; return the seconds until the sink has all."""
    t0 = time.perf_counter()
    with anyio.fail_after(60 + n / 500):
        for i in range(n):
            await job.post("s1", "input", {"i": i})
            for _ in range(STAGES + 1):
                await anyio.lowlevel.checkpoint()
        await done.wait()
    seconds = time.perf_counter() - t0
    if job.is_terminal:
        raise BenchFailure(f"{scenario}: the job ended early: {job.status.value} {job.error}")
    tally.verify(scenario)
    return seconds


async def checkpoint_chain(n: int, *, every: int | None, paced: bool = False) -> Result:
    """The async chain fed ``n`` items, checkpointed every ``every`` activations (``None``: never)."""
    scenario = "routilux, async, bus + 1 subscriber, side sink" + (", paced" if paced else "")
    if every is not None:
        scenario += f", checkpoint every {every} activations"
    registry = bench_registry()
    registry.register(SideSink)
    tally = Tally(n)
    done = anyio.Event()
    cps = Checkpoints()
    failure: BenchFailure | None = None
    seconds = 0.0
    async with Engine(registry=registry) as engine:
        plan = engine.compile(side_sink_flow("bench_checkpoint"))
        async with anyio.create_task_group() as tg:
            sub = engine.bus.subscribe()
            job = await engine.start_job(plan)
            SINKS[job.job_id] = (tally, done)
            tg.start_soon(_drain, sub, job, every, cps)

            async def watch() -> None:
                await job.wait()
                done.set()

            tg.start_soon(watch)
            cpu0 = time.process_time()
            try:
                seconds = await (_paced_feed if paced else _feed)(scenario, job, n, tally, done)
            except BenchFailure as exc:
                failure = exc
                tg.cancel_scope.cancel()
            else:
                activations = _activations(job)
                job.complete()
                with anyio.move_on_after(30):
                    while sub.pending():
                        await anyio.sleep(0.005)
                sub.close()
            cpu_seconds = time.process_time() - cpu0
            SINKS.pop(job.job_id, None)
    if failure is not None:
        raise failure
    extra: dict[str, Any] = {"cpu_seconds": round(cpu_seconds, 4), "activations": activations}
    if every is not None:
        if cps.taken < activations // every // 2:
            raise BenchFailure(f"{scenario}: only {cps.taken} checkpoints for {activations} activations")
        extra |= {
            "checkpoints": cps.taken,
            "checkpoint_us_mean": round(cps.seconds * 1e6 / max(1, cps.taken), 1),
            "checkpoint_bytes_mean": cps.bytes // max(1, cps.taken),
        }
    return Result(scenario, items=n, seconds=seconds, hops=n * HOPS_PER_ITEM, extra=extra)


def checkpoint_overhead_rows(
    n: int, rounds: int = 5, every: int = CHECKPOINT_EVERY, *, paced: bool = False
) -> tuple[Result, Result]:
    """The chain without and with checkpoints, ``rounds`` times interleaved: the median rows, the
    one with checkpoints carrying the ratios and the target."""
    cpu_ratios: list[float] = []
    wall_ratios: list[float] = []
    withouts: list[Result] = []
    withs: list[Result] = []
    for _ in range(rounds):
        without = run(checkpoint_chain, n, every=None, paced=paced)
        with_cps = run(checkpoint_chain, n, every=every, paced=paced)
        cpu_ratios.append(without.extra["cpu_seconds"] / with_cps.extra["cpu_seconds"])
        wall_ratios.append(without.seconds / with_cps.seconds)
        withouts.append(without)
        withs.append(with_cps)

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    ratio = median(cpu_ratios)
    row = sorted(withs, key=lambda r: r.seconds)[len(withs) // 2]
    ref = sorted(withouts, key=lambda r: r.seconds)[len(withouts) // 2]
    row.baseline = ref
    row.extra |= {
        "ratio_vs_without_checkpoints": round(ratio, 3),
        "wall_ratio_vs_without_checkpoints": round(median(wall_ratios), 3),
        "rounds_ratio": [round(r, 3) for r in cpu_ratios],
    }
    row.target = f">= {TARGET_CHECKPOINT_RATIO:.0%} of without (is {ratio:.0%})"
    row.passed = ratio >= TARGET_CHECKPOINT_RATIO
    return ref, row

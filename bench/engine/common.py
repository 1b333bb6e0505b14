"""Shared pieces of the engine benchmarks: the pass-through routines, the chain flow, the
order/count check, process measurements and the result rows (laid out by
:func:`bench.report.format_table`: throughput rows first, then other figures).

Definition used by every throughput scenario (raw anyio and Routilux alike):

    A *hop* is one item delivered to one stage of the chain. A 5-stage chain fed N items makes
    5 * N hops: feed -> stage 1, and stage k -> stage k+1 for k = 1..4. The last stage is the
    sink: it checks order and count and sends nothing further.

So ``hops/s = 5 * items/s``; with a "4 connections" definition every hops/s figure would be
0.8x of what is printed. The table prints items/s too, so either reading is possible.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

import msgspec
import psutil
from tests.support import processes

from bench.report import BenchFailure, Table, verdict
from routilux import Connection, Flow, Registry, Routine, RoutineSpec

STAGES: Final[int] = 5
HOPS_PER_ITEM: Final[int] = STAGES  # see the module docstring
HOP_DEFINITION: Final[str] = (
    f"hop = one item delivered to one stage: a {STAGES}-stage chain makes {HOPS_PER_ITEM} hops per item "
    f"(feed->s1, s1->s2, ..., s{STAGES - 1}->s{STAGES}); the last stage is the sink that checks order"
)

# Targets of the issue, for this 2-core machine.
TARGET_ASYNC_HOPS: Final[float] = 20_000.0
TARGET_SYNC_HOPS: Final[float] = 5_000.0
TARGET_IDLE_RSS_MB_PER_10K: Final[float] = 300.0
TARGET_IDLE_CPU_FRACTION: Final[float] = 0.02  # of one core, while 10k jobs sit idle
TARGET_SNAPSHOT_SLOWDOWN: Final[float] = 2.0  # snapshot latency with 10k jobs vs with none
TARGET_SNAPSHOT_ALL_IDS_US: Final[float] = 10.0  # and cycling over all 10k ids (cache misses)


# ---------------------------------------------------------------------------------------------
# Order and count checking (shared by the raw anyio sinks and the Routilux sink routines)
# ---------------------------------------------------------------------------------------------
class Tally:
    """What the sink of a chain has seen. Items are ``{"i": index}`` fed in index order."""

    __slots__ = ("count", "disorder", "examples", "expect", "next")

    def __init__(self, expect: int) -> None:
        self.expect = expect
        self.count = 0
        self.next = 0
        self.disorder = 0
        self.examples: list[tuple[int, Any]] = []

    def add(self, items: list[dict[str, Any]]) -> bool:
        """Check a batch; return True once ``expect`` items have been seen."""
        nxt = self.next
        for item in items:
            got = item.get("i")
            if got != nxt:
                self.disorder += 1
                if len(self.examples) < 5:
                    self.examples.append((nxt, got))
                nxt = got if isinstance(got, int) else nxt
            nxt += 1
        self.next = nxt
        self.count += len(items)
        return self.count >= self.expect

    def add_one(self, item: dict[str, Any]) -> bool:
        """Check one item (the raw anyio sinks receive items one by one)."""
        got = item.get("i")
        if got != self.next:
            self.disorder += 1
            if len(self.examples) < 5:
                self.examples.append((self.next, got))
            if isinstance(got, int):
                self.next = got
        self.next += 1
        self.count += 1
        return self.count >= self.expect

    def verify(self, scenario: str) -> None:
        """Fail loudly unless exactly ``expect`` items arrived, in order."""
        if self.count != self.expect or self.disorder:
            raise BenchFailure(
                f"{scenario}: the sink saw {self.count} of {self.expect} items, "
                f"{self.disorder} out of order (expected, got): {self.examples}"
            )


# ---------------------------------------------------------------------------------------------
# The Routilux chain
# ---------------------------------------------------------------------------------------------
class PassConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    #: The last stage: consumes (checks order if the job's state holds a ``tally``), emits nothing.
    tail: bool = False


class AsyncPass(Routine):
    """Async pass-through: emits every item it takes, unchanged."""

    slots: ClassVar[list[str]] = ["input"]
    events: ClassVar[list[str]] = ["output"]
    Config = PassConfig

    async def logic(self, ctx: Any, input: list[dict[str, Any]]) -> None:
        if self.config.tail:
            tally = ctx.state.get("tally")
            if tally is not None and tally.add(input):
                ctx.state["done"].set()
            return
        for item in input:
            await ctx.emit("output", **item)


class SyncPass(Routine):
    """Sync pass-through: runs in a worker thread; each emit is a blocking hop to the loop."""

    slots: ClassVar[list[str]] = ["input"]
    events: ClassVar[list[str]] = ["output"]
    Config = PassConfig

    def logic(self, ctx: Any, input: list[dict[str, Any]]) -> None:
        if self.config.tail:
            tally = ctx.state.get("tally")
            if tally is not None and tally.add(input):
                import anyio.from_thread

                anyio.from_thread.run_sync(ctx.state["done"].set)
            return
        for item in input:
            ctx.emit("output", **item)


def bench_registry() -> Registry:
    registry = Registry()
    registry.register(AsyncPass)
    registry.register(SyncPass)
    return registry


def chain_flow(flow_id: str, class_name: str, stages: int = STAGES) -> Flow:
    """``s1 -> s2 -> ... -> sN`` of ``class_name``; data is posted to ``s1.input``."""
    routines = {
        f"s{k}": RoutineSpec(class_name, config={"tail": True} if k == stages else {})
        for k in range(1, stages + 1)
    }
    connections = [Connection(f"s{k}.output", f"s{k + 1}.input") for k in range(1, stages)]
    return Flow(flow_id=flow_id, routines=routines, connections=connections)


# ---------------------------------------------------------------------------------------------
# Process measurements
# ---------------------------------------------------------------------------------------------
_PROC = psutil.Process(os.getpid())


def rss_bytes(collect: bool = True) -> int:
    """Resident set size after a full garbage collection."""
    if collect:
        gc.collect()
    return _PROC.memory_info().rss


def cpu_seconds() -> float:
    """User + system CPU time consumed by this process so far (all threads)."""
    return processes.cpu_seconds(_PROC)


def thread_count() -> int:
    return _PROC.num_threads()


# ---------------------------------------------------------------------------------------------
# Results (one row of the table each)
# ---------------------------------------------------------------------------------------------
@dataclass
class Result:
    """One row of the table. Throughput rows fill ``items``/``seconds``; others use ``value``."""

    scenario: str
    items: int = 0
    seconds: float = 0.0
    hops: int = 0
    baseline: Result | None = None
    target: str = ""
    passed: bool | None = None  # None: informational row, no target
    value: str = ""  # free-form figure for non-throughput rows
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def hops_per_s(self) -> float:
        return self.hops / self.seconds if self.seconds > 0 else 0.0

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0

    @property
    def us_per_hop(self) -> float:
        return self.seconds * 1e6 / self.hops if self.hops else 0.0

    @property
    def cost_vs_baseline(self) -> float | None:
        """µs/hop of this row divided by µs/hop of its raw anyio baseline (1.0 = as fast)."""
        if self.baseline is None or not self.baseline.us_per_hop:
            return None
        return self.us_per_hop / self.baseline.us_per_hop

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "items": self.items,
            "seconds": round(self.seconds, 4),
            "hops": self.hops,
            "hops_per_s": round(self.hops_per_s, 1),
            "items_per_s": round(self.items_per_s, 1),
            "us_per_hop": round(self.us_per_hop, 3),
            "cost_vs_baseline": None if self.cost_vs_baseline is None else round(self.cost_vs_baseline, 2),
            "target": self.target,
            "passed": self.passed,
            "value": self.value,
            **self.extra,
        }

    def table_line(self) -> tuple[Table, tuple[str, ...]]:
        """Throughput rows (with the ratio to their raw anyio baseline), or a figure row."""
        if not self.hops:
            return _FIGURES, (self.scenario, self.value, self.target or "—", verdict(self.passed))
        cost = self.cost_vs_baseline
        return _THROUGHPUT, (
            self.scenario,
            f"{self.items:,}",
            f"{self.seconds:.3f}",
            f"{self.hops_per_s:,.0f}",
            f"{self.items_per_s:,.0f}",
            f"{self.us_per_hop:.2f}",
            "—" if cost is None else f"{cost:.2f}",
            self.target or "—",
            verdict(self.passed),
        )


_THROUGHPUT = Table(
    ("scenario", "items", "seconds", "hops/s", "items/s", "µs/hop", "×raw µs/hop", "target", "result"),
    frozenset({0, 7, 8}),
)
_FIGURES = Table(("scenario", "figure", "target", "result"), frozenset({0, 1, 2, 3}), order=1)

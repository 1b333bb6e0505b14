"""Interleaved rounds of every variant, and the ratios judged on them (:class:`Overhead`).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.debug_overhead.reference import (
    DEBUGGER,
    NO_HOOKS,
    NO_PROBE,
    TARGET_RATIO,
    VARIANTS,
    cpu_hops_per_s,
    no_hook_job_class,
    run_variant,
)
from bench.engine.common import Result
from bench.report import render_table

# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------
Clock = str  # "cpu" (hops per CPU-second of the process) or "wall" (the engine bench's hops/s)


@dataclass
class Overhead:
    """All runs of one measurement, by variant, in round order.

    Ratios are judged on the ``cpu`` clock by default: on a shared machine the wall clock of a run
    also counts the time other processes held the cores (seen here as per-round wall ratios from
    0.65 to 1.35 under load), while the CPU time of the process is what the variant itself costs.
    Both are reported.
    """

    items: int
    rounds: int
    runs: dict[str, list[Result]] = field(default_factory=dict)

    def hops(self, variant: str, clock: Clock = "cpu") -> list[float]:
        if clock == "wall":
            return [r.hops_per_s for r in self.runs[variant]]
        return [cpu_hops_per_s(r) for r in self.runs[variant]]

    def median_hops(self, variant: str, clock: Clock = "cpu") -> float:
        return statistics.median(self.hops(variant, clock))

    def ratios(self, variant: str, reference: str = NO_HOOKS, clock: Clock = "cpu") -> list[float]:
        """Per round: hops/s of ``variant`` / hops/s of ``reference`` (1.0 = as fast)."""
        return [v / r for v, r in zip(self.hops(variant, clock), self.hops(reference, clock), strict=True)]

    def ratio(self, variant: str, reference: str = NO_HOOKS, clock: Clock = "cpu") -> float:
        return statistics.median(self.ratios(variant, reference, clock))

    @property
    def hook_ratio(self) -> float:
        """The issue's figure: the engine as shipped (no probe) vs without the debugging code."""
        return self.ratio(NO_PROBE, NO_HOOKS)

    @property
    def passed(self) -> bool:
        return self.hook_ratio >= TARGET_RATIO

    def summary(self) -> str:
        header = ("variant", "wall hops/s", "CPU hops/s", "x no hooks (CPU)", "x no hooks (wall)",
                  "x no probe (CPU)", "per round x no hooks (CPU)")
        lines: list[tuple[str, ...]] = [header]
        for variant in self.runs:
            lines.append((
                variant,
                f"{self.median_hops(variant, 'wall'):,.0f}",
                f"{self.median_hops(variant):,.0f}",
                f"{self.ratio(variant):.3f}",
                f"{self.ratio(variant, clock='wall'):.3f}",
                f"{self.ratio(variant, NO_PROBE):.3f}" if NO_PROBE in self.runs else "—",
                " ".join(f"{r:.3f}" for r in self.ratios(variant)),
            ))
        out = [f"{self.items:,} items per run, medians of {self.rounds} interleaved rounds"]
        out += render_table(lines, {0, 6})
        verdict = "PASS" if self.passed else "FAIL"
        out.append(
            f"hook checks (engine as shipped, job.probe None) keep {self.hook_ratio:.1%} of the no-hooks "
            f"throughput (CPU clock): {verdict} (target >= {TARGET_RATIO:.0%})"
        )
        if DEBUGGER in self.runs:
            out.append(
                f"a debug session with no breakpoint armed keeps {self.ratio(DEBUGGER):.1%} of it "
                f"({self.ratio(DEBUGGER, NO_PROBE):.1%} of the engine as shipped)"
            )
        return "\n".join(out)

    def as_dict(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "rounds": self.rounds,
            "median_hops_per_s_wall": {v: round(self.median_hops(v, "wall"), 1) for v in self.runs},
            "median_hops_per_cpu_s": {v: round(self.median_hops(v), 1) for v in self.runs},
            "ratio_vs_no_hooks_cpu": {v: round(self.ratio(v), 4) for v in self.runs},
            "ratio_vs_no_hooks_wall": {v: round(self.ratio(v, clock="wall"), 4) for v in self.runs},
            "ratios_per_round_cpu": {v: [round(x, 4) for x in self.ratios(v)] for v in self.runs},
            "runs": {v: [r.as_dict() for r in self.runs[v]] for v in self.runs},
            "hook_ratio": round(self.hook_ratio, 4),
            "target_ratio": TARGET_RATIO,
            "passed": self.passed,
        }


def measure(
    n: int, rounds: int, *, variants: tuple[str, ...] = VARIANTS, warmup: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> Overhead:
    """Interleaved rounds of every variant (order rotated each round) after one warm-up of each."""
    if NO_HOOKS not in variants:
        raise ValueError(f"the reference variant '{NO_HOOKS}' must be measured")
    no_hook_job_class()  # derive (and check) the reference before anything is timed
    for variant in variants:
        run_variant(variant, warmup if warmup is not None else max(500, n // 10))
    overhead = Overhead(items=n, rounds=rounds, runs={v: [] for v in variants})
    for k in range(rounds):
        order = variants[k % len(variants):] + variants[: k % len(variants)]
        for variant in order:
            result = run_variant(variant, n)
            overhead.runs[variant].append(result)
            if progress is not None:
                progress(
                    f"round {k + 1}/{rounds}  {variant:<24} {result.hops_per_s:>9,.0f} hops/s wall  "
                    f"{cpu_hops_per_s(result):>9,.0f} hops/CPU-s"
                )
    return overhead



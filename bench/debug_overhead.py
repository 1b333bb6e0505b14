"""What the debugger's hooks cost the engine benchmark when no breakpoint is armed.

    python bench/debug_overhead.py [--items N] [--rounds R] [--check] [--json FILE]

The issue asks: "with no breakpoints armed, the engine benchmark stays within 5% of its figure
without the debugging code (measured in the same run)". The figure is the target row of
``bench/engine.py``: the async 5-routine chain, bus on with one subscriber
(:func:`engine.routilux_chain`, run unchanged). It is measured here in one process, for three
variants of the job it starts:

- ``no hooks`` — the reference, the engine *without the debugging code*: jobs are created as a
  ``Job`` subclass whose hooked methods (``_deliver``, ``_emit``, ``_attempts``) are the engine's own
  source with the probe checks cut out (see :func:`no_hook_job_class`; it fails loudly if the
  engine grows a hook this does not know about, so the reference cannot silently drift);
- ``no probe`` — the engine as shipped, ``job.probe is None``: what every job pays for the
  debugger existing (the issue's requirement: >= 0.95 of ``no hooks``);
- ``debugger, 0 breakpoints`` — a :class:`~routilux.debug.session.JobDebugger` attached
  (``attach(job)``) but no breakpoint: what a job keeps paying once a debug session was opened
  on it and its breakpoints were deleted (informational; the session records a call stack).

Rounds interleave the variants, rotating their order each round, after one warm-up run of each;
each run is a fresh event loop and engine. The ratio of a variant is the median over rounds of
its throughput divided by the reference's *in the same round* (so slow drift of the machine
cancels out). Throughput is judged in hops per CPU-second of the process over the bench's timed
window (``_feed``): on a shared machine the wall clock also counts time other processes held the
cores (per-round wall ratios from 0.65 to 1.35 were seen under load), the CPU time is what the
variant costs. The wall-clock hops/s (the engine bench's own figure) is reported alongside.

``--check`` exits 1 if the hook checks cost more than 5%. Sizes: ``FULL_ITEMS`` x ``FULL_ROUNDS``
(about 30-40 s); ``tests/bench/test_debug_overhead.py`` runs a bounded version in ``make test``.
"""

from __future__ import annotations
import __future__

import argparse
import ast
import gc
import importlib.util
import inspect
import json
import statistics
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any, Final

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from _common import HOP_DEFINITION, Result

import routilux.engine.job as job_module
import routilux.engine.runtime as runtime_module
from routilux.debug.session import attach
from routilux.engine import Engine, Job

NO_HOOKS: Final = "no hooks"
NO_PROBE: Final = "no probe"
DEBUGGER: Final = "debugger, 0 breakpoints"
VARIANTS: Final = (NO_HOOKS, NO_PROBE, DEBUGGER)

#: The issue's bound: the engine as shipped (no probe) keeps >= 95% of the no-hooks throughput.
TARGET_RATIO: Final = 0.95

#: The full measurement (``make bench``): per run, and interleaved rounds.
FULL_ITEMS: Final = 10_000
FULL_ROUNDS: Final = 9

#: The Job methods that call the probe, and how many checks each has (a call site of the probe).
HOOKED_METHODS: Final = {"_deliver": 1, "_emit": 2, "_attempts": 1}


class BenchSetupError(RuntimeError):
    """The no-hooks reference could not be derived faithfully from the engine's source."""


def load_engine_bench() -> ModuleType:
    """``bench/engine.py``, loaded once under the name the engine bench tests use."""
    name = "routilux_bench_engine"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, BENCH_DIR / "engine.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------
# The reference: the engine's own methods without the probe checks
# ---------------------------------------------------------------------------------------------
def _mentions_probe(node: ast.AST) -> bool:
    return any(
        (isinstance(n, ast.Attribute) and n.attr == "probe") or (isinstance(n, ast.Name) and n.id == "probe")
        for n in ast.walk(node)
    )


def _is_hold_or_probe_call(stmt: ast.stmt) -> bool:
    """``await self._held()`` or ``self.probe.on_x(...)`` / ``probe.on_x(...)`` as a statement."""
    if not isinstance(stmt, ast.Expr):
        return False
    value = stmt.value.value if isinstance(stmt.value, ast.Await) else stmt.value
    if not isinstance(value, ast.Call) or not isinstance(value.func, ast.Attribute):
        return False
    return value.func.attr == "_held" or _mentions_probe(value.func)


class _StripProbe(ast.NodeTransformer):
    """Drop ``probe = self.probe`` and ``if <probe test>: <hold or probe call>`` statements."""

    def __init__(self) -> None:
        self.checks_removed = 0

    def _strip(self, body: list[ast.stmt]) -> list[ast.stmt]:
        kept: list[ast.stmt] = []
        for stmt in body:
            if isinstance(stmt, ast.Assign) and [ast.unparse(t) for t in stmt.targets] == ["probe"]:
                if ast.unparse(stmt.value) != "self.probe":
                    raise BenchSetupError(f"unexpected probe assignment: {ast.unparse(stmt)}")
                continue
            if isinstance(stmt, ast.If) and _mentions_probe(stmt.test):
                if stmt.orelse or not all(_is_hold_or_probe_call(s) for s in stmt.body):
                    raise BenchSetupError(f"a probe check does more than hold or call the probe:\n{ast.unparse(stmt)}")
                self.checks_removed += 1
                continue
            kept.append(self.visit(stmt))
        return kept

    def generic_visit(self, node: ast.AST) -> ast.AST:
        for name in ("body", "orelse", "finalbody"):
            value = getattr(node, name, None)
            if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                setattr(node, name, self._strip(value))
        if isinstance(node, ast.Try):
            for handler in node.handlers:
                handler.body = self._strip(handler.body)
        return super().generic_visit(node)


def _probe_users() -> set[str]:
    """Names of the Job methods whose source mentions the probe."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(Job)))
    (cls,) = tree.body
    assert isinstance(cls, ast.ClassDef)
    return {
        node.name
        for node in cls.body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _mentions_probe(node)
    }


def strip_probe_checks(name: str) -> tuple[Callable[..., Any], str]:
    """Job method ``name`` compiled from its own source minus the probe checks; and that source."""
    source = textwrap.dedent(inspect.getsource(getattr(Job, name)))
    module = ast.parse(source)
    (fn,) = module.body
    if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) or fn.decorator_list:
        raise BenchSetupError(f"Job.{name} is not a plain method")
    stripper = _StripProbe()
    fn = stripper.visit(fn)
    if stripper.checks_removed != HOOKED_METHODS[name]:
        raise BenchSetupError(
            f"Job.{name}: expected {HOOKED_METHODS[name]} probe check(s), found {stripper.checks_removed}"
        )
    if _mentions_probe(fn):
        raise BenchSetupError(f"Job.{name} still mentions the probe after stripping:\n{ast.unparse(fn)}")
    ast.fix_missing_locations(module)
    code = compile(
        module, f"<{name} without probe checks>", "exec", flags=__future__.annotations.compiler_flag, dont_inherit=True
    )
    namespace: dict[str, Any] = {}
    exec(code, job_module.__dict__, namespace)  # noqa: S102 -- the engine module's globals, as the original has
    return namespace[name], ast.unparse(fn)


@cache
def no_hook_job_class() -> type[Job]:
    """A :class:`Job` subclass identical to the engine's except that it never consults a probe."""
    users = _probe_users() - {"__init__"}  # __init__ only sets ``self.probe = None``
    if users != set(HOOKED_METHODS):
        raise BenchSetupError(
            f"Job methods using the probe changed: {sorted(users)} (known: {sorted(HOOKED_METHODS)}); "
            "update HOOKED_METHODS so the reference stays the engine without the debugging code"
        )
    methods = {name: strip_probe_checks(name)[0] for name in HOOKED_METHODS}
    return type("NoHookJob", (Job,), {**methods, "__doc__": "Job without the probe checks (the bench reference)."})


def _expect_no_hooks(job: Job) -> None:
    if type(job) is not no_hook_job_class():
        raise BenchSetupError(f"the {NO_HOOKS} variant started a {type(job).__name__}")


def _expect_as_shipped(job: Job) -> None:
    if type(job) is not Job or job.probe is not None:
        raise BenchSetupError(f"the {NO_PROBE} variant started a {type(job).__name__} with probe {job.probe!r}")


def _attach_debugger(job: Job) -> None:
    _expect_as_shipped(job)
    if attach(job).breakpoints:
        raise BenchSetupError("a fresh debug session has breakpoints")


@contextmanager
def variant_jobs(variant: str) -> Iterator[list[Job]]:
    """While active, jobs are started as ``variant`` asks; yields the list of jobs started.

    ``no hooks`` jobs are *created* as :func:`no_hook_job_class` (the runtime's ``Job`` name is
    rebound meanwhile) rather than having their class swapped after creation: a swapped
    instance keeps the attribute layout of ``Job``, which defeats CPython's attribute-access
    specialisation and made that variant ~30% slower for reasons unrelated to the hooks.
    """
    check = {NO_HOOKS: _expect_no_hooks, NO_PROBE: _expect_as_shipped, DEBUGGER: _attach_debugger}.get(variant)
    if check is None:
        raise ValueError(f"unknown variant {variant!r}; variants: {', '.join(VARIANTS)}")
    started: list[Job] = []
    original_start = Engine.start_job
    original_job = runtime_module.Job

    async def start_job(self: Engine, *args: Any, **kwargs: Any) -> Job:
        job = await original_start(self, *args, **kwargs)
        check(job)  # once per run, before any item is posted
        started.append(job)
        return job

    Engine.start_job = start_job  # type: ignore[method-assign]
    if variant == NO_HOOKS:
        runtime_module.Job = no_hook_job_class()  # type: ignore[misc]
    try:
        yield started
    finally:
        Engine.start_job = original_start  # type: ignore[method-assign]
        runtime_module.Job = original_job  # type: ignore[misc]


@contextmanager
def cpu_timed_feed(bench: ModuleType) -> Iterator[list[float]]:
    """While active, the engine bench's ``_feed`` (the timed part of a chain run: post every item,
    wait for the sink) also records the process CPU seconds it took."""
    original = bench._feed
    cpu: list[float] = []

    async def feed(*args: Any, **kwargs: Any) -> float:
        c0 = time.process_time()
        seconds = await original(*args, **kwargs)
        cpu.append(time.process_time() - c0)
        return seconds

    bench._feed = feed
    try:
        yield cpu
    finally:
        bench._feed = original


def run_variant(variant: str, n: int) -> Result:
    """One run of the engine benchmark's async chain (bus + 1 subscriber) with ``variant`` jobs.

    ``seconds`` is the bench's wall-clock figure; ``extra["cpu_seconds"]`` the CPU time the
    process spent in the same window.
    """
    bench = load_engine_bench()
    gc.collect()
    with variant_jobs(variant) as started, cpu_timed_feed(bench) as cpu:
        result = bench.run(bench.routilux_chain, n, sync=False)
    if len(started) != 1 or len(cpu) != 1:
        raise BenchSetupError(f"expected one job and one timed feed, got {len(started)} and {len(cpu)}")
    result.scenario = f"async chain, {variant}"
    result.extra["cpu_seconds"] = cpu[0]
    return result


def cpu_hops_per_s(result: Result) -> float:
    """Hops per CPU-second of the process: what a variant costs, whatever else the machine runs."""
    cpu = result.extra["cpu_seconds"]
    return result.hops / cpu if cpu > 0 else 0.0


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
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        out = [f"{self.items:,} items per run, medians of {self.rounds} interleaved rounds"]
        for n, line in enumerate(lines):
            out.append("  ".join(c.ljust(w) if i in (0, 6) else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))))
            if n == 0:
                out.append("  ".join("-" * w for w in widths))
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Debugger hook overhead on the engine benchmark (see the docstring).")
    parser.add_argument("--items", type=int, default=FULL_ITEMS, help=f"items fed to the chain per run (default {FULL_ITEMS:,})")
    parser.add_argument("--rounds", type=int, default=FULL_ROUNDS, help=f"interleaved rounds (default {FULL_ROUNDS})")
    parser.add_argument("--check", action="store_true", help="exit 1 if the hook checks cost more than 5%%")
    parser.add_argument("--show-reference", action="store_true", help="print the no-hooks methods' source")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    args = parser.parse_args(argv)

    print(f"Routilux debugger overhead: {args.items:,} items per run, {args.rounds} interleaved rounds")
    print(load_engine_bench().engine_fingerprint())
    print(HOP_DEFINITION + "\n")
    if args.show_reference:
        for name in HOOKED_METHODS:
            print(strip_probe_checks(name)[1] + "\n")
    overhead = measure(args.items, args.rounds, progress=print)
    print()
    print(overhead.summary())
    if args.json:
        Path(args.json).write_text(json.dumps(overhead.as_dict(), indent=2))
    return 1 if args.check and not overhead.passed else 0


if __name__ == "__main__":
    sys.exit(main())

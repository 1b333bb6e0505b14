"""The debugger's cost on the engine benchmark when no breakpoint is armed (``python -m bench.debug_overhead``).

Issue: "Overhead: with no breakpoints armed, the engine benchmark stays within 5% of its figure
without the debugging code (measured in the same run)."

The bounded tests (``make test``) check that the no-hooks reference really is the engine minus
its probe checks, and measure a few small interleaved rounds with bounds loose enough that CI
noise on a shared 2-core machine does not flake them. The slow tests (``make bench``) run the
full measurement and assert the issue's 5%.
"""

from __future__ import annotations

import sys
from typing import Any

import anyio
import pytest
from bench.debug_overhead import measure, reference


# ------------------------------------------------------------------------------------------------
# The reference is faithful: the engine's own code, minus the probe checks, and nothing else
# ------------------------------------------------------------------------------------------------
def test_the_no_hooks_reference_is_the_engine_minus_its_probe_checks() -> None:
    import ast
    import inspect
    import textwrap

    from routilux.engine import Job
    from routilux.engine.routine_run import RoutineRun

    cls = reference.no_hook_job_class()
    assert issubclass(cls, Job) and cls is reference.no_hook_job_class()
    run_cls = reference.no_hook_routine_run_class()
    assert issubclass(run_cls, RoutineRun)
    assert set(vars(cls)) >= set(reference.HOOKED[Job]) and set(vars(run_cls)) >= set(reference.HOOKED[RoutineRun])
    for qualified in reference.HOOKED_METHODS:
        cls_name, _, name = qualified.partition(".")
        owner = Job if cls_name == "Job" else RoutineRun
        stripped_fn, stripped_source = reference.strip_probe_checks(qualified)
        assert "probe" not in stripped_source
        assert stripped_fn.__globals__ is sys.modules[owner.__module__].__dict__
        original = ast.parse(textwrap.dedent(inspect.getsource(getattr(owner, name)))).body[0]
        kept = ast.parse(stripped_source).body[0]

        probe_ifs = [s for s in ast.walk(original) if isinstance(s, ast.If) and "probe" in ast.unparse(s.test)]
        assert len(probe_ifs) == reference.HOOKED[owner][name]
        inside_probe_ifs = {id(s) for node in probe_ifs for s in ast.walk(node)}

        def simple(fn: ast.AST, skip: set[int] = frozenset()) -> list[str]:  # type: ignore[assignment]
            return [
                ast.unparse(s)
                for s in ast.walk(fn)
                if isinstance(s, ast.stmt) and not hasattr(s, "body") and id(s) not in skip
            ]

        # every simple statement of the original is kept, in order, except the probe checks' own
        # (``probe = self.probe`` and what the ``if <probe test>:`` blocks do)
        expected = [line for line in simple(original, inside_probe_ifs) if line != "probe = self.probe"]
        assert simple(kept) == expected

        def compound(fn: ast.AST) -> int:
            return sum(1 for s in ast.walk(fn) if isinstance(s, ast.stmt) and hasattr(s, "body"))

        assert compound(kept) == compound(original) - len(probe_ifs)


def test_a_no_hooks_job_never_consults_a_probe() -> None:
    """Evidence the checks are really gone: an armed debugger on a no-hooks job never stops it."""
    from routilux.engine import Engine, JobStatus
    from tests.support.routines import chain, make_registry

    async def scenario() -> None:
        with reference.variant_jobs(reference.NO_HOOKS) as started:
            async with Engine(registry=make_registry()) as engine:
                job = await engine.start_job(chain("f", "Relay", "Collect"))
                assert type(job) is reference.no_hook_job_class() and started == [job]

                class Spy:
                    calls = 0

                    def __getattr__(self, name: str) -> Any:
                        Spy.calls += 1
                        raise AssertionError(f"the probe was consulted: {name}")

                job.probe = Spy()  # type: ignore[assignment]
                await job.post("r0", "input", 1)
                with anyio.fail_after(2):
                    while job.status is not JobStatus.IDLE:
                        await anyio.sleep(0.005)
                assert job.shared_data["batches"]["r1"] == [[1]] and Spy.calls == 0

    anyio.run(scenario)


def test_variants_restore_the_engine_afterwards() -> None:
    import routilux.engine.job as job_module
    import routilux.engine.runtime as runtime_module
    from routilux.engine import Engine, Job
    from routilux.engine.routine_run import RoutineRun

    start_job = Engine.start_job
    for variant in reference.VARIANTS:
        with reference.variant_jobs(variant):
            pass
        assert Engine.start_job is start_job and runtime_module.Job is Job and job_module.RoutineRun is RoutineRun
    with pytest.raises(ValueError, match="unknown variant"), reference.variant_jobs("bogus"):
        pass


def test_the_engine_grows_no_unknown_hook() -> None:
    """If a new probe call site appears in the engine, the bench must be told (it would not strip it)."""
    import routilux.engine as engine
    from routilux.engine.routine_run import RoutineRun

    for cls in (engine.Job, RoutineRun):
        assert reference._probe_users(cls) - {"__init__"} == set(reference.HOOKED[cls])
    users = [m for m in vars(engine).values() if isinstance(m, type) and m not in reference.HOOKED
             and reference._probe_users(m) - {"__init__"}]
    assert users == [], f"engine classes calling the probe that the bench does not strip: {users}"


# ------------------------------------------------------------------------------------------------
# Bounded measurement (make test)
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bounded() -> Any:
    result = measure.measure(3_000, 3, warmup=500)
    print("\n" + result.summary())
    return result


def test_bounded_every_variant_delivers_everything_in_order(bounded: Any) -> None:
    # routilux_chain's Tally fails the run loudly on any loss, duplicate or reordering
    for variant in reference.VARIANTS:
        runs = bounded.runs[variant]
        assert len(runs) == 3 and all(r.items == 3_000 and r.hops == 3_000 * 5 for r in runs)
        assert all(r.extra["events_received"] + r.extra["events_dropped"] == r.extra["events_published"] for r in runs)


def test_bounded_hook_checks_cost_little(bounded: Any) -> None:
    # A guard against a gross regression only: 3 rounds of 3,000 items swing by 40% on a busy
    # 2-core machine. The 5% bound is measured by the slow test below (make bench).
    assert bounded.hook_ratio >= 0.6, bounded.summary()


def test_bounded_a_debugger_with_no_breakpoints_costs_no_more_than_it_did(bounded: Any) -> None:
    # Loose on purpose: a session with no breakpoint still records its call stack and scans its
    # (empty) breakpoints at every emission, slot and connection, measured at 0.74-0.86 of the
    # engine as shipped (medians of 3-5 rounds on a loaded 2-core machine, single rounds down to
    # 0.48); this only catches a gross regression. The 5% is the slow test below.
    assert bounded.ratio(reference.DEBUGGER, reference.NO_PROBE) >= 0.60, bounded.summary()


def test_bounded_json_figures(bounded: Any) -> None:
    import json

    figures = json.loads(json.dumps(bounded.as_dict()))
    assert set(figures["median_hops_per_cpu_s"]) == set(reference.VARIANTS)
    assert figures["ratio_vs_no_hooks_cpu"][reference.NO_HOOKS] == 1.0
    assert figures["hook_ratio"] == round(bounded.hook_ratio, 4)
    assert all(run["cpu_seconds"] > 0 for runs in figures["runs"].values() for run in runs)


# ------------------------------------------------------------------------------------------------
# Full measurement with the bound (make bench)
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def full() -> Any:
    result = measure.measure(reference.FULL_ITEMS, reference.FULL_ROUNDS)
    print("\n" + result.summary())
    return result


@pytest.mark.slow
def test_full_hook_checks_within_5_percent(full: Any) -> None:
    """The engine as shipped (job.probe is None) vs the engine without the debugging code."""
    assert full.hook_ratio >= reference.TARGET_RATIO, full.summary()


@pytest.mark.slow
def test_full_debugger_attached_with_no_breakpoints_within_5_percent(full: Any) -> None:
    """A job whose debug session has no breakpoint armed (e.g. all were deleted: the session stays
    attached) vs the engine without the debugging code."""
    assert full.ratio(reference.DEBUGGER, reference.NO_HOOKS) >= reference.TARGET_RATIO, full.summary()

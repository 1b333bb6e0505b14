"""The variants the debugger overhead bench compares, and one run of each: the no-hooks reference
(the engine's own hooked methods with the probe checks cut out), the engine as shipped, and a
job with a debugger attached but no breakpoint.
"""

from __future__ import annotations
import __future__

import ast
import gc
import inspect
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from types import ModuleType
from typing import Any, Final

import routilux.engine.job as job_module
import routilux.engine.routine_run as routine_run_module
import routilux.engine.runtime as runtime_module
from bench.engine import chain as engine_chain
from bench.engine.common import Result
from routilux.debug.session import attach
from routilux.engine import Engine, Job
from routilux.engine.routine_run import RoutineRun

NO_HOOKS: Final = "no hooks"
NO_PROBE: Final = "no probe"
DEBUGGER: Final = "debugger, 0 breakpoints"
VARIANTS: Final = (NO_HOOKS, NO_PROBE, DEBUGGER)

#: The issue's bound: the engine as shipped (no probe) keeps >= 95% of the no-hooks throughput.
TARGET_RATIO: Final = 0.95

#: The full measurement (``make bench``): per run, and interleaved rounds.
FULL_ITEMS: Final = 10_000
FULL_ROUNDS: Final = 9

#: The engine methods that call the probe, and how many checks each has (a call site of the probe):
#: a job's delivery and emission, and a routine's activations (a RoutineRun, one per routine of a job).
HOOKED: Final[dict[type, dict[str, int]]] = {
    Job: {"_deliver": 1, "_emit": 2},
    RoutineRun: {"_attempts": 1},
}
#: ``Class.method`` of every hooked method, for the bench's report.
HOOKED_METHODS: Final = [f"{cls.__name__}.{name}" for cls, names in HOOKED.items() for name in names]
_MODULES: Final[dict[type, ModuleType]] = {Job: job_module, RoutineRun: routine_run_module}


class BenchSetupError(RuntimeError):
    """The no-hooks reference could not be derived faithfully from the engine's source."""


def load_engine_bench() -> ModuleType:
    """The engine bench's chain module (:mod:`bench.engine.chain`): ``run``, ``routilux_chain`` and
    the ``_feed`` that :func:`cpu_timed_feed` times."""
    return engine_chain


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


def _probe_users(cls: type) -> set[str]:
    """Names of the methods of ``cls`` whose source mentions the probe."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    (cls,) = tree.body
    assert isinstance(cls, ast.ClassDef)
    return {
        node.name
        for node in cls.body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _mentions_probe(node)
    }


def strip_probe_checks(qualified: str) -> tuple[Callable[..., Any], str]:
    """Method ``Class.name`` (one of :data:`HOOKED_METHODS`) compiled from its own source minus the
    probe checks; and that source."""
    cls_name, _, name = qualified.partition(".")
    (cls,) = [c for c in HOOKED if c.__name__ == cls_name]
    expected = HOOKED[cls][name]
    source = textwrap.dedent(inspect.getsource(getattr(cls, name)))
    module = ast.parse(source)
    (fn,) = module.body
    if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) or fn.decorator_list:
        raise BenchSetupError(f"{qualified} is not a plain method")
    stripper = _StripProbe()
    fn = stripper.visit(fn)
    if stripper.checks_removed != expected:
        raise BenchSetupError(f"{qualified}: expected {expected} probe check(s), found {stripper.checks_removed}")
    if _mentions_probe(fn):
        raise BenchSetupError(f"{qualified} still mentions the probe after stripping:\n{ast.unparse(fn)}")
    ast.fix_missing_locations(module)
    code = compile(
        module, f"<{name} without probe checks>", "exec", flags=__future__.annotations.compiler_flag, dont_inherit=True
    )
    namespace: dict[str, Any] = {}
    exec(code, _MODULES[cls].__dict__, namespace)  # noqa: S102 -- the engine module's globals, as the original has
    return namespace[name], ast.unparse(fn)


def _without_probe(cls: type) -> type:
    """A subclass of ``cls`` identical to it except that its hooked methods never consult a probe."""
    users = _probe_users(cls) - {"__init__"}  # Job.__init__ only sets ``self.probe = None``
    if users != set(HOOKED[cls]):
        raise BenchSetupError(
            f"{cls.__name__} methods using the probe changed: {sorted(users)} (known: {sorted(HOOKED[cls])}); "
            "update HOOKED so the reference stays the engine without the debugging code"
        )
    methods = {name: strip_probe_checks(f"{cls.__name__}.{name}")[0] for name in HOOKED[cls]}
    doc = f"{cls.__name__} without the probe checks (the bench reference)."
    return type(f"NoHook{cls.__name__}", (cls,), {**methods, "__doc__": doc})


@cache
def no_hook_job_class() -> type[Job]:
    """A :class:`Job` subclass identical to the engine's except that it never consults a probe."""
    job_class: type[Job] = _without_probe(Job)
    return job_class


@cache
def no_hook_routine_run_class() -> type[RoutineRun]:
    """The :class:`RoutineRun` that no-hooks jobs create (rebound in :mod:`routilux.engine.job`)."""
    run_class: type[RoutineRun] = _without_probe(RoutineRun)
    return run_class


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
    original_run = job_module.RoutineRun

    async def start_job(self: Engine, *args: Any, **kwargs: Any) -> Job:
        job = await original_start(self, *args, **kwargs)
        check(job)  # once per run, before any item is posted
        started.append(job)
        return job

    Engine.start_job = start_job  # type: ignore[method-assign]
    if variant == NO_HOOKS:
        runtime_module.Job = no_hook_job_class()  # type: ignore[misc]
        job_module.RoutineRun = no_hook_routine_run_class()  # type: ignore[misc]
    try:
        yield started
    finally:
        Engine.start_job = original_start  # type: ignore[method-assign]
        runtime_module.Job = original_job  # type: ignore[misc]
        job_module.RoutineRun = original_run  # type: ignore[misc]


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



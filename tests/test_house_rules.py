"""The house rules, checked on every ``make test``: lint, types, the layer architecture, no import
cycles, no oversized modules, and a deliberate public API.

Each tool runs as a subprocess with the virtualenv's own executable and its configuration in
``pyproject.toml`` (``[tool.ruff]``, ``[tool.mypy]``, ``[tool.importlinter]``); a test fails on any
finding and shows the tool's output. mypy keeps its cache in ``.mypy_cache`` (git-ignored), so a
run after the first checks only what changed and takes a second or two.

The layers, bottom up (``[tool.importlinter]``): ``errors`` < ``bus`` < ``store | engine`` <
``cluster | monitor | debug | builtins`` < ``server`` < ``api`` < ``cli``; siblings joined by ``|``
do not import each other. Imports under ``if TYPE_CHECKING:`` and inside functions count, here and
in the cycle check: a cycle hidden in a function is still a cycle in the design.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grimp

import routilux

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src"
BIN = Path(sys.executable).parent  # the virtualenv's bin/, where ruff, mypy and lint-imports live
MAX_MODULE_LINES = 600
TOOL_TIMEOUT_S = 300


def run_tool(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    executable = BIN / name
    assert executable.is_file(), f"{executable} is missing: make install (it is in the dev extra)"
    return subprocess.run([str(executable), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=TOOL_TIMEOUT_S, check=False)


def findings(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\n{done.stdout}{done.stderr}"


def test_ruff_finds_nothing() -> None:
    done = run_tool("ruff", "check", "--no-fix", "--output-format", "concise", "src", "tests", "bench")
    assert done.returncode == 0, findings(done)


def test_mypy_finds_nothing() -> None:
    done = run_tool("mypy")  # files, strictness per package and cache dir: [tool.mypy]
    assert done.returncode == 0, findings(done)


def test_import_contracts_are_kept() -> None:
    done = run_tool("lint-imports")
    assert done.returncode == 0, findings(done)


def strongly_connected(graph: grimp.ImportGraph) -> Iterator[set[str]]:
    """Tarjan's algorithm, iterative (no recursion limit): each set of modules that import each
    other, directly or through one another."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                yield component


def describe(graph: grimp.ImportGraph, component: set[str]) -> str:
    lines = [f"cycle among {len(component)} modules: {', '.join(sorted(component))}"]
    for importer in sorted(component):
        for imported in sorted(graph.find_modules_directly_imported_by(importer) & component):
            details = graph.get_import_details(importer=importer, imported=imported)
            where = ", ".join(f"l.{d['line_number']}" for d in details)
            lines.append(f"  {importer} -> {imported} ({where})")
    return "\n".join(lines)


def test_no_import_cycles() -> None:
    """No two modules of routilux import each other, however indirectly; imports under
    ``TYPE_CHECKING`` and inside functions count (grimp's defaults)."""
    graph = grimp.build_graph("routilux", exclude_type_checking_imports=False, cache_dir=None)
    assert "routilux.engine" in graph.modules  # the graph really is of this source tree
    cycles = [describe(graph, c) for c in strongly_connected(graph) if len(c) > 1]
    assert cycles == [], f"{len(cycles)} import cycle(s):\n" + "\n".join(cycles)


def test_no_module_is_over_600_lines() -> None:
    sizes = {path.relative_to(ROOT).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
             for path in sorted(SOURCE.rglob("*.py"))}
    assert len(sizes) > 50
    too_long = {path: lines for path, lines in sizes.items() if lines > MAX_MODULE_LINES}
    assert too_long == {}, f"modules over {MAX_MODULE_LINES} lines (split them): {too_long}"


# The public API: what `from routilux import *` gives. Changing it is a deliberate act: edit this.
PUBLIC_API = [
    "ActivationPolicy",
    "AllSlotsReady",
    "BatchSize",
    "ConfigError",
    "Connection",
    "Context",
    "Custom",
    "DSLError",
    "Engine",
    "EngineSettings",
    "Entry",
    "ErrorHandler",
    "Execution",
    "Flow",
    "FlowPlan",
    "FlowValidationError",
    "IllegalTransition",
    "Immediate",
    "Job",
    "JobOptions",
    "JobStatus",
    "JobTerminated",
    "NoConfig",
    "PolicySpec",
    "Problem",
    "QueueStatus",
    "Registry",
    "RoutiluxError",
    "Routine",
    "RoutineSpec",
    "RoutineState",
    "Runtime",
    "SlotFull",
    "SlotSpec",
    "ThreadContext",
    "TimeInterval",
    "UnknownEvent",
    "UnknownRoutine",
    "UnknownRoutineClass",
    "UnknownSlot",
    "ValidationReport",
    "__version__",
    "all_slots_ready",
    "batch_size",
    "compile_flow",
    "custom",
    "default_registry",
    "immediate",
    "time_interval",
    "validate_flow",
]


def test_the_public_api_is_pinned() -> None:
    assert sorted(routilux.__all__) == PUBLIC_API
    assert len(routilux.__all__) == len(set(routilux.__all__)), "a name is exported twice"
    missing = [name for name in PUBLIC_API if not hasattr(routilux, name)]
    assert missing == [], f"in __all__ but not defined: {missing}"


"""What every benchmark reports with: the failure it raises, the one table renderer, the
machine-busy line, a quiet-machine wait, the nearest-rank percentile and the sources fingerprint.

Each bench's row class says which table a row goes in and what its cells are
(``table_line() -> (Table, cells) | None``); :func:`format_table` lays the rows out, one table
per :class:`Table`, in ``Table.order``. Process handling (starting a server on a free port and
waiting for it, stopping it, its CPU and RSS) lives in :mod:`tests.support.processes`, shared
with the test suite (see its docstring for the direction of that dependency).
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil


class BenchFailure(AssertionError):
    """A benchmark saw wrong results (lost, duplicated or reordered items, a failed job)."""


@dataclass(frozen=True)
class Table:
    """One table: its header cells, the columns aligned left (the others right), its place."""

    header: tuple[str, ...]
    left: frozenset[int]
    order: int = 0


def render_table(lines: list[tuple[str, ...]], left: Iterable[int]) -> list[str]:
    """``lines`` (the header first) as aligned text lines, a rule under the header."""
    left = set(left)
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = []
    for n, line in enumerate(lines):
        cells = [c.ljust(widths[i]) if i in left else c.rjust(widths[i]) for i, c in enumerate(line)]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


def verdict(passed: bool | None) -> str:
    return "—" if passed is None else ("PASS" if passed else "FAIL")


def format_table(rows: Iterable[Any]) -> str:
    """The rows of any bench as its table(s): every row's ``table_line()`` names its
    :class:`Table` and cells (or is None: not shown); tables in ``order``, a blank line between."""
    groups: dict[Table, list[tuple[str, ...]]] = {}
    for row in rows:
        line = row.table_line()
        if line is not None:
            groups.setdefault(line[0], []).append(line[1])
    out: list[str] = []
    for table in sorted(groups, key=lambda t: t.order):
        out += ([""] if out else []) + render_table([table.header, *groups[table]], table.left)
    return "\n".join(out)


def percentile(ordered: Sequence[float], q: float, empty: float = math.nan) -> float:
    """The nearest-rank ``q`` percentile of the sorted ``ordered`` (``empty`` if there is none)."""
    if not ordered:
        return empty
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def machine_busy_line() -> str:
    """How busy the machine is (one second's sample), with a warning when other work runs."""
    busy = psutil.cpu_percent(interval=1.0)
    return (f"machine busy before the run: {busy:.0f}% of {os.cpu_count()} cores"
            + ("  (WARNING: other work is running; figures will be low and noisy)" if busy > 15 else ""))


def wait_quiet(limit: float, busy_percent: float = 10.0) -> bool:
    """Wait until the whole machine is below ``busy_percent`` over half a second, or ``limit`` s."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if psutil.cpu_percent(interval=0.5) < busy_percent:
            return True
    return False


def sources_fingerprint() -> str:
    """A short hash of the routilux sources this run imports (they change under the bench)."""
    import routilux

    root = Path(routilux.__file__).resolve().parent
    digest = hashlib.sha1()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return f"routilux {routilux.__version__}, sources sha1 {digest.hexdigest()[:12]} ({root})"


def finish(missed: Sequence[Any], *, check: bool, all_met: str = "All targets met.") -> int:
    """The closing line of a bench run and its exit code: the rows that missed their target (exit
    1 with ``--check``, else 0), or ``all_met``."""
    if missed:
        print(f"\nMissed targets: {', '.join(r.scenario for r in missed)}")
        return 1 if check else 0
    print(f"\n{all_met}")
    return 0


def expect_status(response: Any, status: int, what: str) -> Any:
    """An HTTP answer's JSON body (None if empty), or :class:`BenchFailure` unless it is ``status``."""
    if response.status_code != status:
        raise BenchFailure(f"{what}: expected {status}, got {response.status_code}: {response.text[:500]}")
    return response.json() if response.content else None

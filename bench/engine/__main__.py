"""``python -m bench.engine``: the engine bench's table (see :mod:`bench.engine`), and cProfiles of
the chains when asked or when a target is missed.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
from pathlib import Path

from bench.engine.chain import metrics_overhead_row, routilux_chain, run, throughput_rows
from bench.engine.checkpoints import checkpoint_overhead_rows
from bench.engine.common import (
    HOP_DEFINITION,
)
from bench.engine.idle_jobs import idle_rows, run_idle_jobs, run_idle_jobs_subprocess
from bench.report import finish, format_table, sources_fingerprint


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



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Routilux engine benchmark (see the module docstring).")
    parser.add_argument("--items", type=int, default=None, help="items fed to each chain (default 100,000)")
    parser.add_argument("--idle-jobs", type=int, default=None, help="idle jobs to start (default 10,000)")
    parser.add_argument("--idle-seconds", type=float, default=None, help="idle CPU window (default 2)")
    parser.add_argument("--quick", action="store_true", help="small sizes (5,000 items, 1,000 idle jobs)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--profile", action="store_true", help="also print cProfiles of the async and sync chains")
    parser.add_argument("--only", default="async,sync,idle,metrics,checkpoint",
                        help="comma list of: async, sync, idle, metrics, checkpoint")
    parser.add_argument("--in-process", action="store_true", help="run idle jobs in this interpreter")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON to FILE")
    args = parser.parse_args(argv)

    items = args.items if args.items is not None else (5_000 if args.quick else 100_000)
    idle_jobs = args.idle_jobs if args.idle_jobs is not None else (1_000 if args.quick else 10_000)
    idle_seconds = args.idle_seconds if args.idle_seconds is not None else (1.0 if args.quick else 2.0)
    only = {part.strip() for part in args.only.split(",") if part.strip()}

    print(f"Routilux engine bench: {items:,} items per chain, {idle_jobs:,} idle jobs, python {sys.version.split()[0]}")
    print(sources_fingerprint())
    print(HOP_DEFINITION)
    print("×raw µs/hop = µs/hop of the row / µs/hop of its raw anyio baseline (1.00 = as fast as raw anyio)\n")
    sys.stdout.flush()

    rows = throughput_rows(items, kinds=tuple(k for k in ("async", "sync") if k in only))
    if "metrics" in only:
        metrics_row = metrics_overhead_row(min(items, 30_000), rounds=3 if args.quick else 5)
        metrics_row.baseline = next((r for r in rows if r.scenario == "raw anyio, async"), None)
        rows.append(metrics_row)
    if "checkpoint" in only:
        rounds = 3 if args.quick else 5
        rows += checkpoint_overhead_rows(min(items, 30_000), rounds=rounds)
        rows += checkpoint_overhead_rows(min(items, 10_000), rounds=rounds, paced=True)
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
    return finish(slow, check=args.check)


if __name__ == "__main__":
    sys.exit(main())

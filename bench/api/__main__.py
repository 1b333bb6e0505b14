"""``python -m bench.api``: the API bench's table (see :mod:`bench.api`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from bench.api.run import Settings, _noisy, profile_server, run_bench, versions
from bench.api.servers import BARE_HTTP, STORED_JOBS, UVICORN_FLAGS
from bench.report import (
    finish,
    format_table,
    machine_busy_line,
    sources_fingerprint,
)
from bench.server import HOST


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Routilux HTTP API benchmark (see the module docstring).")
    parser.add_argument("--quick", action="store_true", help="small sizes (2,000 jobs, 1.5 s per scenario)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON to FILE")
    parser.add_argument("--profile", action="store_true", help="also cProfile the server under GET job and POST")
    parser.add_argument("--jobs", type=int, help=f"jobs to POST (and stored when listing; default {STORED_JOBS:,})")
    parser.add_argument("--duration", type=float, help="seconds per timed GET measurement (default 3)")
    parser.add_argument("--list-duration", type=float, help="seconds of the GET /api/jobs?limit=100 row (default 10)")
    parser.add_argument("--connections", type=int, help="client connections (default 32)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds of the GET rows; medians kept (default 5)")
    parser.add_argument("--quiet-wait", type=float, metavar="S",
                        help="wait up to S seconds for an idle machine before each measurement, and measure "
                             "again if other work ran meanwhile (default 30; 0 with --quick; 0 turns it off)")
    parser.add_argument("--routilux-http", metavar="PROTOCOL",
                        help="uvicorn's --http for the Routilux servers (default: the protocol with Routilux's "
                             "limits at the socket; httptools: without them, to measure their cost)")
    args = parser.parse_args(argv)

    settings = Settings.quick() if args.quick else Settings()
    for name in ("jobs", "duration", "list_duration", "connections", "rounds", "quiet_wait", "routilux_http"):
        if getattr(args, name) is not None:
            setattr(settings, name, getattr(args, name))

    print(f"Routilux API bench: {settings.jobs:,} jobs, {settings.duration:g} s per timed GET, "
          f"{settings.connections} connections, {settings.rounds} round(s), {os.cpu_count()} CPUs")
    print(sources_fingerprint())
    print(versions())
    print(f"uvicorn {' '.join(UVICORN_FLAGS)}, one worker each, on {HOST}, --http {BARE_HTTP} for the bare app and "
          f"{settings.routilux_http} for Routilux; client: asyncio/uvloop in this process, keep-alive, one request in "
          "flight per connection")
    print("×bare = req/s of the row / req/s of the bare Starlette endpoint; CPU = fraction of one core "
          "(other = every other process on the machine)")
    print(machine_busy_line() + "\n")
    sys.stdout.flush()

    rows = run_bench(settings, log=lambda msg: print(f"  {msg}", flush=True))
    print()
    print(format_table(rows))
    for r in rows:
        if r.load is not None and _noisy(r.load, settings):
            print(f"note: other work on the machine took {r.load.other_cpu / r.load.seconds:.0%} of a core during "
                  f"'{r.scenario}' ({r.load.attempts} attempt(s)); that figure is pessimistic")
    if args.json:
        meta = {"fingerprint": sources_fingerprint(), "versions": versions(), "settings": settings.__dict__}
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": [r.as_dict() for r in rows]}, indent=2))

    missed = [r for r in rows if r.passed is False]
    if args.profile or missed:
        print()
        print(profile_server(settings))
    return finish(missed, check=args.check)


if __name__ == "__main__":
    sys.exit(main())

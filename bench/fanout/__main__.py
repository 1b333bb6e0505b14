"""``python -m bench.fanout``: the fan-out bench's table (see :mod:`bench.fanout`); also the entry
of its client processes (``--worker``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from bench.fanout.client import worker_main
from bench.fanout.run import Settings, details, run_bench
from bench.report import finish, format_table, machine_busy_line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Routilux WebSocket fan-out benchmark (see the module docstring).")
    parser.add_argument("--quick", action="store_true", help="100 readers, 100 sleepers, 2,000 events")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON to FILE")
    parser.add_argument("--readers", type=int)
    parser.add_argument("--sleepers", type=int)
    parser.add_argument("--events", type=int)
    parser.add_argument("--only", help="comma list of: burst, sleepers (default both)")
    parser.add_argument("--worker", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args.worker)

    settings = Settings.quick() if args.quick else Settings()
    for name in ("readers", "sleepers", "events", "only"):
        value = getattr(args, name)
        if value is not None:
            setattr(settings, name, value)
    print(f"Routilux fan-out bench: {settings}, python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print(machine_busy_line())
    sys.stdout.flush()
    rows = run_bench(settings, say=lambda msg: print(f"  {msg}", flush=True))
    print()
    print(format_table(rows))
    print()
    seen: list[object] = []
    for row in rows:
        if not any(row.burst is b for b in seen):
            seen.append(row.burst)
            print("\n".join(details(row.burst)))
    if args.json:
        Path(args.json).write_text(json.dumps([r.as_dict() for r in rows], indent=2))
    return finish([r for r in rows if not r.passed], check=args.check)


if __name__ == "__main__":
    sys.exit(main())

"""``python -m bench.debug_overhead``: the measurement and its summary (see :mod:`bench.debug_overhead`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.debug_overhead.measure import measure
from bench.debug_overhead.reference import (
    FULL_ITEMS,
    FULL_ROUNDS,
    HOOKED_METHODS,
    strip_probe_checks,
)
from bench.engine.common import HOP_DEFINITION
from bench.report import sources_fingerprint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Debugger hook overhead on the engine benchmark (see the docstring).")
    parser.add_argument("--items", type=int, default=FULL_ITEMS,
                        help=f"items fed to the chain per run (default {FULL_ITEMS:,})")
    parser.add_argument("--rounds", type=int, default=FULL_ROUNDS, help=f"interleaved rounds (default {FULL_ROUNDS})")
    parser.add_argument("--check", action="store_true", help="exit 1 if the hook checks cost more than 5%%")
    parser.add_argument("--show-reference", action="store_true", help="print the no-hooks methods' source")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    args = parser.parse_args(argv)

    print(f"Routilux debugger overhead: {args.items:,} items per run, {args.rounds} interleaved rounds")
    print(sources_fingerprint())
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

"""``python -m bench.ws``: the WebSocket bench's table (see :mod:`bench.ws`); also the entry of its
child processes (``--worker``, ``--serve-bare``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from bench.report import finish, format_table
from bench.ws.bare import serve_bare
from bench.ws.profile import profile_stream
from bench.ws.run import Settings, run_bench
from bench.ws.worker import worker_main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Routilux WebSocket benchmark (see the module docstring).")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes: 20 clients, 300 ev/s for 3 s, capacity 2,000 ev/s for 2 s, 200 idle")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON to FILE")
    parser.add_argument("--profile", action="store_true",
                        help="also profile the Routilux server during the paced scenario (py-spy, else cProfile)")
    parser.add_argument("--clients", type=int)
    parser.add_argument("--rate", type=float, help="paced source, events/s")
    parser.add_argument("--seconds", type=float, help="paced duration")
    parser.add_argument("--capacity-rate", type=float)
    parser.add_argument("--capacity-seconds", type=float)
    parser.add_argument("--idle", type=int, help="idle connections")
    parser.add_argument("--client-procs", type=int, help="client processes (default 1)")
    parser.add_argument("--client", choices=("raw", "websockets"), help="client implementation (default raw)")
    parser.add_argument("--only", help="comma list of: paced, target, capacity, idle (default all; quick: no target)")
    # internal entry points (child processes)
    parser.add_argument("--worker", metavar="SPEC", help=argparse.SUPPRESS)
    parser.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        return worker_main(args.worker)
    if args.serve_bare:
        serve_bare(args.port)
        return 0

    settings = Settings.quick() if args.quick else Settings()
    for name in ("clients", "rate", "seconds", "capacity_rate", "capacity_seconds", "idle", "client_procs", "client",
                 "only"):
        value = getattr(args, name)
        if value is not None:
            setattr(settings, name, value)

    print(f"Routilux WebSocket bench: {settings}, python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print("×bare = the row's figure / the bare baseline's: p99 (paced), deliveries/s (capacity), KB/conn (idle)")
    print("CPU columns: fraction of one core during the stream (server, client processes, everything else)\n")
    sys.stdout.flush()
    rows = run_bench(settings, log=lambda msg: print(f"  {msg}", flush=True))
    print()
    print(format_table(rows))
    print()
    for r in rows:
        if r.stream is not None:
            d = r.stream.as_dict()
            print(f"{r.scenario}: {d['deliveries']:,}/{d['expected_deliveries']:,} delivered, p90 {d['p90_ms']} ms, "
                  f"max {d['max_ms']} ms, seq holes {d['seq_holes']:,}, gap frames {d['gap_frames']:,} naming "
                  f"{d['gap_named_events']:,}, clients with loss {d['clients_with_loss']}, "
                  f"closed by server {d['closed_by_server']}, clients timed out {d['clients_timed_out']}, "
                f"window {d['window_s']} s, longest silence on a socket {d['max_silence_ms']} ms")
        elif r.idle is not None:
            d = r.idle.as_dict()
            print(f"{r.scenario}: server RSS {d['server_rss_mb_before']} -> {d['server_rss_mb_after']} MB for "
                  f"{d['connections']:,} connections ({d['server_fds_added']:,} fds), opened in "
                  f"{d['connect_seconds']} s")

    if args.json:
        Path(args.json).write_text(json.dumps([r.as_dict() for r in rows], indent=2))

    missed = [r for r in rows if r.passed is False]
    profile = {r.key for r in missed if r.stream is not None}
    if args.profile and not profile:
        profile = {"paced"}
    if profile and (args.profile or not args.quick):
        s = settings
        with tempfile.TemporaryDirectory(prefix="routilux-ws-profile-") as tmp:
            for key in sorted(profile, reverse=True):  # paced, then capacity
                rate, seconds = (s.rate, s.seconds) if key == "paced" else (s.capacity_rate, s.capacity_seconds)
                print(f"\n[{key}] " + profile_stream(Path(tmp), clients=s.clients, rate=rate, seconds=seconds,
                                                     procs=s.client_procs, client=s.client))
    return finish(missed, check=args.check)


if __name__ == "__main__":
    sys.exit(main())

"""``python -m bench.cluster``: the cluster bench's tables (see :mod:`bench.cluster`); also the entry
of its WebSocket client processes (``--ws-client``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from bench.api.run import versions
from bench.cluster.fanout import ws_client_main
from bench.cluster.redis_server import FORWARD_SAMPLES, REDIS_BINARY
from bench.cluster.run import run_bench
from bench.cluster.settings import Settings
from bench.report import (
    finish,
    format_table,
    machine_busy_line,
    sources_fingerprint,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Routilux cluster benchmark (see the module docstring).")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes: 1,000 jobs; 20 clients at 300 ev/s for 3 s; hop 300 ev/s for 2 s")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON to FILE")
    parser.add_argument("--only", help="comma list of: post, fanout, hop, relay (default all)")
    parser.add_argument("--jobs", type=int, help="jobs to POST per server (default 10,000)")
    parser.add_argument("--connections", type=int, help="client connections for POST (default 32)")
    parser.add_argument("--clients", type=int, help="WebSocket clients in the fan-out (default 50)")
    parser.add_argument("--rate", type=float, help="fan-out source, events/s (default 1,000)")
    parser.add_argument("--seconds", type=float, help="fan-out duration (default 10)")
    parser.add_argument("--capacity-rate", type=float,
                        help="fan-out capacity rows, events/s offered (default 4,000; 0: none)")
    parser.add_argument("--capacity-seconds", type=float, help="their duration (default 4)")
    parser.add_argument("--hop-rate", type=float, help="hop source, events/s (default 500)")
    parser.add_argument("--hop-seconds", type=float, help="hop duration (default 5)")
    parser.add_argument("--hop-capacity-rate", type=float, help="second hop row, events/s (default 5,000; 0: none)")
    parser.add_argument("--hop-capacity-seconds", type=float, help="its duration (default 3)")
    parser.add_argument("--relay-rate", type=float, help="relay row: events/s on A while C idles (default 2,500)")
    parser.add_argument("--relay-seconds", type=float, help="its duration (default 5)")
    parser.add_argument("--client-procs", type=int, help="fan-out client processes (default 1)")
    parser.add_argument("--quiet-wait", type=float, metavar="S",
                        help="wait up to S seconds for an idle machine before each measurement, and measure again "
                             "if other work ran meanwhile (default 30; 0 with --quick; 0 turns it off)")
    parser.add_argument("--ws-client", metavar="SPEC", help=argparse.SUPPRESS)  # internal: a client process
    args = parser.parse_args(argv)
    if args.ws_client:
        return ws_client_main(args.ws_client)
    if argv is None:  # the command line: a SIGTERM still stops every server this run started
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    settings = Settings.quick() if args.quick else Settings()
    for name in ("jobs", "connections", "clients", "rate", "seconds", "capacity_rate", "capacity_seconds", "hop_rate",
                 "hop_seconds", "hop_capacity_rate", "hop_capacity_seconds", "relay_rate", "relay_seconds",
                 "client_procs", "only", "quiet_wait"):
        if getattr(args, name) is not None:
            setattr(settings, name, getattr(args, name))
    from importlib.metadata import version

    print(f"Routilux cluster bench: {settings}, {os.cpu_count()} CPUs")
    print(sources_fingerprint())
    redis_version = subprocess.run([shutil.which("redis-server") or REDIS_BINARY, "--version"], check=False,
                                   capture_output=True, text=True).stdout.split(" sha")[0]
    print(f"{versions()}, gunicorn {version('gunicorn')}, redis-py {version('redis')}, {redis_version}")
    print("×plain = jobs/s / the plain single-process SQLite server's; CPU/job ×plain = server CPU per job (start + "
          "completion, every process of the server) / the plain server's, same run; "
          "×1w = the 2-worker figure / the 1-worker's; "
          "placement = connections held by each serving process; CPU = fraction of one core")
    print(machine_busy_line() + "\n")
    sys.stdout.flush()
    rows = run_bench(settings, log=lambda msg: print(f"  {msg}", flush=True))
    print()
    print(format_table(rows))
    print()
    for r in rows:
        if r.post is not None:
            p = r.post
            print(f"{r.scenario}: {p.posted_total:,} posted, all completed {p.seconds_to_completed:.2f} s after "
                  "the first "
                  f"POST; connections per process {list(p.placement.values())} (reopened {p.reopened} time(s) to reach "
                  f"every worker); other CPU {p.cpu.cores('other'):.0%} ({p.attempts} attempt(s))")
        elif r.fan is not None:
            d = r.fan.stream.as_dict()
            print(f"{r.scenario}: {d['deliveries']:,}/{d['expected_deliveries']:,} delivered, clients per process "
                  f"{list(r.fan.per_worker.values())}, p90 {d['p90_ms']} ms, seq holes {d['seq_holes']:,}, gap frames "
                  f"{d['gap_frames']:,} naming {d['gap_named_events']:,}, closed by server {d['closed_by_server']}, "
                  f"timed out {d['clients_timed_out']}, longest silence {d['max_silence_ms']} ms, "
                  f"srv µs/deliv {d['server_us_per_delivery']} ({r.fan.attempts} attempt(s))")
        elif r.hop is not None:
            d = r.hop.as_dict()
            print(f"{r.scenario}: added latency min {d['added_min_ms']} p50 {d['added_p50_ms']} p90 "
                  f"{d['added_p90_ms']} "
                  f"p99 {d['added_p99_ms']} max {d['added_max_ms']} ms; publish->receipt A p99 {d['a_p99_ms']}, "
                  f"B p99 {d['b_p99_ms']} ms; GET /api/jobs/{{id}} x {FORWARD_SAMPLES} on A p50/p99 "
                  f"{d['get_job_local_p50_ms']}/{d['get_job_local_p99_ms']} ms, on B (forwarded to A) "
                  f"{d['get_job_forwarded_p50_ms']}/{d['get_job_forwarded_p99_ms']} ms ({r.hop.attempts} attempt(s))")
        elif r.idle is not None:
            d = r.idle.as_dict()
            print(f"{r.scenario}: A ran {d['a_events_per_s']:,.0f} ev/s over {d['seconds']} s; CPU A "
                  f"{d['a_cores']:.1%}, B {d['b_cores']:.1%} (relays the job its socket watches), C {d['c_cores']:.1%} "
                  f"of a core (no socket, no job); events relayed A/B/C {d['relayed']} ({r.idle.attempts} attempt(s))")
        commands = getattr(r.post or r.fan or r.hop, "redis_commands", None)
        if commands:
            print("    redis-server's busiest commands: " + ", ".join(
                f"{c['command']} {c['calls']:,} calls x {c['usec_per_call']} µs" for c in commands))
    if args.json:
        Path(args.json).write_text(json.dumps([r.as_dict() for r in rows], indent=2))
    missed = [r for r in rows if r.passed is False]
    met = "All checks passed (zero loss, CPU per job, the idle node; the rest is informational)."
    return finish(missed, check=args.check, all_met=met)


if __name__ == "__main__":
    sys.exit(main())

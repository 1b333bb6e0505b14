"""Evaluations under attack (``python -m bench.evaluations``): 40 ``evaluate`` callers at once,
repeatedly, with expressions that are refused or stopped only once they run, or legal and as heavy
as the bounds allow (:mod:`tests.support.evaluate_burst`, a process of its own).

Measured meanwhile, on a connection of its own: ``GET /api/health`` latency; target p99 <= 100 ms.
The baseline, in the same run, is the same polling with no burst. Also shown: how the 40 callers
were answered (a value, a refusal with its kind, 503 ``evaluations_busy``) and how long they
waited, client side. A missed target makes the exit status 1 with ``--check``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
from tests.support.processes import repo_pythonpath
from tests.support.servers import ServerProcess

from bench.report import machine_busy_line, percentile, render_table

HEALTH_P99_TARGET_MS = 100.0
AT_ONCE = 40


def _poll(http: httpx.Client, until: float | subprocess.Popen[bytes]) -> list[float]:
    """Health latencies (ms), every 5 ms, until a time or until a process ends."""
    found = []
    while (time.perf_counter() < until) if isinstance(until, float) else (until.poll() is None):
        started = time.perf_counter()
        response = http.get("/api/health")
        found.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.text
        time.sleep(0.005)
    return sorted(found)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=50, help="bursts of 40 callers (default 50)")
    parser.add_argument("--check", action="store_true", help="exit 1 if the target is missed")
    args = parser.parse_args()
    print("Routilux evaluations bench: 40 evaluate callers at once, and /api/health meanwhile")
    print(machine_busy_line())
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp) / "eval.db").start()
        try:
            with httpx.Client(base_url=server.url, timeout=30) as http:
                flow = {"dsl_dict": {"flow_id": "f", "routines": {"sink": {"class": "DataSink"}}}}
                assert http.post("/api/flows", json=flow).status_code == 201
                job_id = http.post("/api/jobs", json={"flow_id": "f"}).json()["job_id"]
                quiet = _poll(http, time.perf_counter() + 5.0)
                burst = subprocess.Popen(
                    [sys.executable, "-m", "tests.support.evaluate_burst", server.url, job_id,
                     str(args.rounds), str(AT_ONCE)],
                    stdout=subprocess.PIPE, env={"PYTHONPATH": repo_pythonpath(), "PATH": ""},
                )
                loaded = _poll(http, burst)
                out, _ = burst.communicate()
        finally:
            server.stop()
    answers = json.loads(out)
    waits = sorted(elapsed * 1000 for _, _, elapsed in answers)
    kinds = Counter(f"{status} {error}".strip() for status, error, _ in answers)
    p99 = percentile(loaded, 0.99)
    rows = [("scenario", "samples", "p50 ms", "p99 ms", "max ms", "target", "result"),
            ("health, quiet (baseline)", str(len(quiet)), f"{percentile(quiet, 0.5):.1f}",
             f"{percentile(quiet, 0.99):.1f}", f"{quiet[-1]:.1f}", "—", "—"),
            (f"health, {AT_ONCE} evaluations at once x {args.rounds}", str(len(loaded)),
             f"{percentile(loaded, 0.5):.1f}", f"{p99:.1f}", f"{loaded[-1]:.1f}",
             f"p99 <= {HEALTH_P99_TARGET_MS:g} ms", "PASS" if p99 <= HEALTH_P99_TARGET_MS else "FAIL")]
    print("\n".join(render_table(rows, {0, 5, 6})))
    print(f"\nevaluate answers: {dict(kinds)}; client-side wait p50 {percentile(waits, 0.5):.0f} ms, "
          f"p99 {percentile(waits, 0.99):.0f} ms, max {waits[-1]:.0f} ms (includes queueing behind 40 callers)")
    print(f"health p99 under the burst: {p99 / max(percentile(quiet, 0.99), 0.001):.1f}x its quiet p99")
    return 1 if args.check and p99 > HEALTH_P99_TARGET_MS else 0


if __name__ == "__main__":
    sys.exit(main())

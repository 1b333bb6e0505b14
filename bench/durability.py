"""Durability benchmark (``python -m bench.durability``): what committed acknowledgements and
checkpoints cost where a user feels them.

- **Posts**: ``POST /api/jobs/{id}/post`` paced at 500/s over 20 live jobs for 10 s, each answered
  only once the post is committed (``synchronous=FULL``); target p99 <= 20 ms. The baseline, in
  the same run, is the same load on a flow with ``execution.durable: false`` (posts not logged).
- **Resume**: 10,000 idle durable jobs; a graceful stop checkpoints them, and the next start
  resumes them all; target <= 10 s from the process's start until it serves with every job live,
  and memory as before (RSS after the restart within 25% of RSS before it). The baseline is the
  first start, on an empty database (imports, schema, nothing to resume).

Every figure is printed next to its baseline; a missed target makes the exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from tests.support.servers import ServerProcess

from bench.report import percentile, render_table

POSTS_PER_SECOND = 500
POST_SECONDS = 10.0
POST_JOBS = 20
POST_P99_TARGET_MS = 20.0
CONNECTIONS = 16
IDLE_JOBS = 10_000
RESUME_TARGET_S = 10.0


def _flow(flow_id: str, durable: bool) -> dict[str, Any]:
    return {"dsl_dict": {"flow_id": flow_id, "execution": {"durable": durable},
                         "routines": {"sink": {"class": "DataSink"}}}}


def _percentile(values: list[float], q: float) -> float:
    return percentile(sorted(values), q)


def _tables(rows: list[dict[str, Any]]) -> str:
    """Each table's rows (the keys of its first row are the header), aligned, a blank line between."""
    out: list[str] = []
    for table in dict.fromkeys(r["table"] for r in rows):
        mine = [{k: v for k, v in r.items() if k != "table"} for r in rows if r["table"] == table]
        header = tuple(mine[0])
        lines = [header, *(tuple(str(r[k]) for k in header) for r in mine)]
        out += ([""] if out else []) + render_table(lines, {0, len(header) - 2, len(header) - 1})
    return "\n".join(out)


async def _paced_posts(url: str, flow_id: str, rate: int, seconds: float) -> tuple[list[float], int]:
    """Latencies (ms, from each post's scheduled time) of posts sent at ``rate``/s for ``seconds``
    over raw keep-alive connections (httpx costs more CPU per request than the server: it would
    measure itself), and how many were not answered 202."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        jobs = [(await http.post("/api/jobs", json={"flow_id": flow_id})).json()["job_id"] for _ in range(POST_JOBS)]
    host, port = url.removeprefix("http://").split(":")
    total = int(rate * seconds)
    schedule: asyncio.Queue[int] = asyncio.Queue()
    latencies: list[float] = []
    failed = 0
    start = time.perf_counter()

    async def connection() -> None:
        nonlocal failed
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while True:
                i = await schedule.get()
                if i < 0:
                    return
                body = json.dumps({"routine_id": "sink", "slot_name": "input", "data": {"i": i}}).encode()
                writer.write(f"POST /api/jobs/{jobs[i % len(jobs)]}/post HTTP/1.1\r\nHost: {host}\r\n"
                             f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
                status = int((await reader.readline()).split()[1])
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                latencies.append((time.perf_counter() - (start + i / rate)) * 1000)
                failed += status != 202
        finally:
            writer.close()

    workers = [asyncio.ensure_future(connection()) for _ in range(CONNECTIONS)]
    for i in range(total):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        schedule.put_nowait(i)
    for _ in workers:
        schedule.put_nowait(-1)
    await asyncio.gather(*workers)
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        for job_id in jobs:  # a finished job keeps nothing to resume
            await http.post(f"/api/jobs/{job_id}/cancel")
    return latencies, failed


def bench_posts(workdir: Path) -> list[dict[str, Any]]:
    server = ServerProcess(workdir / "posts.db").start()
    rows = []
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for flow_id, durable in (("fleeting", False), ("durable", True)):
                assert http.post("/api/flows", json=_flow(flow_id, durable)).status_code == 201
        for flow_id, label in (("fleeting", "posts, not durable (baseline)"), ("durable", "posts, committed")):
            latencies, failed = asyncio.run(_paced_posts(server.url, flow_id, POSTS_PER_SECOND, POST_SECONDS))
            p99 = _percentile(latencies, 0.99)
            durable = flow_id == "durable"
            verdict = "PASS" if p99 <= POST_P99_TARGET_MS and not failed else "FAIL"
            rows.append({"table": "posts", "scenario": f"{label}, {POSTS_PER_SECOND}/s",
                         "requests": len(latencies), "failed": failed,
                         "p50 ms": f"{_percentile(latencies, 0.50):.2f}", "p99 ms": f"{p99:.2f}",
                         "max ms": f"{max(latencies):.2f}",
                         "target": f"p99 <= {POST_P99_TARGET_MS:g} ms" if durable else "—",
                         "result": verdict if durable else "—"})
    finally:
        server.stop()
    return rows


def bench_resume(workdir: Path, jobs: int) -> list[dict[str, Any]]:
    db = workdir / "resume.db"
    started = time.perf_counter()
    server = ServerProcess(db).start()
    empty_s = time.perf_counter() - started  # the baseline: a start with nothing to resume
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            assert http.post("/api/flows", json=_flow("idle", True)).status_code == 201

            async def start_all() -> None:
                async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
                    semaphore = asyncio.Semaphore(32)

                    async def one() -> None:
                        async with semaphore:
                            answer = await client.post("/api/jobs", json={"flow_id": "idle"})
                            assert answer.status_code == 201, answer.text

                    await asyncio.gather(*(one() for _ in range(jobs)))

            asyncio.run(start_all())
            assert server.process is not None
            rss_before = psutil.Process(server.process.pid).memory_info().rss
    finally:
        server.stop(signal.SIGTERM, timeout=60)
    started = time.perf_counter()
    server = ServerProcess(db).start(timeout=120)
    serving_s = time.perf_counter() - started
    try:
        assert server.process is not None
        process = psutil.Process(server.process.pid)
        cpu = process.cpu_times()
        cpu_s = cpu.user + cpu.system  # by serving time: what the machine's other load does not change
        rss_after = process.memory_info().rss
        with httpx.Client(base_url=server.url, timeout=60) as http:
            live = http.get("/api/jobs", params={"status": "idle", "limit": 1}).json()["total"]
            failed = http.get("/api/jobs", params={"status": "failed", "limit": 1}).json()["total"]
    finally:
        server.stop()
    ratio = rss_after / rss_before
    ok = serving_s <= RESUME_TARGET_S and live == jobs and failed == 0 and ratio <= 1.25
    return [{"table": "resume", "scenario": f"{jobs:,} idle jobs: stop, start, all live again",
             "figure": f"serving in {serving_s:.2f} s ({empty_s:.2f} s with no job), {cpu_s:.2f} s of CPU; "
                       f"{live:,} idle, {failed} failed; "
                       f"RSS {rss_before / 2**20:.0f} MB before, {rss_after / 2**20:.0f} MB after ({ratio:.2f}x)",
             "target": f"<= {RESUME_TARGET_S:g} s, all live, RSS within 25%", "result": "PASS" if ok else "FAIL"}]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Routilux durability benchmark (see the module docstring).")
    parser.add_argument("--jobs", type=int, default=IDLE_JOBS, help=f"idle jobs to resume (default {IDLE_JOBS:,})")
    parser.add_argument("--only", choices=("posts", "resume"), help="run one part only (default: both)")
    args = parser.parse_args(argv)
    print("Routilux durability bench: committed posts, and idle jobs resumed after a restart")
    with tempfile.TemporaryDirectory(prefix="routilux-durability-") as tmp:
        rows = ((bench_posts(Path(tmp)) if args.only != "resume" else [])
                + (bench_resume(Path(tmp), args.jobs) if args.only != "posts" else []))
    print(_tables(rows))
    missed = [r["scenario"] for r in rows if r.get("result") == "FAIL"]
    print(f"\nMissed targets: {', '.join(missed)}" if missed else "\nAll targets met.")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())

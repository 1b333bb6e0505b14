"""Profiling the Routilux server during a streamed scenario (py-spy if installed, else cProfile).
"""

from __future__ import annotations

import pstats
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench.report import sources_fingerprint
from bench.ws.scenarios import run_stream, setup_routilux
from bench.ws.servers import Server


# =============================================================================================
# Profiling the server
# =============================================================================================
def _py_spy() -> str | None:
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    return found


def _collapsed_top(path: Path, top: int) -> str:
    """Top functions of py-spy's collapsed stacks: self (leaf) and inclusive sample shares."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            incl[name] += count
    if not total:
        return "py-spy recorded no samples"
    out = [f"{total:,} samples"]
    for title, counter in (("self", own), ("inclusive", incl)):
        out.append(f"\n--- top {top} by {title} samples ---")
        for name, count in counter.most_common(top):
            out.append(f"{count / total:6.1%}  {name}")
    return "\n".join(out)


def profile_stream(workdir: Path, *, clients: int, rate: float, seconds: float, procs: int, client: str,
                   top: int = 25) -> str:
    """Run a streamed scenario against a Routilux server that py-spy samples (or cProfile)."""
    spy = _py_spy()
    header = f"profiled: {clients} clients, {rate:,.0f} events/s for {seconds:g} s ({sources_fingerprint()})"
    if spy is not None:
        out = workdir / "py-spy.txt"
        with Server("routilux", workdir) as server:
            setup_routilux(server)
            recorder = subprocess.Popen(
                [spy, "record", "--pid", str(server.pid), "--rate", "250", "--format", "raw", "--function",
                 "--nonblocking", "--output", str(out), "--duration", str(int(seconds * 3 + 20))],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )
            try:
                time.sleep(1.0)
                stream = run_stream(server, workdir, clients=clients, rate=rate, seconds=seconds, procs=procs,
                                    client=client)
            finally:
                recorder.send_signal(signal.SIGINT)
                try:
                    _, err = recorder.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    recorder.kill()
                    _, err = recorder.communicate()
        if not out.exists():
            return f"py-spy failed: {err.decode(errors='replace')[-1000:]}"
        return (f"{header} under py-spy (Routilux server, all threads, samples while on CPU): "
                f"{stream.deliveries_per_s:,.0f} deliveries/s, loss {stream.missing:,}, "
                f"{stream.server_us_per_delivery:.1f} server µs/delivery\n" + _collapsed_top(out, top))
    stats_path = workdir / "routilux.prof"
    with Server("routilux", workdir, cprofile_to=stats_path) as server:
        setup_routilux(server)
        stream = run_stream(server, workdir, clients=clients, rate=rate, seconds=seconds, procs=procs, client=client)
    text = [f"{header} under cProfile (event-loop thread): {stream.deliveries_per_s:,.0f} deliveries/s"]
    for _ in range(50):
        if stats_path.exists():
            break
        time.sleep(0.1)
    for order in ("tottime", "cumulative"):
        buf = __import__("io").StringIO()
        pstats.Stats(str(stats_path), stream=buf).strip_dirs().sort_stats(order).print_stats(top)
        text.append(f"\n--- top {top} by {order} ---\n" + buf.getvalue())
    return "\n".join(text)



"""The cluster bench's settings and the run of every scenario.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bench.api.rows import seed_routilux
from bench.cluster.fanout import _lossy, run_fanout
from bench.cluster.hop import run_hop
from bench.cluster.measure import _measured
from bench.cluster.nodes import Node
from bench.cluster.post import run_post
from bench.cluster.redis_server import DB_FANOUT, DB_HOP, DB_POST, DB_RELAY, Redis
from bench.cluster.relay import run_idle
from bench.cluster.rows import Row
from bench.cluster.settings import Settings
from bench.report import (
    BenchFailure,
    format_table,
    percentile,
    sources_fingerprint,
)
from bench.ws.scenarios import setup_routilux


# =============================================================================================
# The run
# =============================================================================================
def run_bench(settings: Settings, log: Any = None) -> list[Row]:
    """Start redis-server, run the scenarios of ``settings.only`` (each on fresh servers and a
    fresh Redis database), stop everything; return the rows. Lost events raise
    :class:`BenchFailure` once every scenario has run (the message has the table)."""
    say = log or (lambda _msg: None)
    s = settings
    only = {part.strip() for part in s.only.split(",") if part.strip()}
    scenarios = {"post", "fanout", "hop", "relay"}
    if only - scenarios:
        raise ValueError(f"unknown scenario(s) {sorted(only - scenarios)}: use post, fanout, hop, relay")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="routilux-cluster-bench-") as tmp:
        work = Path(tmp)
        try:
            with Redis(work) as redis:
                pid = redis.process.pid if redis.process else 0
                say(f"redis-server {redis.port} (pid {pid}); {sources_fingerprint()}")
                if "post" in only:
                    with Node("plain", work, kind="uvicorn") as plain:
                        seed_routilux(plain)
                        base = Row("plain uvicorn, SQLite (baseline)", "post_plain",
                                   post=run_post(plain, None, None, s))
                    say(f"{base.scenario}: {base.post.load.rps:,.0f} jobs/s")  # type: ignore[union-attr]
                    rows.append(base)
                    for label, n in (("w1", 1), ("w2", 2)):
                        redis.flush(DB_POST[label])
                        with Node(f"post-{label}", work, kind="gunicorn", workers=n,
                                  redis_url=redis.url(DB_POST[label])) as g:
                            seed_routilux(g)
                            row = Row(f"gunicorn -w {n} + Redis", f"post_{label}", workers=n, baseline=base,
                                      post=run_post(g, redis, DB_POST[label], s), target="CPU/job <= 2x plain")
                        row.passed = row.cpu_ratio is not None and row.cpu_ratio <= 2.0
                        say(f"{row.scenario}: {row.post.load.rps:,.0f} jobs/s, placement "  # type: ignore[union-attr]
                            f"{row.post.placement}")  # type: ignore[union-attr]
                        rows.append(row)
                if "fanout" in only:
                    pairs = [("fanout", f"{s.rate:,.0f} ev/s x {s.clients}", s.rate, s.seconds)]
                    if s.capacity_rate > 0:
                        pairs.append(("capacity", f"capacity: {s.capacity_rate:,.0f} ev/s offered x {s.clients}",
                                      s.capacity_rate, s.capacity_seconds))
                    for key, title, rate, seconds in pairs:
                        one: Row | None = None
                        for label, n in (("w1", 1), ("w2", 2)):
                            db = DB_FANOUT[f"{key}_{label}"]
                            redis.flush(db)
                            with Node(f"{key}-{label}", work, kind="gunicorn", workers=n, redis_url=redis.url(db)) as g:
                                setup_routilux(g)
                                fan = _measured(s, lambda g=g, db=db, rate=rate, seconds=seconds: run_fanout(
                                    g, redis, db, work, clients=s.clients, rate=rate, seconds=seconds,
                                    procs=s.client_procs, client=s.client))
                            row = Row(f"{title}, gunicorn -w {n}", f"{key}_{label}", fan=fan, workers=n, baseline=one,
                                      target="0 loss")
                            row.passed = not _lossy(fan.stream)
                            st = fan.stream
                            say(f"{row.scenario}: clients owner/other {fan.owner_clients}/{fan.other_clients}, "
                                f"p99 {st.pct_ms(0.99):.1f} ms, loss {st.missing:,}, {st.deliveries_per_s:,.0f} "
                                "deliveries/s")
                            rows.append(row)
                            one = one or row
                if "hop" in only:
                    hops = [("hop", s.hop_rate, s.hop_seconds, "informational: p50 added")]
                    if s.hop_capacity_rate > 0:
                        hops.append(("hop_capacity", s.hop_capacity_rate, s.hop_capacity_seconds, "informational"))
                    for key, rate, seconds, target in hops:
                        db = DB_HOP[key]
                        redis.flush(db)
                        with Node("A", work, kind="main", redis_url=redis.url(db)) as a, \
                                Node("B", work, kind="main", redis_url=redis.url(db)) as b:
                            setup_routilux(a)
                            hop = run_hop(a, b, redis, db, rate=rate, seconds=seconds, settings=s)
                        row = Row(f"{rate:,.0f} ev/s x {seconds:g} s, A and B", key, hop=hop, target=target)
                        say(f"hop {rate:,.0f} ev/s: added p50 {percentile(hop.added_ms, 0.5):.2f} ms, "
                            f"p99 {percentile(hop.added_ms, 0.99):.2f} ms, B {hop.b_per_s:,.0f} ev/s")
                        rows.append(row)
                if "relay" in only:
                    redis.flush(DB_RELAY)
                    with Node("A", work, kind="main", redis_url=redis.url(DB_RELAY)) as a, \
                            Node("B", work, kind="main", redis_url=redis.url(DB_RELAY)) as b, \
                            Node("C", work, kind="main", redis_url=redis.url(DB_RELAY)) as c:
                        setup_routilux(a)
                        idle = run_idle(a, b, c, redis, DB_RELAY, rate=s.relay_rate, seconds=s.relay_seconds,
                                        settings=s)
                    row = Row(f"{s.relay_rate:,.0f} ev/s x {s.relay_seconds:g} s on A, B watches, C idle", "relay",
                              idle=idle, target="C <= 5% of a core, relays 0")
                    row.passed = idle.passed
                    say(f"relay: A {idle.events_per_s:,.0f} ev/s, C {idle.cores(idle.c_cpu):.1%} of a core, "
                        f"relayed {idle.relayed}")
                    rows.append(row)
            lossy = [r for r in rows if r.fan is not None and _lossy(r.fan.stream)]
            if lossy:
                details = "; ".join(f"{r.scenario}: {json.dumps(r.fan.stream.as_dict())}" for r in lossy)  # type: ignore[union-attr]
                raise BenchFailure(f"events lost in {len(lossy)} fan-out row(s):\n{format_table(rows)}\n{details}")
        except Exception as exc:  # any error fails the run; the servers' logs are kept for the report
            kept = Path(tempfile.mkdtemp(prefix="routilux-cluster-bench-logs-"))
            for log_file in work.glob("*.log"):
                shutil.copy2(log_file, kept / log_file.name)
            raise BenchFailure(f"{type(exc).__name__}: {exc}\n(every server's log is kept in {kept})") from exc
    return rows



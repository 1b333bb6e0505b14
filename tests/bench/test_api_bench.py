"""The HTTP API benchmark, bounded (``make test``) and full size (``make bench``, ``-m slow``).

The bounded test runs ``python -m bench.api``'s quick sizes against real uvicorn processes (the bare
Starlette baseline and Routilux on a temporary SQLite file) and asserts correctness — every answer
2xx, every posted job completed — plus lower bounds loose enough that a shared CI machine does not
flake them. The slow test runs the issue's sizes and asserts its targets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bench.api import load as api_load
from bench.api import rows as api_rows
from bench.api import run as api_run
from bench.api import servers as api_servers
from bench.report import BenchFailure, format_table


def _assert_correct(rows: list[Any], jobs: int) -> dict[str, Any]:
    table = format_table(rows)
    r = {row.key: row for row in rows}
    assert list(r) == ["bare", "get_job", "flows", "get_job_secured", "post", "post_completed", "list",
                       "stored_job"], table
    for row in rows:
        if row.load is not None:
            assert row.load.errors == 0, table
            assert row.load.requests > 0, table
            assert set(row.load.statuses) <= {200, 201}, table
    assert r["post"].load.requests == jobs and r["post"].load.statuses[201] == jobs, table
    assert r["post_completed"].extra["jobs"] == jobs, table
    assert r["list"].extra["stored_jobs"] >= jobs, table
    assert r["list"].load.connections == 1, table
    assert r["get_job"].baseline is r["bare"] and r["get_job"].ratio is not None, table
    # every secured request carried the key and none was refused (the limit is out of reach)
    assert r["get_job_secured"].load.statuses.keys() == {200}, table
    return r


# ------------------------------------------------------------------------------------------------
# Bounded (make test): < 40 s
# ------------------------------------------------------------------------------------------------
def test_api_bench_quick() -> None:
    settings = api_run.Settings.quick()
    rows = api_run.run_bench(settings)
    table = format_table(rows)
    print("\n" + table)
    r = _assert_correct(rows, settings.jobs)
    assert r["get_job"].ratio >= 0.20, table
    assert r["get_job_secured"].extra["ratio_vs_open"] >= 0.40, table
    assert r["post"].rps >= 200, table
    assert r["list"].load.percentile_ms(0.99) <= 100, table


def test_client_fails_loudly_on_non_2xx(tmp_path: Path) -> None:
    with api_servers.bare_server(tmp_path) as bare:
        load = api_load.run_load(bare, [api_load.get("/missing", bare.port)], connections=2, count=20)
        assert load.requests == 20 and load.statuses == {404: 20} and load.errors == 20
        with pytest.raises(BenchFailure, match="404"):
            api_rows._checked("missing", load)
        ok = api_load.run_load(bare, [api_load.get("/job", bare.port)], connections=4, count=200)
        assert ok.requests == 200 and ok.errors == 0 and len(ok.latencies) == 200
        assert api_rows._checked("bare", ok) is ok
    assert bare.process is None  # stopped


# ------------------------------------------------------------------------------------------------
# Full size with the targets (make bench)
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_api_bench_targets() -> None:
    settings = api_run.Settings()
    rows = api_run.run_bench(settings)
    table = format_table(rows)
    print("\n" + table)
    r = _assert_correct(rows, settings.jobs)
    assert r["list"].extra["stored_jobs"] >= api_servers.STORED_JOBS, table
    assert r["get_job"].ratio >= api_servers.TARGET_GET_JOB_RATIO, table
    assert r["get_job_secured"].extra["ratio_vs_open"] >= api_servers.TARGET_SECURED_RATIO, table
    assert r["post"].rps >= api_servers.TARGET_POST_JOBS_PER_S, table
    assert r["list"].load.percentile_ms(0.99) <= api_servers.TARGET_LIST_P99_MS, table

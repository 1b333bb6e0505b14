"""The engine benchmark, bounded (``make test``) and full size (``make bench``, ``-m slow``).

The bounded tests run the same scenario functions as ``python -m bench.engine`` with small sizes and
assert correctness (every item arrives, in order; the bus accounts for every event) plus lower
bounds loose enough that CI noise does not flake them. The slow tests run the issue's sizes and
assert its targets.
"""

from __future__ import annotations

from typing import Any

import pytest
from bench.engine import baselines, chain, common
from bench.engine import idle_jobs as idle
from bench.report import BenchFailure, format_table


def _check_bus(row: Any) -> None:
    extra = row.extra
    assert extra["events_received"] + extra["events_dropped"] == extra["events_published"]
    # per hop the engine publishes a slot_call and an event_emit: the subscriber really saw traffic
    assert extra["events_published"] >= row.items * common.STAGES


# ------------------------------------------------------------------------------------------------
# Bounded (make test)
# ------------------------------------------------------------------------------------------------
def test_raw_anyio_baselines_deliver_everything_in_order() -> None:
    for fn in (baselines.baseline_async, baselines.baseline_async_batched, baselines.baseline_sync):
        row = chain.run(fn, 2_000)
        assert row.items == 2_000 and row.hops == 2_000 * common.HOPS_PER_ITEM
    row = chain.run(baselines.baseline_sync_blocking, 500)
    assert row.hops_per_s > 0


def test_async_chain_bounded() -> None:
    base = chain.run(baselines.baseline_async, 5_000)
    row = chain.run(chain.routilux_chain, 5_000, sync=False)
    row.baseline = base
    _check_bus(row)
    assert row.hops_per_s >= 5_000, format_table([base, row])


def test_sync_chain_bounded() -> None:
    row = chain.run(chain.routilux_chain, 2_000, sync=True)
    _check_bus(row)
    assert row.hops_per_s >= 1_000, format_table([row])


def test_async_chain_without_subscriber_is_faster_path() -> None:
    row = chain.run(chain.routilux_chain, 5_000, sync=False, subscriber=False)
    assert "events_received" not in row.extra
    assert row.hops_per_s >= 5_000


def test_checkpointed_chain_bounded() -> None:
    """Checkpointing every 100 activations loses nothing, takes the checkpoints it should, and
    leaves most of the throughput (the issue's 70% is asserted by the full run)."""
    from bench.engine import checkpoints

    for paced, n in ((False, 5_000), (True, 1_000)):
        ref, row = checkpoints.checkpoint_overhead_rows(n, rounds=1, paced=paced)
        if paced:  # at full speed the chain batches: a few dozen activations, maybe no checkpoint
            assert row.extra["checkpoints"] >= row.extra["activations"] // 200 >= 1, row.extra
        assert row.extra["ratio_vs_without_checkpoints"] >= 0.4, format_table([ref, row])


def test_idle_jobs_bounded() -> None:
    fig = idle.run_idle_jobs_subprocess(1_000, idle_seconds=0.5, timeout=120)
    assert fig["live_jobs"] == 1_001  # the probe job and the 1,000: all idle, none completed
    assert fig["rss_per_job_kb"] <= 30.0, fig
    assert fig["idle_cpu_fraction"] <= 0.10, fig  # psutil ticks are 10 ms: keep this loose
    assert fig["threads_after"] <= fig["threads_before"], fig  # no thread per job
    assert fig["snapshot_us_probe_many"] <= 3 * fig["snapshot_us_one_job"] + 1.0, fig
    assert fig["snapshot_us_spread_many"] <= 20.0, fig


def test_tally_fails_loudly_on_loss_duplicate_or_reorder() -> None:
    for items in ([0, 1, 3], [0, 1, 1, 2], [0, 2, 1]):
        tally = common.Tally(3)
        tally.add([{"i": i} for i in items])
        with pytest.raises(BenchFailure):
            tally.verify("unit")
    tally = common.Tally(3)
    assert tally.add([{"i": 0}, {"i": 1}]) is False
    assert tally.add_one({"i": 2}) is True
    tally.verify("unit")


def test_chain_fails_loudly_when_the_engine_loses_an_item(monkeypatch: pytest.MonkeyPatch) -> None:
    async def lossy(self: Any, ctx: Any, input: list[dict[str, Any]]) -> None:
        if self.config.tail:
            tally = ctx.state["tally"]
            if tally.add(input):
                ctx.state["done"].set()
            return
        for item in input:
            if item["i"] == 7 and ctx.routine_id == "s2":
                continue  # dropped on the floor
            await ctx.emit("output", **item)

    monkeypatch.setattr(common.AsyncPass, "logic", lossy)
    with pytest.raises(BenchFailure, match="went idle with 499 of 500"):
        chain.run(chain.routilux_chain, 500, sync=False)


# ------------------------------------------------------------------------------------------------
# Full size with the targets (make bench)
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_full_async_target() -> None:
    rows = chain.throughput_rows(100_000, kinds=("async",), extras=False)
    print("\n" + format_table(rows))
    row = rows[-1]
    _check_bus(row)
    assert row.hops_per_s >= common.TARGET_ASYNC_HOPS, format_table(rows)


@pytest.mark.slow
@pytest.mark.parametrize("paced", [False, True], ids=["full-speed", "paced"])
def test_full_checkpoint_target(paced: bool) -> None:
    from bench.engine import checkpoints

    ref, row = checkpoints.checkpoint_overhead_rows(10_000 if paced else 30_000, rounds=5, paced=paced)
    print("\n" + format_table([ref, row]))
    assert row.passed, format_table([ref, row])


@pytest.mark.slow
def test_full_sync_target() -> None:
    rows = chain.throughput_rows(100_000, kinds=("sync",), extras=False)
    print("\n" + format_table(rows))
    row = rows[-1]
    _check_bus(row)
    assert row.hops_per_s >= common.TARGET_SYNC_HOPS, format_table(rows)


@pytest.mark.slow
def test_full_idle_jobs_target() -> None:
    fig = idle.run_idle_jobs_subprocess(10_000, idle_seconds=2.0)
    rows = idle.idle_rows(fig)
    print("\n" + format_table(rows))
    assert fig["live_jobs"] == 10_001
    assert all(row.passed is not False for row in rows), format_table(rows)

"""The Store contract, run against every implementation: MemoryStore, SQLite on a file, SQLite
in memory, and Redis. What one store accepts and returns, all of them must."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import anyio
import msgspec
import pytest

from routilux.engine.records import JobStatus
from routilux.store import (
    CheckpointRecord,
    FlowRevisionConflict,
    JobQuery,
    JobRecord,
    RuntimeRecord,
    StoreClosedError,
    StoreCounts,
    StoredEvent,
    StoredPost,
)
from tests.support.stores import NESTED, T0, build, event, flow, held, job


def ids(jobs: list[JobRecord]) -> list[str]:
    return [j.job_id for j in jobs]


# -- flows -----------------------------------------------------------------------------------
async def test_flow_round_trip_is_exact(store) -> None:
    record = flow()
    await store.put_flow(record)
    got = await store.get_flow("etl")
    assert got == record
    assert got.created_at.tzinfo is UTC and got.created_at.microsecond == 123456
    assert await store.get_flow("missing") is None
    got.document["extra"]["float"] = "mutated"  # a read is a copy
    assert (await store.get_flow("etl")) == record


async def test_flow_put_replaces_list_is_sorted_and_delete_reports(store) -> None:
    await store.put_flow(flow("b"))
    await store.put_flow(flow("a", source=None))
    await store.put_flow(flow("b", revision=2, document={"v": 2}))
    listed = await store.list_flows()
    assert [f.flow_id for f in listed] == ["a", "b"]
    assert listed[0].source is None
    assert listed[1].revision == 2 and listed[1].document == {"v": 2}
    assert await store.delete_flow("a") is True
    assert await store.delete_flow("a") is False
    assert [f.flow_id for f in await store.list_flows()] == ["b"]


async def test_put_flow_with_an_expected_revision_refuses_lost_updates(store) -> None:
    await store.put_flow(flow("etl"), expected_revision=0)  # create: must not exist yet
    with pytest.raises(FlowRevisionConflict) as caught:
        await store.put_flow(flow("etl", document={"v": "second create"}), expected_revision=0)
    assert (caught.value.flow_id, caught.value.current_revision) == ("etl", 1)
    await store.put_flow(flow("etl", revision=2, document={"v": 2}), expected_revision=1)
    with pytest.raises(FlowRevisionConflict) as caught:  # a writer that read revision 1: stale
        await store.put_flow(flow("etl", revision=2, document={"v": "stale"}), expected_revision=1)
    assert caught.value.current_revision == 2
    assert caught.value.to_dict()["current_revision"] == 2
    assert (await store.get_flow("etl")).document == {"v": 2}  # nothing of the loser was written
    with pytest.raises(FlowRevisionConflict) as caught:  # an update of a flow that is not there
        await store.put_flow(flow("new", revision=2), expected_revision=1)
    assert caught.value.current_revision is None
    assert await store.get_flow("new") is None
    await store.put_flow(flow("etl", revision=7), expected_revision=None)  # unconditional
    await store.put_flow(flow("etl", revision=8))
    assert (await store.get_flow("etl")).revision == 8
    for bad in (-1, True, "1"):
        with pytest.raises(ValueError):
            await store.put_flow(flow("etl", revision=9), expected_revision=bad)  # type: ignore[arg-type]
    assert (await store.get_flow("etl")).revision == 8


async def test_delete_flow_with_an_expected_revision(store) -> None:
    await store.put_flow(flow("etl", revision=3))
    for stale in (2, 0):
        with pytest.raises(FlowRevisionConflict) as caught:
            await store.delete_flow("etl", expected_revision=stale)
        assert caught.value.current_revision == 3
    assert await store.get_flow("etl") is not None
    assert await store.delete_flow("etl", expected_revision=3) is True
    with pytest.raises(FlowRevisionConflict) as caught:
        await store.delete_flow("etl", expected_revision=3)
    assert caught.value.current_revision is None
    assert await store.delete_flow("etl", expected_revision=0) is False  # "must not exist": it doesn't
    await store.put_flow(flow("etl"))
    assert await store.delete_flow("etl") is True  # None: unconditional
    assert await store.counts() == StoreCounts(flow_count=0, job_count=0)


async def test_deleting_a_flow_keeps_its_job_history(store) -> None:
    await store.put_flow(flow("etl"))
    await store.put_job(job("j1"))
    assert await store.delete_flow("etl")
    assert (await store.get_job("j1")) is not None
    assert await store.counts() == StoreCounts(flow_count=0, job_count=1)


# -- jobs ------------------------------------------------------------------------------------
async def test_job_round_trip_is_exact(store) -> None:
    full = job(
        "j-ü",
        status="failed",
        started_at=T0 + timedelta(microseconds=1),
        completed_at=T0 + timedelta(days=400, microseconds=999_999),
        error={"type": "ValueError", "message": "bad — ✗", "traceback": "line 1\nline 2"},
        timeout=12.5,
        complete_when_idle=True,
        state={"routine_states": {"a": {"status": "completed"}}, "shared_data": NESTED,
               "execution_history": [], "pause_points": [], "deferred_events": []},
    )
    minimal = job("j-min")
    await store.put_job(full)
    await store.put_job(minimal)
    assert await store.get_job("j-ü") == full
    assert await store.get_job("j-min") == minimal
    assert await store.get_job("nope") is None


async def test_datetimes_come_back_in_utc_and_naive_ones_are_refused(store) -> None:
    plus2 = timezone(timedelta(hours=2))
    await store.put_job(job("j1", created_at=datetime(2026, 1, 18, 14, 0, tzinfo=plus2)))
    got = await store.get_job("j1")
    assert got.created_at == datetime(2026, 1, 18, 12, 0, tzinfo=UTC)
    assert got.created_at.tzinfo is UTC
    with pytest.raises(ValueError, match="timezone-aware"):
        store.record_job(job("j2", created_at=datetime(2026, 1, 18)))
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.put_flow(flow(updated_at=datetime(2026, 1, 18)))


async def test_status_enums_are_stored_as_plain_strings(store) -> None:
    await store.put_job(job("j1", status=JobStatus.PAUSED))
    got = await store.get_job("j1")
    assert got.status == "paused" and type(got.status) is str
    assert ids((await store.list_jobs(JobQuery(status=JobStatus.PAUSED)))[0]) == ["j1"]


async def test_record_job_later_record_wins(store) -> None:
    store.record_job(job("j1", status="pending"))
    store.record_job(job("j1", status="running"))
    store.record_job(job("j1", status="completed", completed_at=T0))
    await store.flush()
    got = await store.get_job("j1")
    assert got.status == "completed" and got.completed_at == T0
    await store.put_job(job("j1", status="failed"))
    assert (await store.get_job("j1")).status == "failed"
    store.record_job(job("j1", status="cancelled"))
    await store.flush()
    assert (await store.get_job("j1")).status == "cancelled"


async def test_record_then_delete_then_record_keeps_order(store) -> None:
    store.record_job(job("j1", status="running"))
    store.record_events([event("j1", 1)])
    assert await store.delete_jobs(["j1"]) == 1
    store.record_job(job("j1", status="pending"))
    await store.flush()
    assert (await store.get_job("j1")).status == "pending"
    assert await store.events_since("j1") == []


async def _seed_jobs(store) -> None:
    rows = [
        ("a1", 0, "fa", "running", "default"),
        ("a2", 1, "fa", "completed", "default"),
        ("b1", 2, "fb", "running", "fast"),
        ("b2", 3, "fb", "failed", "fast"),
        ("c1", 3, "fa", "running", "fast"),  # same created_at as b2: job_id breaks the tie
        ("c0", 3, "fb", "running", "default"),
    ]
    for job_id, at, flow_id, status, runtime in rows:
        store.record_job(job(job_id, at, flow_id=flow_id, status=status, runtime_id=runtime))
    await store.flush()


async def test_list_jobs_newest_first_with_ties_by_job_id(store) -> None:
    await _seed_jobs(store)
    jobs, total = await store.list_jobs(JobQuery())
    assert ids(jobs) == ["b2", "c0", "c1", "b1", "a2", "a1"]
    assert total == 6


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (JobQuery(flow_id="fa"), ["c1", "a2", "a1"]),
        (JobQuery(status="running"), ["c0", "c1", "b1", "a1"]),
        (JobQuery(runtime_id="fast"), ["b2", "c1", "b1"]),
        (JobQuery(flow_id="fb", status="running"), ["c0", "b1"]),
        (JobQuery(flow_id="fa", status="running", runtime_id="fast"), ["c1"]),
        (JobQuery(flow_id="nope"), []),
    ],
)
async def test_list_jobs_filters(store, query: JobQuery, expected: list[str]) -> None:
    await _seed_jobs(store)
    jobs, total = await store.list_jobs(query)
    assert ids(jobs) == expected
    assert total == len(expected)


@pytest.mark.parametrize(
    ("query", "expected", "total"),
    [
        (JobQuery(exclude=frozenset({"c0", "a2", "nope"})), ["b2", "c1", "b1", "a1"], 4),
        (JobQuery(status="running", exclude=frozenset({"c1"}), limit=2), ["c0", "b1"], 3),
        (JobQuery(flow_id="fa", exclude=frozenset({"c1"}), offset=1), ["a1"], 2),
        (JobQuery(exclude=frozenset(f"x{i}" for i in range(2500)) | {"b2"}, limit=1), ["c0"], 5),
    ],
)
async def test_list_jobs_leaves_out_excluded_jobs(store, query: JobQuery, expected: list[str], total: int) -> None:
    """What the server lists from memory is left out of the page and the total alike."""
    await _seed_jobs(store)
    jobs, counted = await store.list_jobs(query)
    assert ids(jobs) == expected
    assert counted == total
    assert ids((await store.list_jobs(JobQuery()))[0]) == ["b2", "c0", "c1", "b1", "a2", "a1"]  # nothing removed


async def test_a_listing_may_leave_the_state_out(store) -> None:
    store.record_job(job("s1", 0, state={"shared_data": {"big": "x" * 1000}}))
    await store.flush()
    (with_state,), _ = await store.list_jobs(JobQuery())
    (without,), total = await store.list_jobs(JobQuery(with_state=False))
    assert with_state.state == {"shared_data": {"big": "x" * 1000}}
    assert without.state == {} and total == 1
    assert msgspec.structs.replace(without, state=with_state.state) == with_state


async def test_list_jobs_limit_offset_and_total(store) -> None:
    await _seed_jobs(store)
    assert [ids(p) for p, _ in [await store.list_jobs(JobQuery(limit=2, offset=o)) for o in (0, 2, 4, 6)]] == [
        ["b2", "c0"], ["c1", "b1"], ["a2", "a1"], []
    ]
    jobs, total = await store.list_jobs(JobQuery(status="running", limit=1, offset=1))
    assert ids(jobs) == ["c1"] and total == 4
    jobs, total = await store.list_jobs(JobQuery(limit=0))
    assert jobs == [] and total == 6
    with pytest.raises(ValueError):
        await store.list_jobs(JobQuery(limit=-1))
    with pytest.raises(ValueError):
        await store.list_jobs(JobQuery(offset=-1))


async def test_delete_jobs_removes_their_events(store) -> None:
    await _seed_jobs(store)
    store.record_events([event("a1", 1), event("a1", 2), event("b1", 1)])
    await store.flush()
    assert await store.delete_jobs(["a1", "a1", "missing"]) == 1
    assert await store.get_job("a1") is None
    assert await store.events_since("a1") == []
    assert [e.seq for e in await store.events_since("b1")] == [1]
    assert await store.delete_jobs([]) == 0
    assert (await store.counts()).job_count == 5


async def test_mark_interrupted_fails_every_unfinished_job(store) -> None:
    await _seed_jobs(store)
    store.record_job(job("p1", 4, status="pending"))
    store.record_job(job("i1", 5, status="idle"))
    store.record_job(job("z1", 6, status="paused"))
    store.record_job(job("x1", 7, status="cancelled"))
    before = datetime.now(UTC)
    marked = await store.mark_interrupted("the server restarted")
    assert sorted(marked) == ["a1", "b1", "c0", "c1", "i1", "p1", "z1"]
    for job_id in marked:
        got = await store.get_job(job_id)
        assert got.status == "failed"
        assert got.error == {"type": "interrupted", "message": "the server restarted"}
        assert before - timedelta(seconds=1) <= got.completed_at <= datetime.now(UTC)
    assert (await store.get_job("b2")).error is None  # terminal jobs are untouched
    assert (await store.get_job("x1")).status == "cancelled"
    assert await store.mark_interrupted("again") == []


# -- retention (prune_jobs) ------------------------------------------------------------------
FINISHED = ("completed", "failed", "cancelled")


async def _seed_finished(store, n: int, *, running: int = 0) -> list[str]:
    """``n`` finished jobs ``f00``.. (``f00`` ended first, at T0 + 100 s; each a second apart and
    created in the *reverse* order, so "newest" provably means "ended last"), two events each;
    plus ``running`` unfinished jobs ``r00``.. created long before all of them."""
    finished = [f"f{i:02}" for i in range(n)]
    for i, job_id in enumerate(finished):
        store.record_job(job(job_id, at=50 - i, status=FINISHED[i % 3], completed_at=T0 + timedelta(seconds=100 + i)))
        store.record_events([event(job_id, 1), event(job_id, 2, "job_end")])
    statuses = ("pending", "running", "idle", "paused")
    for i in range(running):
        store.record_job(job(f"r{i:02}", at=-1000 - i, status=statuses[i % 4]))
        store.record_events([event(f"r{i:02}", 1)])
    await store.flush()
    return finished


async def _job_ids(store) -> set[str]:
    jobs, _ = await store.list_jobs(JobQuery(limit=1000))
    return set(ids(jobs))


async def test_prune_keeps_the_newest_finished_jobs_and_deletes_the_rest_with_their_events(store) -> None:
    finished = await _seed_finished(store, 8, running=4)
    pruned = await store.prune_jobs(keep=3)
    assert pruned == finished[:5]  # oldest first
    assert await _job_ids(store) == {*finished[5:], "r00", "r01", "r02", "r03"}
    for job_id in pruned:
        assert await store.events_since(job_id) == []
    assert [e.seq for e in await store.events_since("f07")] == [1, 2]
    assert await store.prune_jobs(keep=3) == []  # nothing left to do: a cheap no-op
    assert await store.prune_jobs(keep=0) == finished[5:]
    assert await _job_ids(store) == {"r00", "r01", "r02", "r03"}


async def test_prune_by_age_deletes_jobs_that_ended_before_the_cutoff(store) -> None:
    finished = await _seed_finished(store, 6, running=2)
    cutoff = T0 + timedelta(seconds=103)  # f00..f02 ended before it, f03 exactly at it
    assert await store.prune_jobs(ended_before=cutoff) == finished[:3]
    assert await _job_ids(store) == {*finished[3:], "r00", "r01"}
    assert await store.events_since("f02") == []
    other_zone = cutoff.astimezone(timezone(timedelta(hours=-5))) + timedelta(microseconds=1)
    assert await store.prune_jobs(ended_before=other_zone) == ["f03"]  # an instant, whatever the zone


async def test_prune_applies_both_rules_and_never_touches_unfinished_jobs(store) -> None:
    finished = await _seed_finished(store, 6, running=4)
    # the count alone would delete f00..f03; the age alone f00..f01: together, the union
    assert await store.prune_jobs(keep=2, ended_before=T0 + timedelta(seconds=102)) == finished[:4]
    # unfinished jobs are far older than every cutoff, and over any count: all still there
    assert await store.prune_jobs(keep=0, ended_before=T0 + timedelta(days=365)) == finished[4:]
    assert await _job_ids(store) == {"r00", "r01", "r02", "r03"}
    assert [e.seq for e in await store.events_since("r00")] == [1]
    assert await store.prune_jobs() == []  # no rule, nothing deleted


async def test_prune_deletes_at_most_limit_jobs_per_call(store) -> None:
    finished = await _seed_finished(store, 7)
    assert await store.prune_jobs(keep=1, limit=4) == finished[:4]
    assert await store.prune_jobs(keep=1, limit=4) == finished[4:6]
    assert await _job_ids(store) == {"f06"}


async def test_prune_breaks_ties_by_job_id_and_dates_a_job_without_end_by_its_creation(store) -> None:
    # b and c ended at the same instant: the greater job_id counts as newer. `z` is finished but
    # has no completed_at: it counts as having ended when it was created (the oldest here).
    at = T0 + timedelta(seconds=10)
    store.record_job(job("c", 5, status="completed", completed_at=at))
    store.record_job(job("b", 6, status="failed", completed_at=at))
    store.record_job(job("a", 7, status="cancelled", completed_at=at + timedelta(seconds=1)))
    store.record_job(job("z", 1, status="completed"))
    await store.flush()
    assert await store.prune_jobs(keep=2) == ["z", "b"]
    assert await _job_ids(store) == {"a", "c"}


async def test_prune_refuses_arguments_that_would_delete_by_accident(store) -> None:
    await _seed_finished(store, 2)
    for kwargs in ({"keep": -1}, {"limit": 0}, {"keep": True}):
        with pytest.raises(ValueError):
            await store.prune_jobs(**kwargs)
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.prune_jobs(ended_before=datetime(2030, 1, 1))  # naive on purpose
    assert len(await _job_ids(store)) == 2


async def test_counts(store) -> None:
    assert await store.counts() == StoreCounts(flow_count=0, job_count=0)
    await store.put_flow(flow("a"))
    await store.put_flow(flow("b"))
    await _seed_jobs(store)
    assert await store.counts() == StoreCounts(flow_count=2, job_count=6)


# -- runtimes --------------------------------------------------------------------------------
async def test_runtimes_upsert_and_list_in_creation_order(store) -> None:
    default = RuntimeRecord(runtime_id="default", thread_pool_size=0, is_default=True, created_at=T0)
    fast = RuntimeRecord(runtime_id="fast", thread_pool_size=8, is_default=False, created_at=T0 + timedelta(1))
    await store.put_runtime(fast)
    await store.put_runtime(default)
    assert await store.list_runtimes() == [default, fast]
    bigger = msgspec.structs.replace(fast, thread_pool_size=16)
    await store.put_runtime(bigger)
    assert await store.list_runtimes() == [default, bigger]
    placed = msgspec.structs.replace(bigger, worker_group="gpu")  # a cluster's placement label
    await store.put_runtime(placed)
    assert await store.list_runtimes() == [default, placed]


# -- events ----------------------------------------------------------------------------------
async def test_events_append_since_and_limit(store) -> None:
    store.record_events([event("j1", s) for s in range(1, 6)])
    store.record_events([event("j2", 1, "job_start")])
    store.record_events([event("j1", s) for s in range(6, 11)])
    await store.flush()
    got = await store.events_since("j1")
    assert [e.seq for e in got] == list(range(1, 11))
    assert got[0] == event("j1", 1)  # payload bytes round trip exactly
    assert [e.seq for e in await store.events_since("j1", since=7)] == [8, 9, 10]
    assert [e.seq for e in await store.events_since("j1", since=2, limit=3)] == [3, 4, 5]
    assert await store.events_since("j1", since=10) == []
    assert await store.events_since("j1", limit=0) == []
    assert await store.events_since("unknown") == []
    assert await store.events_since("j2") == [event("j2", 1, "job_start")]
    with pytest.raises(ValueError):
        await store.events_since("j1", limit=-1)


async def test_last_event_seqs_names_each_jobs_newest_stored_event_in_one_read(make_store) -> None:
    async with make_store(events_per_job=5) as store:
        store.record_events([event("many", s) for s in range(1, 13)])  # kept: 8..12
        store.record_events([event("late", 7), event("late", 3), event("one", 1)])  # out of order
        store.record_events([event("gone", 1)])
        await store.flush()
        await store.delete_jobs(["gone"])
        wanted = ["many", "late", "one", "gone", "unknown"]
        assert await store.last_event_seqs(wanted) == {"many": 12, "late": 7, "one": 1}
        assert await store.last_event_seqs(["one"]) == {"one": 1}
        assert await store.last_event_seqs([]) == {}
        jobs = [f"j{i:04}" for i in range(1500)]  # more than one round of a batched read
        store.record_events([event(job_id, i % 7 + 1) for i, job_id in enumerate(jobs)])
        await store.flush()
        assert await store.last_event_seqs(jobs) == {job_id: i % 7 + 1 for i, job_id in enumerate(jobs)}


async def test_a_replayed_event_replaces_the_stored_one(store) -> None:
    store.record_events([event("j1", 1), event("j1", 2)])
    await store.flush()
    store.record_events([event("j1", 2, "job_end")])
    await store.flush()
    assert [(e.seq, e.type) for e in await store.events_since("j1")] == [(1, "log"), (2, "job_end")]


async def test_each_job_keeps_only_its_newest_events(make_store) -> None:
    async with make_store(events_per_job=5) as store:
        store.record_events([event("j1", s) for s in range(1, 4)])
        store.record_events([event("j2", s) for s in range(1, 3)])
        await store.flush()
        store.record_events([event("j1", s) for s in range(4, 13)])
        await store.flush()
        assert [e.seq for e in await store.events_since("j1")] == [8, 9, 10, 11, 12]
        assert [e.seq for e in await store.events_since("j2")] == [1, 2]  # untouched job keeps all
        store.record_events([event("j1", s) for s in range(13, 100)])  # one burst
        await store.flush()
        assert [e.seq for e in await store.events_since("j1")] == [95, 96, 97, 98, 99]


async def test_records_are_validated_when_handed_over(store) -> None:
    with pytest.raises(TypeError):
        store.record_job({"job_id": "x"})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.record_events([StoredEvent(job_id="j", seq=1, type="log", payload="not bytes")])  # type: ignore[arg-type]
    await store.flush()
    assert await store.counts() == StoreCounts(flow_count=0, job_count=0)


# -- life cycle ------------------------------------------------------------------------------
async def test_use_before_open_and_after_close_is_a_clear_error(kind, tmp_path) -> None:
    unopened = build(kind, tmp_path)
    with pytest.raises(StoreClosedError, match="not open"):
        await unopened.get_job("j1")
    async with held(build(kind, tmp_path)) as store:
        await store.put_job(job("j1"))
    for call in (
        lambda: store.record_job(job("j2")),
        lambda: store.record_events([event("j2", 1)]),
    ):
        with pytest.raises(StoreClosedError, match="closed"):
            call()
    for coro in (store.get_job, store.delete_flow):
        with pytest.raises(StoreClosedError, match="closed"):
            await coro("j1")
    with pytest.raises(StoreClosedError):
        await store.flush()
    await store.close()  # idempotent


# -- job metrics ---------------------------------------------------------------------------------
async def test_job_metrics_round_trip_in_storage_order_and_go_with_their_job(store) -> None:
    for n in range(4):
        await store.put_job(job(f"m{n}", status=JobStatus.COMPLETED, completed_at=T0 + timedelta(seconds=n)))
        await store.put_job_metrics([(f"m{n}", "etl", f"blob-{n}".encode())])
    await store.put_job_metrics([("m1", "etl", b"blob-1-again")])  # replaced, and now the newest
    await store.put_job_metrics([])  # nothing to do
    assert await store.get_job_metrics("m1") == b"blob-1-again"
    assert await store.get_job_metrics("nope") is None
    assert await store.all_job_metrics() == [b"blob-0", b"blob-2", b"blob-3", b"blob-1-again"]
    await store.delete_jobs(["m0"])
    assert await store.prune_jobs(keep=2) == ["m1"]
    assert await store.get_job_metrics("m0") is None and await store.get_job_metrics("m1") is None
    assert await store.all_job_metrics() == [b"blob-2", b"blob-3"]


# -- checkpoints and posts (jobs that outlive the process) ----------------------------------------
def checkpoint(job_id: str, posts: int = 0, data: bytes | None = None, at: int = 0) -> CheckpointRecord:
    if data is None:
        data = msgspec.json.encode({"job_id": job_id, "posts": posts, "nested": NESTED})
    return CheckpointRecord(job_id=job_id, posts=posts, data=data, taken_at=T0 + timedelta(seconds=at))


def post(job_id: str, n: int, data: bytes | None = None) -> StoredPost:
    return StoredPost(job_id=job_id, n=n, data=msgspec.json.encode({"n": n, "é": "ü"}) if data is None else data)


async def _resumable(store, job_id: str) -> tuple[CheckpointRecord | None, list[StoredPost]]:
    return await store.get_checkpoint(job_id), await store.posts_after(job_id, 0)


async def test_checkpoint_put_get_and_replace(store) -> None:
    await store.put_job(job("j1"))
    assert await store.get_checkpoint("j1") is None
    first = checkpoint("j1", posts=0, data=b'{"v":1}')
    await store.put_checkpoint(first)
    got = await store.get_checkpoint("j1")
    assert got == first and type(got.data) is bytes and got.taken_at.tzinfo is UTC
    second = checkpoint("j1", posts=3, at=5)  # the whole record is replaced
    await store.put_checkpoint(second)
    assert await store.get_checkpoint("j1") == second
    assert await store.get_checkpoint("missing") is None
    shifted = checkpoint("j1", posts=4, at=6)
    elsewhere = shifted.taken_at.astimezone(timezone(timedelta(hours=2)))
    await store.put_checkpoint(msgspec.structs.replace(shifted, taken_at=elsewhere))
    assert (await store.get_checkpoint("j1")).taken_at == shifted.taken_at  # back in UTC
    assert (await store.get_checkpoint("j1")).taken_at.tzinfo is UTC


async def test_checkpoints_and_posts_are_validated(store) -> None:
    with pytest.raises(ValueError):
        await store.put_checkpoint(msgspec.structs.replace(checkpoint("j1"), taken_at=datetime(2026, 1, 1)))
    with pytest.raises(ValueError):
        await store.put_checkpoint(checkpoint("j1", posts=-1))
    with pytest.raises(TypeError):
        await store.put_checkpoint(checkpoint("j1", data="text"))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await store.append_post(post("j1", 0))
    with pytest.raises(TypeError):
        await store.append_post(post("j1", 1, data="text"))  # type: ignore[arg-type]
    assert await _resumable(store, "j1") == (None, [])


async def test_list_checkpoints_gives_only_live_jobs_oldest_first(store) -> None:
    store.record_job(job("late", at=9))
    store.record_job(job("early", at=1, status="paused"))
    store.record_job(job("b", at=5, status="pending"))
    store.record_job(job("a", at=5, status="idle"))  # same created_at as b: job_id breaks the tie
    store.record_job(job("quiet", at=0))  # live, but no checkpoint
    await store.flush()
    for job_id in ("late", "early", "b", "a", "orphan"):  # "orphan" has no job record
        await store.put_checkpoint(checkpoint(job_id))
    assert [c.job_id for c in await store.list_checkpoints()] == ["early", "a", "b", "late"]
    assert await store.get_checkpoint("orphan") == checkpoint("orphan")
    store.record_job(job("b", at=5, status="completed", completed_at=T0 + timedelta(seconds=20)))
    await store.flush()
    assert [c.job_id for c in await store.list_checkpoints()] == ["early", "a", "late"]


async def test_a_late_checkpoint_or_post_never_resurrects_an_ended_job(store) -> None:
    for status in ("completed", "failed", "cancelled"):
        job_id = f"j-{status}"
        await store.put_job(job(job_id))
        await store.put_checkpoint(checkpoint(job_id, posts=1))
        await store.append_post(post(job_id, 1))
        store.record_job(job(job_id, status=status, completed_at=T0 + timedelta(seconds=1)))
        await store.put_checkpoint(checkpoint(job_id, posts=2))  # queued behind the terminal record
        await store.append_post(post(job_id, 2))
        assert await _resumable(store, job_id) == (None, [])
    assert await store.list_checkpoints() == []


async def test_posts_in_order_replace_and_posts_after(store) -> None:
    await store.put_job(job("j1"))
    for n in (3, 1, 2, 5, 4, 10):
        await store.append_post(post("j1", n))
    await store.append_post(post("other", 1))
    await store.append_post(post("j1", 2, data=b'{"again":true}'))  # (job, n) is unique: replaced
    everything = await store.posts_after("j1", 0)
    assert [p.n for p in everything] == [1, 2, 3, 4, 5, 10]
    assert all(p.job_id == "j1" and type(p.data) is bytes for p in everything)
    assert everything[1].data == b'{"again":true}' and everything[0] == post("j1", 1)
    assert [p.n for p in await store.posts_after("j1", 3)] == [4, 5, 10]
    assert [p.n for p in await store.posts_after("j1", 5)] == [10]
    assert await store.posts_after("j1", 10) == []
    assert [p.n for p in await store.posts_after("j1", -1)] == [1, 2, 3, 4, 5, 10]
    assert await store.posts_after("missing", 0) == []
    assert await store.posts_after("other", 0) == [post("other", 1)]


async def test_posts_after_many_is_posts_after_of_each_job_in_one_read(store) -> None:
    for job_id, numbers in (("a", (1, 2, 3)), ("b", (2, 1)), ("c", (1,)), ("none", ())):
        await store.put_job(job(job_id))
        for n in numbers:
            await store.append_post(post(job_id, n))
    found = await store.posts_after_many({"a": 1, "b": 0, "c": 1, "none": 0, "missing": 0})
    assert found == {"a": [post("a", 2), post("a", 3)], "b": [post("b", 1), post("b", 2)]}
    assert await store.posts_after_many({"a": -1}) == {"a": await store.posts_after("a", 0)}
    assert await store.posts_after_many({}) == {}
    jobs = [f"p{i:04}" for i in range(1200)]  # more than one round of a batched read
    async with anyio.create_task_group() as tg:
        for job_id in jobs:
            tg.start_soon(store.append_post, post(job_id, 1))
    assert await store.posts_after_many(dict.fromkeys(jobs, 0)) == {job_id: [post(job_id, 1)] for job_id in jobs}
    assert await store.posts_after_many(dict.fromkeys(jobs, 1)) == {}


async def _live_with_resumables(store, job_ids: list[str], *, at: int = 0) -> None:
    for i, job_id in enumerate(job_ids):
        await store.put_job(job(job_id, at=at + i))
        await store.put_checkpoint(checkpoint(job_id, posts=1))
        await store.append_post(post(job_id, 1))
        await store.append_post(post(job_id, 2))


async def test_a_job_that_ends_loses_its_checkpoint_and_posts(store) -> None:
    await _live_with_resumables(store, ["by-record", "by-put", "paused", "waits"])
    store.record_job(job("by-record", status="completed", completed_at=T0))
    await store.put_job(job("by-put", status="failed", completed_at=T0))
    await store.put_job(job("paused", status="paused"))  # not an end: kept
    store.record_job(job("waits", status="pending"))
    await store.flush()
    for job_id in ("by-record", "by-put"):
        assert await _resumable(store, job_id) == (None, [])
    for job_id in ("paused", "waits"):
        got, posts = await _resumable(store, job_id)
        assert got == checkpoint(job_id, posts=1) and [p.n for p in posts] == [1, 2]
    assert [c.job_id for c in await store.list_checkpoints()] == ["paused", "waits"]


async def test_delete_and_prune_take_checkpoints_and_posts_with_the_job(store) -> None:
    await _live_with_resumables(store, ["d1", "d2", "p1", "p2"])
    assert await store.delete_jobs(["d1"]) == 1
    assert await _resumable(store, "d1") == (None, [])
    # A terminal record already dropped them; prune must leave nothing behind either, including
    # posts of a job that were stored before it had a record.
    await store.append_post(post("early", 1))
    store.record_job(job("early", at=-5, status="completed", completed_at=T0))
    await store.flush()
    assert await store.prune_jobs(keep=0) == ["early"]
    assert await _resumable(store, "early") == (None, [])
    assert (await _resumable(store, "d2"))[0] == checkpoint("d2", posts=1)
    assert await store.delete_jobs(["d2", "p1"]) == 2
    assert [c.job_id for c in await store.list_checkpoints()] == ["p2"]
    assert [p.n for p in await store.posts_after("p2", 0)] == [1, 2]


async def test_mark_interrupted_drops_checkpoints_and_posts_except_the_kept_jobs(store) -> None:
    await _live_with_resumables(store, ["a", "b", "c", "d"])
    store.record_job(job("done", at=10, status="completed", completed_at=T0))
    await store.flush()
    marked = await store.mark_interrupted("the server restarted", keep={"b", "d", "done", "missing"})
    assert marked == ["a", "c"]  # oldest first; "done" was terminal anyway
    for job_id in ("a", "c"):
        assert (await store.get_job(job_id)).status == "failed"
        assert await _resumable(store, job_id) == (None, [])
    for job_id in ("b", "d"):
        assert (await store.get_job(job_id)).status == "running"
        got, posts = await _resumable(store, job_id)
        assert got == checkpoint(job_id, posts=1) and [p.n for p in posts] == [1, 2]
    assert [c.job_id for c in await store.list_checkpoints()] == ["b", "d"]
    assert await store.mark_interrupted("again", keep=["b", "d"]) == []
    assert await store.mark_interrupted("at last") == ["b", "d"]  # the default keeps nothing
    assert await store.list_checkpoints() == []


async def test_concurrent_checkpoints_and_posts_all_land(store) -> None:
    job_ids = [f"c{i:02}" for i in range(50)]
    for i, job_id in enumerate(job_ids):
        store.record_job(job(job_id, at=i))
    await store.flush()

    async with anyio.create_task_group() as tg:
        for i, job_id in enumerate(job_ids):
            tg.start_soon(store.put_checkpoint, checkpoint(job_id, posts=i))
            tg.start_soon(store.append_post, post("shared", i + 1))
            tg.start_soon(store.append_post, post(job_id, 1))
    listed = await store.list_checkpoints()
    assert [(c.job_id, c.posts) for c in listed] == [(job_id, i) for i, job_id in enumerate(job_ids)]
    assert [p.n for p in await store.posts_after("shared", 0)] == list(range(1, 51))
    for job_id in job_ids:
        assert [p.n for p in await store.posts_after(job_id, 0)] == [1]

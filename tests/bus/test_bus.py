"""The event bus: filtering, bounded buffers, and telling a slow subscriber what it lost."""

from __future__ import annotations

from datetime import UTC, datetime

import anyio
import msgspec
import pytest

from routilux.bus import Event, EventBus, Gap, SubscriptionClosed, capture, decode_captured, event_to_builtins


def ev(seq: int, job: str = "j1", flow: str = "f1", type_: str = "log") -> Event:
    return Event(seq=seq, type=type_, job_id=job, flow_id=flow, routine_id=None,
                 timestamp=datetime(2026, 1, 18, 12, 0, 0, 123000, tzinfo=UTC), data={})


def drain(sub) -> list:
    out = []
    while (item := sub.receive_nowait()) is not None:
        out.append(item)
    return out


def test_the_wire_form_matches_the_design() -> None:
    out = event_to_builtins(Event(seq=12, type="routine_start", job_id="j", flow_id="f", routine_id="processor",
                                  timestamp=datetime(2026, 1, 18, 12, 0, 0, 123000, tzinfo=UTC),
                                  data={"x": capture({"a": 1})}))
    assert out == {"seq": 12, "type": "routine_start", "job_id": "j", "flow_id": "f", "routine_id": "processor",
                   "timestamp": "2026-01-18T12:00:00.123000Z", "data": {"x": {"a": 1}}}
    assert event_to_builtins(Gap("j", 3, 9)) == {"type": "gap", "job_id": "j", "from_seq": 3, "to_seq": 9}


def test_payloads_are_snapshotted_and_truncated_with_a_mark() -> None:
    item = {"data": [1, 2]}
    snap = capture(item)
    item["data"].append(3)
    assert decode_captured(snap) == {"data": [1, 2]}
    big = capture({"data": "x" * 10_000}, limit=100)
    assert big["truncated"] is True and big["size"] > 10_000 and len(big["preview"]) == 100
    assert decode_captured(capture(object()))  # unknown types are shown by repr, not an error


def test_filters_by_job_flow_and_type() -> None:
    bus = EventBus()
    by_job = bus.subscribe(job_ids=["j1"])
    by_flow = bus.subscribe(flow_ids=["f2"])
    both = bus.subscribe(job_ids=["j1"], flow_ids=["f1"])
    logs_only = bus.subscribe(types=["log"])
    everything = bus.subscribe()
    bus.publish(ev(1, "j1", "f1"))
    bus.publish(ev(1, "j2", "f2", "job_start"))
    bus.publish(ev(2, "j1", "f1", "job_end"))
    assert [(e.job_id, e.seq) for e in drain(by_job)] == [("j1", 1), ("j1", 2)]
    assert [(e.job_id, e.seq) for e in drain(by_flow)] == [("j2", 1)]
    assert [(e.job_id, e.seq) for e in drain(both)] == [("j1", 1), ("j1", 2)]  # no duplicates
    assert [e.type for e in drain(logs_only)] == ["log"]
    assert len(drain(everything)) == 3


def test_filters_can_change_while_subscribed() -> None:
    bus = EventBus()
    sub = bus.subscribe(job_ids=["a"])
    sub.add_job("b")
    sub.remove_job("a")
    sub.add_flow("f9")
    bus.publish(ev(1, "a"))
    bus.publish(ev(1, "b"))
    bus.publish(ev(1, "c", "f9"))
    assert [e.job_id for e in drain(sub)] == ["b", "c"]
    sub.remove_job("b")
    sub.remove_flow("f9")
    assert sub.is_wildcard  # no filters left: it now sees everything
    bus.publish(ev(2, "z"))
    assert [e.job_id for e in drain(sub)] == ["z"]


def test_overflow_tells_the_subscriber_exactly_which_seqs_it_lost() -> None:
    bus = EventBus()
    sub = bus.subscribe(buffer=3)
    for seq in range(1, 11):
        bus.publish(ev(seq))
    assert sub.dropped == 7
    assert [e.seq for e in drain(sub)] == [1, 2, 3]
    bus.publish(ev(11))
    items = drain(sub)
    assert items == [Gap("j1", 4, 10), ev(11)]


def test_losses_are_tracked_per_job() -> None:
    bus = EventBus()
    sub = bus.subscribe(buffer=2)
    bus.publish(ev(1, "a"))
    bus.publish(ev(1, "b"))
    bus.publish(ev(2, "a"))
    bus.publish(ev(2, "b"))
    bus.publish(ev(3, "b"))
    assert [(e.job_id, e.seq) for e in drain(sub)] == [("a", 1), ("b", 1)]
    bus.publish(ev(3, "a"))
    bus.publish(ev(4, "b"))
    assert drain(sub) == [Gap("a", 2, 2), ev(3, "a")]
    bus.publish(ev(5, "b"))
    assert drain(sub) == [Gap("b", 2, 4), ev(5, "b")]


def test_a_slow_subscriber_does_not_affect_a_fast_one() -> None:
    bus = EventBus()
    slow = bus.subscribe(buffer=1)
    fast = bus.subscribe(buffer=1000)
    for seq in range(1, 101):
        bus.publish(ev(seq))
    assert len(drain(fast)) == 100
    assert slow.dropped == 99


async def test_receive_waits_and_close_ends_iteration() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    got: list[int] = []

    async def reader() -> None:
        async for item in sub:
            got.append(item.seq)

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await anyio.wait_all_tasks_blocked()
        bus.publish(ev(1))
        bus.publish(ev(2))
        await anyio.wait_all_tasks_blocked()
        sub.close()
    assert got == [1, 2]
    assert bus.subscriber_count == 0
    with pytest.raises(SubscriptionClosed):
        await sub.receive()
    with pytest.raises(SubscriptionClosed):
        sub.add_job("x")


def test_events_encode_fast_and_as_json() -> None:
    raw = msgspec.json.encode(ev(1))
    assert raw.startswith(b'{"seq":1,"type":"log"')

"""Feeds: each event of a watched job is kept once, however many readers watch it, and every
reader reads it at its own pace; a reader that loses events is told exactly which."""

from __future__ import annotations

import time
from typing import Any

import msgspec
import pytest

from routilux.bus import Event, EventBus, Gap
from routilux.bus import feed as feed_module
from routilux.bus.feed import FeedReader


def event(seq: int, job: str = "j", flow: str = "f", type_: str = "log") -> Event:
    return Event(seq=seq, type=type_, job_id=job, flow_id=flow, routine_id=None, timestamp="2026-01-01T00:00:00Z",
                 data={"n": seq})


def read(reader: FeedReader, max_bytes: int = 1 << 30, sent: dict[str, int] | None = None) -> list[Any]:
    """What the reader hands over, decoded: ``("e", job, seq)`` per event, ``("gap", job, from, to)``."""
    out: list[bytes] = []
    reader.take(out, {} if sent is None else sent, max_bytes)
    frames = []
    for raw in out:
        frame = msgspec.json.decode(raw)
        if frame["type"] == "gap":
            frames.append(("gap", frame["job_id"], frame["from_seq"], frame["to_seq"]))
        else:
            frames.append(("e", frame["job_id"], frame["seq"]))
    return frames


def test_an_event_is_kept_once_however_many_readers_watch_its_job() -> None:
    bus = EventBus()
    readers = [bus.feeds.reader(job_ids=["j"]) for _ in range(100)]
    for seq in range(1, 4):
        bus.publish(event(seq))
    (feed,) = bus.feeds.all()
    assert feed.end - feed.start == 3
    assert bus.feeds.retained_bytes == sum(len(feed.at(p)[3]) for p in range(feed.start, feed.end))
    for reader in readers:
        assert read(reader) == [("e", "j", 1), ("e", "j", 2), ("e", "j", 3)]
    assert bus.has_subscribers("j", "f") and not bus.has_subscribers("other", "g")


def test_each_reader_reads_at_its_own_pace_in_batches_bounded_by_bytes() -> None:
    bus = EventBus()
    fast, slow = bus.feeds.reader(job_ids=["j"]), bus.feeds.reader(job_ids=["j"])
    for seq in range(1, 11):
        bus.publish(event(seq))
    size = len(bus.feeds.all()[0].at(0)[3])
    assert read(fast) == [("e", "j", s) for s in range(1, 11)]
    first = read(slow, max_bytes=3 * size)
    assert first == [("e", "j", s) for s in range(1, 4)]
    assert read(slow, max_bytes=1) == [("e", "j", 4)], "a batch holds at least one event"
    assert read(slow) == [("e", "j", s) for s in range(5, 11)]
    assert read(fast) == read(slow) == []


def test_a_reader_that_falls_behind_the_feed_gets_one_exact_gap_then_the_next_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(feed_module, "FEED_EVENTS", 5)
    bus = EventBus()
    behind = bus.feeds.reader(job_ids=["j"])
    for seq in range(1, 4):
        bus.publish(event(seq))
    assert read(behind) == [("e", "j", 1), ("e", "j", 2), ("e", "j", 3)]
    for seq in range(4, 20):
        bus.publish(event(seq))
    assert read(behind) == [("gap", "j", 4, 14), *[("e", "j", s) for s in range(15, 20)]]
    assert behind.dropped == 11


def test_a_reader_that_never_read_is_told_from_its_first_due_event(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feed_module, "FEED_EVENTS", 5)
    bus = EventBus()
    bus.publish(event(1))  # nobody watches yet: not kept
    reader = bus.feeds.reader(job_ids=["j"])
    for seq in range(2, 12):
        bus.publish(event(seq))
    assert read(reader) == [("gap", "j", 2, 6), *[("e", "j", s) for s in range(7, 12)]]


def test_a_client_that_stopped_reading_keeps_only_its_newest_events() -> None:
    bus = EventBus()
    sleeper = bus.feeds.reader(job_ids=["j"], capacity=3)
    for seq in range(1, 11):
        bus.publish(event(seq))
    sleeper.skip_to_newest()
    assert read(sleeper) == [("gap", "j", 1, 7), ("e", "j", 8), ("e", "j", 9), ("e", "j", 10)]


def test_a_blocked_reader_does_not_hold_more_than_its_newest_events_in_memory() -> None:
    bus = EventBus()
    reader = bus.feeds.reader(job_ids=["j"], capacity=10)
    reader.blocked_since = time.monotonic() - 1.0  # its client has taken nothing for a second
    for seq in range(1, 2001):
        bus.publish(event(seq))
    (feed,) = bus.feeds.all()
    assert feed.end - feed.start <= 2 * 10 + feed_module._TRIM_EVERY
    reader.blocked_since = None
    frames = read(reader)
    assert frames[0][:2] == ("gap", "j") and frames[0][2] == 1
    assert frames[1:] == [("e", "j", s) for s in range(frames[0][3] + 1, 2001)]


def test_events_every_reader_has_read_are_let_go() -> None:
    bus = EventBus()
    readers = [bus.feeds.reader(job_ids=["j"]) for _ in range(3)]
    for seq in range(1, 1001):
        bus.publish(event(seq))
        for reader in readers:
            read(reader)
    (feed,) = bus.feeds.all()
    assert feed.end - feed.start <= feed_module._TRIM_EVERY
    for reader in readers:
        reader.close()
    assert bus.feeds.all() == [] and bus.feeds.retained_bytes == 0
    assert not bus.has_subscribers("j", "f")


def test_a_flow_reader_reads_jobs_started_later_in_publish_order() -> None:
    bus = EventBus()
    reader = bus.feeds.reader(flow_ids=["f"])
    bus.publish(event(1, job="a"))
    bus.publish(event(1, job="b"))
    bus.publish(event(2, job="a"))
    bus.publish(event(1, job="other", flow="g"))
    bus.publish(event(2, job="b"))
    assert read(reader) == [("e", "a", 1), ("e", "b", 1), ("e", "a", 2), ("e", "b", 2)]


def test_a_job_followed_twice_is_read_once_and_unfollowing_one_way_keeps_the_other() -> None:
    bus = EventBus()
    reader = bus.feeds.reader(job_ids=["a"], flow_ids=["f"])
    bus.publish(event(1, job="a"))
    assert read(reader) == [("e", "a", 1)]
    reader.remove_flow("f")
    bus.publish(event(2, job="a"))
    assert read(reader) == [("e", "a", 2)]
    reader.remove_job("a")
    bus.publish(event(3, job="a"))
    assert read(reader) == [] and bus.feeds.all() == []


def test_types_filter_what_a_reader_gets_and_a_gap_from_the_publisher_arrives_in_place() -> None:
    bus = EventBus()
    reader = bus.feeds.reader(job_ids=["j"], types=["routine_start"])
    bus.publish(event(1, type_="routine_start"))
    bus.publish(event(2))
    bus.publish_gap(Gap(job_id="j", from_seq=3, to_seq=5), "f")
    bus.publish(event(6, type_="routine_start"))
    assert read(reader) == [("e", "j", 1), ("gap", "j", 3, 5), ("e", "j", 6)]


def test_what_the_client_was_already_told_is_not_sent_again() -> None:
    bus = EventBus()
    reader = bus.feeds.reader(job_ids=["j"])
    for seq in range(1, 6):
        bus.publish(event(seq))
    sent = {"j": 3}  # its snapshot said seq 3
    assert read(reader, sent=sent) == [("e", "j", 4), ("e", "j", 5)]
    assert sent == {"j": 5}


def test_the_job_end_releases_the_feed() -> None:
    bus = EventBus()
    reader = bus.feeds.reader(job_ids=["j"])
    bus.publish(event(1))
    bus.publish(event(2, type_="job_end"))
    assert read(reader) == [("e", "j", 1), ("e", "j", 2)]
    assert reader.ended == ["j"]
    assert bus.feeds.all() == [] and bus.feeds.retained_bytes == 0


def test_parked_readers_are_woken_once_per_batch_not_per_event() -> None:
    bus = EventBus()
    calls = []
    bus.feeds.on_data = lambda: calls.append(1)
    readers = [bus.feeds.reader(job_ids=["j"]) for _ in range(50)]
    for reader in readers:
        reader.park()
    for seq in range(1, 101):
        bus.publish(event(seq))
    assert len(calls) == 1
    woken = bus.feeds.take_dirty()
    assert sorted(map(id, woken)) == sorted(map(id, readers))
    bus.publish(event(101))
    assert len(calls) == 1 and bus.feeds.take_dirty() == [], "nobody is parked: nobody to wake"

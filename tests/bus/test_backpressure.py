"""Back-pressure: a subscriber that must not lose events holds producers back, within a bound.

A pressing subscription congests the bus once its buffer is half full; producers that can wait
(``await bus.wait_for_room(timeout)``) then wait until it drained to a quarter, or until their
bound runs out. Ordinary subscribers never congest anything: a slow dashboard only loses events.
"""

from __future__ import annotations

from datetime import UTC, datetime

import anyio

from routilux.bus import Event, EventBus


def ev(seq: int, job: str = "j1") -> Event:
    return Event(seq=seq, type="log", job_id=job, flow_id="f", routine_id=None,
                 timestamp=datetime(2026, 1, 18, tzinfo=UTC), data={})


def test_a_pressing_subscriber_congests_the_bus_at_half_its_buffer() -> None:
    bus = EventBus()
    bus.subscribe(buffer=8, presses=True)
    for seq in range(1, 4):
        bus.publish(ev(seq))
    assert not bus.congested
    bus.publish(ev(4))
    assert bus.congested


def test_an_ordinary_subscriber_never_congests_the_bus() -> None:
    bus = EventBus()
    sub = bus.subscribe(buffer=4)
    for seq in range(1, 20):
        bus.publish(ev(seq))
    assert not bus.congested
    assert sub.dropped == 15


async def test_congestion_lifts_once_the_subscriber_drains_to_a_quarter() -> None:
    bus = EventBus()
    sub = bus.subscribe(buffer=8, presses=True)
    for seq in range(1, 7):
        bus.publish(ev(seq))
    assert bus.congested
    for _ in range(3):
        sub.receive_nowait()
    assert bus.congested  # 3 left: above a quarter (2)
    sub.receive_nowait()
    assert not bus.congested


async def test_a_waiting_producer_is_released_when_the_subscriber_catches_up() -> None:
    bus = EventBus()
    sub = bus.subscribe(buffer=8, presses=True)
    for seq in range(1, 5):
        bus.publish(ev(seq))
    released: list[bool] = []

    async def producer() -> None:
        released.append(await bus.wait_for_room(30))

    async with anyio.create_task_group() as tg:
        tg.start_soon(producer)
        await anyio.wait_all_tasks_blocked()
        assert released == []  # held back while the subscriber is behind
        batch = await sub.receive_batch()
        assert [e.seq for e in batch] == [1, 2, 3, 4]
    assert released == [True]
    assert bus.congestions == 1


async def test_the_wait_is_bounded_and_says_there_is_still_no_room() -> None:
    bus = EventBus()
    bus.subscribe(buffer=2, presses=True)
    bus.publish(ev(1))
    assert bus.congested
    with anyio.fail_after(5):
        assert await bus.wait_for_room(0.05) is False


async def test_closing_a_pressing_subscriber_releases_its_producers() -> None:
    bus = EventBus()
    sub = bus.subscribe(buffer=2, presses=True)
    bus.publish(ev(1))
    released: list[bool] = []

    async def producer() -> None:
        released.append(await bus.wait_for_room(30))

    async with anyio.create_task_group() as tg:
        tg.start_soon(producer)
        await anyio.wait_all_tasks_blocked()
        sub.close()
    assert released == [True]


async def test_an_uncongested_bus_costs_no_wait() -> None:
    bus = EventBus()
    bus.subscribe(buffer=100, presses=True)
    assert await bus.wait_for_room(0) is True
    assert bus.congestions == 0

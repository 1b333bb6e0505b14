"""The batch-consumer skeleton: batches in order, gaps accounted for, failures contained or not,
and a clean stop."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import anyio
import pytest

from routilux.bus import Event, EventBus, Gap
from routilux.bus.consumer import BatchConsumer


def ev(seq: int, job: str = "j1") -> Event:
    return Event(seq=seq, type="log", job_id=job, flow_id="f", routine_id=None,
                 timestamp=datetime(2026, 1, 18, tzinfo=UTC), data={})


class Collecting(BatchConsumer):
    lost_message = "test consumer lost %s..%s of job %s"

    def __init__(self, bus: EventBus, buffer: int = 100) -> None:
        super().__init__(bus, buffer=buffer)
        self.batches: list[list[Event | Gap]] = []

    async def consume(self, batch: list[Event | Gap]) -> None:
        self.batches.append(batch)
        for item in batch:
            if isinstance(item, Gap):
                self.count_lost(item)


class Failing(Collecting):
    failed_batch_message = "test consumer: a batch of %d failed"

    async def consume(self, batch: list[Event | Gap]) -> None:
        await super().consume(batch)
        if len(self.batches) == 1:
            raise RuntimeError("bug")


class FailingUncontained(Failing):
    failed_batch_message = None


async def test_batches_arrive_in_order_and_the_consumer_stops_when_the_bus_closes() -> None:
    bus = EventBus()
    consumer = Collecting(bus)
    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer.run)
        for seq in range(1, 4):
            bus.publish(ev(seq))
        await anyio.sleep(0.01)
        bus.publish(ev(4))
        assert consumer.pending == 1
        bus.close()
        await consumer.finished.wait()
    assert [[e.seq for e in b if isinstance(e, Event)] for b in consumer.batches] == [[1, 2, 3], [4]]


async def test_a_lost_range_is_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    consumer = Collecting(bus, buffer=3)
    with caplog.at_level(logging.WARNING, logger="routilux.bus"):
        async with anyio.create_task_group() as tg:
            for seq in range(1, 7):
                bus.publish(ev(seq))  # 1..3 queued, 4..6 lost
            assert consumer.dropped == 3
            tg.start_soon(consumer.run)
            await anyio.sleep(0.01)
            bus.publish(ev(7))  # told of 4..6 just before it
            consumer.close()
    assert consumer.finished.is_set()
    assert consumer.lost == 3
    assert [type(i).__name__ for i in consumer.batches[-1]] == ["Gap", "Event"]
    assert "test consumer lost 4..6 of job j1" in caplog.text


async def test_a_failing_batch_is_contained_only_when_the_consumer_says_so() -> None:
    bus = EventBus()
    failing = Failing(bus)
    strict = FailingUncontained(bus)
    bus.publish(ev(1))
    failing.close()
    await failing.run()
    assert failing.failed_batches == 1
    strict.close()
    with pytest.raises(RuntimeError):
        await strict.run()
    assert strict.finished.is_set()

"""The batch writer names what it could not write: events of a failed batch come back, once
writes succeed again, as one ``gap`` entry per job and lost range (never a silent hole)."""

from __future__ import annotations

import anyio

from routilux.bus import decode_gap
from routilux.store.base import StoredEvent
from routilux.store.batch_writer import BatchWriter, Op, Written
from routilux.store.errors import StoreError
from routilux.store.segments import NewestEvents


class Disk:
    """A backend whose writes fail while ``full`` is set, and keep what they wrote otherwise."""

    def __init__(self) -> None:
        self.full = False
        self.events: list[StoredEvent] = []

    async def write(self, batch: list[NewestEvents | Op]) -> Written:
        if self.full:
            raise OSError("No space left on device")
        rows = 0
        for item in batch:
            if isinstance(item, NewestEvents):
                for kept in item.events.values():
                    self.events.extend(kept)
                    rows += len(kept)
        return Written(rows=rows, lost=0)


def events(job_id: str, seqs: range) -> list[StoredEvent]:
    return [StoredEvent(job_id, seq, "log", b"{}") for seq in seqs]


async def test_events_lost_to_a_failed_write_are_recorded_as_gaps_once_writes_work_again() -> None:
    disk = Disk()
    writer: BatchWriter[NewestEvents] = BatchWriter(
        location="test", new_segment=lambda: NewestEvents(1000), write=disk.write,
        error_of=lambda exc: StoreError(str(exc), location="test"), batch_max=100,
        max_pending_events=10_000,
    )
    with anyio.fail_after(10):
        await writer.start()
        writer.record_events(events("a", range(1, 4)))
        await writer.flush()
        disk.full = True
        writer.record_events(events("a", range(4, 8)) + events("b", range(1, 3)))
        try:
            await writer.flush()
        except StoreError:
            pass
        assert writer.write_error is not None
        writer.record_events(events("a", range(8, 10)))  # fails too: the range grows to 4..9
        try:
            await writer.flush()
        except StoreError:
            pass
        disk.full = False
        writer.record_events(events("a", range(10, 11)))
        await writer.flush()
        await writer.flush()  # the gap entries, queued when the write succeeded
        await writer.stop()
        await writer.aclose()
    stored = {(e.job_id, e.seq): e for e in disk.events}
    assert sorted(stored) == [("a", 1), ("a", 2), ("a", 3), ("a", 9), ("a", 10), ("b", 2)]
    assert stored["a", 9].type == "gap" and decode_gap(stored["a", 9].payload) == (4, 9)
    assert stored["b", 2].type == "gap" and decode_gap(stored["b", 2].payload) == (1, 2)
    assert writer.write_error is None
    assert writer.stats().lost_records == 8


class Link:
    """A backend whose writes fail as unreachable while ``down`` is set; it keeps each batch's
    shape (``"ops"`` for operations, ``"records"`` for segments) and the events it wrote."""

    def __init__(self) -> None:
        self.down = False
        self.batches: list[list[str]] = []
        self.events: list[StoredEvent] = []
        self.gate: anyio.Event | None = None  # set: writes wait until it is

    async def write(self, batch: list[NewestEvents | Op]) -> Written:
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise ConnectionError("connection refused")
        self.batches.append(["op" if isinstance(item, Op) else "records" for item in batch])
        for item in batch:
            if isinstance(item, Op):
                item.result = item.args
            else:
                for kept in item.events.values():
                    self.events.extend(kept)
        return Written(rows=len(batch), lost=0)


def link_writer(link: Link) -> BatchWriter[NewestEvents]:
    return BatchWriter(
        location="test", new_segment=lambda: NewestEvents(1000), write=link.write,
        error_of=lambda exc: StoreError(str(exc), location="test"), batch_max=100,
        max_pending_events=10_000, retryable=lambda exc: isinstance(exc, ConnectionError),
    )


async def test_operations_share_a_batch_with_the_records_around_them_unless_alone() -> None:
    """What queues while a batch is being written goes out together next, in order; an
    operation ``alone`` (several dependent steps) is a batch of its own."""
    link = Link()
    writer = link_writer(link)
    answers: list[object] = []

    async def submit(name: str, alone: bool = False) -> None:
        answers.append(await writer.submit(print, name, alone=alone))

    with anyio.fail_after(10):
        await writer.start()
        link.gate = anyio.Event()
        writer.record_events(events("a", range(1, 2)))  # the writer takes it, and waits at the gate
        while writer.stats().pending_events:
            await anyio.sleep(0.001)
        async with anyio.create_task_group() as tg:
            for queued, name in enumerate(("start", "post", "prune", "checkpoint"), 1):
                tg.start_soon(submit, name, name == "prune")
                while writer.stats().pending_ops < queued:  # queued, in this order
                    await anyio.sleep(0.001)
            writer.record_events(events("a", range(2, 4)))
            link.gate.set()
        await writer.stop()
        await writer.aclose()
    assert link.batches == [["records"], ["op", "op"], ["op"], ["op", "records"]]
    assert answers == [("start",), ("post",), ("prune",), ("checkpoint",)]
    assert [e.seq for e in link.events] == [1, 2, 3]


async def test_when_the_backend_is_unreachable_a_batchs_operations_fail_now_and_its_records_wait() -> None:
    link = Link()
    writer = link_writer(link)
    answers: dict[str, str] = {}

    async def submit(name: str) -> None:
        try:
            await writer.submit(print, name)
            answers[name] = "ok"
        except StoreError as exc:
            answers[name] = f"failed: {exc.message}"

    with anyio.fail_after(10):
        await writer.start()
        await writer.submit(print, "warm-up")  # the writer now waits for work
        link.down = True
        async with anyio.create_task_group() as tg:  # one batch: the start, then the records
            tg.start_soon(submit, "start")
            writer.record_events(events("a", range(1, 4)))
        assert answers == {"start": "failed: connection refused"}  # at once, not after Redis is back
        assert writer.write_error is not None and writer.stats().pending_events == 3
        link.down = False
        while writer.stats().pending_events:  # the records were kept: written at the next attempt
            await anyio.sleep(0.01)
        await writer.stop()
        await writer.aclose()
    assert [e.seq for e in link.events] == [1, 2, 3]
    assert writer.stats().lost_records == 0 and writer.write_error is None


async def test_records_alone_gather_and_an_operation_or_a_stop_never_waits_for_them() -> None:
    """After a batch, records wait to gather (here a long 60 s, to see it); an awaited operation
    queued behind them is written at once, and takes them along; a stop writes what is left."""
    link = Link()
    writer: BatchWriter[NewestEvents] = BatchWriter(
        location="test", new_segment=lambda: NewestEvents(1000), write=link.write,
        error_of=lambda exc: StoreError(str(exc), location="test"), batch_max=100,
        max_pending_events=10_000, gather_seconds=60,
    )
    with anyio.fail_after(10):
        await writer.start()
        writer.record_events(events("a", range(1, 2)))  # the first batch starts at once
        while writer.stats().batches < 1:
            await anyio.sleep(0.001)
        writer.record_events(events("a", range(2, 4)))
        await anyio.sleep(0.2)
        assert writer.stats().pending_events == 2  # gathering
        assert await writer.submit(print, "post") == ("post",)
        assert link.batches == [["records"], ["records", "op"]]
        writer.record_events(events("a", range(4, 5)))
        await writer.stop()
        await writer.aclose()
    assert link.batches[-1] == ["records"] and [e.seq for e in link.events] == [1, 2, 3, 4]

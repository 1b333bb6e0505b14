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
        max_pending_events=10_000, ops_join_batches=True,
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

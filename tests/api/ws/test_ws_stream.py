"""The outgoing stream of one socket, in-process: room on a full queue wakes every waiter."""

from __future__ import annotations

import anyio

from routilux.api.ws.stream import OutgoingStream, QueuedBytes


async def test_two_waiters_for_room_are_both_woken_when_the_sender_takes_events() -> None:
    """The pump (live events) and a replay may both wait for room at once; a lost wake-up
    leaves the socket silent for good."""
    stream = OutgoingStream(capacity=2)
    stream.event("j", 1, b"1")
    stream.event("j", 2, b"2")
    assert stream.full
    woken: list[str] = []

    async def wait(name: str) -> None:
        await stream.wait_for_room()
        woken.append(name)

    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait, "pump")
            tg.start_soon(wait, "replay")
            await anyio.wait_all_tasks_blocked()
            assert woken == []
            assert await stream.next_batch() == [b"1", b"2"]
    assert sorted(woken) == ["pump", "replay"]


async def test_a_waiter_that_arrives_after_the_wake_up_waits_for_the_next_one() -> None:
    stream = OutgoingStream(capacity=1)
    stream.event("j", 1, b"1")
    await stream.next_batch()  # room: sets the event and arms a fresh one
    stream.event("j", 2, b"2")
    assert stream.full
    with anyio.move_on_after(0.1) as scope:
        await stream.wait_for_room()  # still full: must wait, not see the old wake-up
    assert scope.cancelled_caught


def test_two_losses_with_a_queued_event_between_are_told_as_two_gaps_in_place() -> None:
    """A gap names only seqs that were not sent: a later loss is never merged over an event
    still queued before it."""
    stream = OutgoingStream(capacity=10)
    stream.lost("j", 1, 2)
    stream.event("j", 3, b"3")
    stream.lost("j", 4, 6)
    stream.lost("j", 7, 7)  # touches the previous one: the same gap
    stream.event("j", 8, b"8")
    assert stream.take() == [
        b'{"type":"gap","job_id":"j","from_seq":1,"to_seq":2}', b"3",
        b'{"type":"gap","job_id":"j","from_seq":4,"to_seq":7}', b"8",
    ]


def test_every_queued_byte_is_counted_for_the_servers_cap_until_it_is_taken() -> None:
    queued = QueuedBytes()
    a, b = OutgoingStream(10, queued), OutgoingStream(10, queued)
    a.control(b"x" * 100)
    b.event("j", 1, b"y" * 50)
    assert queued.total == 150 and a.queued_bytes == 100
    a.take()
    assert queued.total == 50
    b.discard()
    assert queued.total == 0 and b.take() == []

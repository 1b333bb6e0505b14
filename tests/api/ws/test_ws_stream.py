"""The outgoing stream of one socket, in-process: room on a full queue wakes every waiter."""

from __future__ import annotations

import anyio

from routilux.api.ws.stream import OutgoingStream


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

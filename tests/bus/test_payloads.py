"""Every event the engine publishes has the documented payload of its type (routilux.bus.payloads),
exactly: a key added, renamed or dropped on either side fails here."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from routilux.bus import EVENT_TYPES, Event, Gap, capture, encode_event
from routilux.bus.payloads import PAYLOADS, BreakpointHit, JobEnd, RoutineEnd, SlotCall, Truncated, payload_of
from routilux.engine import Engine, EngineSettings, Entry, ErrorHandler, JobOptions, JobStatus
from tests.support.routines import chain, make_registry


def test_every_event_type_has_a_payload() -> None:
    assert set(PAYLOADS) == EVENT_TYPES


def check(events: list[Event | Gap]) -> set[str]:
    seen = set()
    for event in events:
        assert isinstance(event, Event)
        payload_of(event)
        # what a socket or the store receives decodes the same way
        data = msgspec.json.decode(encode_event(event))["data"]
        msgspec.convert(data, PAYLOADS[event.type])
        seen.add(event.type)
    return seen


async def drained(sub: Any) -> list[Event | Gap]:
    out = []
    while (item := sub.receive_nowait()) is not None:
        out.append(item)
    return out


async def test_what_a_job_publishes_matches_the_payload_schema() -> None:
    seen: set[str] = set()
    settings = EngineSettings(job_options=JobOptions(preview_bytes=16))
    async with Engine(registry=make_registry(), settings=settings) as engine:
        sub = engine.bus.subscribe()
        job = await engine.start_job(chain("p", "Chatty", "Relay", "Collect"),
                                     entries=[Entry("r0", "input", n) for n in range(3)], complete_when_idle=True)
        assert await job.wait(5) is JobStatus.COMPLETED
        seen |= check(await drained(sub))

        flaky = chain("q", "Flaky", "Boom", r0={"error_handler": ErrorHandler(strategy="retry", max_retries=2)},
                      r1={"error_handler": ErrorHandler(strategy="stop")})
        job = await engine.start_job(flaky, entries=[Entry("r0", "input", 1)], timeout=30)
        assert await job.wait(5) is JobStatus.FAILED
        events = await drained(sub)
        seen |= check(events)
        ends = [payload_of(e) for e in events if isinstance(e, Event) and e.type == "routine_end"]
        assert [(e.status, e.error is not None) for e in ends if isinstance(e, RoutineEnd)] == [
            ("retrying", True), ("completed", False), ("failed", True)]
        end = payload_of(events[-1])
        assert isinstance(end, JobEnd) and end.status is JobStatus.FAILED and end.error is not None
        assert end.error.routine_id == "r1" and end.error.traceback

        job = await engine.start_job(chain("r", "Collect"))
        job.pause("look")
        job.resume()
        await job.post("r0", "input", {"text": "x" * 100})
        job.cancel("enough")
        events = await drained(sub)
        seen |= check(events)
        calls = [payload_of(e) for e in events if isinstance(e, Event) and e.type == "slot_call"]
        assert isinstance(calls[0], SlotCall) and Truncated(**calls[0].data) == Truncated(True, 111, '{"text":"xxxxxxx')
    assert seen == EVENT_TYPES - {"breakpoint_hit", "debug_step"}  # the debugger's own: below


def test_the_debuggers_stops_match_the_payload_schema() -> None:
    at = {"breakpoint_id": "bp1", "type": "routine", "routine_id": "r0", "slot": None, "event": None,
          "reason": "breakpoint bp1", "at": datetime(2026, 1, 18, tzinfo=UTC)}
    hit = Event(1, "breakpoint_hit", "j", "f", "r0", datetime.now(UTC), {**at, "data": capture([1]), "hit_count": 1})
    step = Event(2, "debug_step", "j", "f", "r0", datetime.now(UTC), {**at, "data": capture([1])})
    assert payload_of(hit) == BreakpointHit(**{**at, "data": [1], "hit_count": 1})
    payload_of(step)
    with pytest.raises(msgspec.ValidationError):
        payload_of(Event(3, "debug_step", "j", "f", "r0", datetime.now(UTC), {**at, "data": None, "hit_count": 1}))

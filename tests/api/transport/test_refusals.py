"""Refusals at the socket are logged with their counts, at most one line a minute."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import cast

import pytest

from routilux.api.transport.refusals import Refusals


class Timer:
    def __init__(self, when: float, call: Callable[[], None]) -> None:
        self.when, self.call, self.cancelled = when, call, False

    def cancel(self) -> None:
        self.cancelled = True


class Clock:
    """Only what :class:`Refusals` uses of an event loop: its time and timers (run by hand)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.timers: list[Timer] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[..., None], *args: object) -> Timer:
        self.timers.append(Timer(when, lambda: callback(*args)))
        return self.timers[-1]

    def run_due(self) -> None:
        due = [t for t in self.timers if t.when <= self.now and not t.cancelled]
        self.timers = [t for t in self.timers if t not in due]
        for timer in due:
            timer.call()


def new_loop() -> tuple[Clock, asyncio.AbstractEventLoop]:
    clock = Clock()
    return clock, cast(asyncio.AbstractEventLoop, clock)


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "routilux.api"]


def test_the_first_refusal_is_logged_at_once_and_the_rest_of_the_minute_in_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "routilux.api")
    clock, loop = new_loop()
    refusals = Refusals()
    refusals.note("busy", loop, 1001, 1000)
    assert len(lines(caplog)) == 1
    assert "1 over the connection cap (503; up to 1001 connections open, ROUTILUX_MAX_CONNECTIONS=1000)" \
        in lines(caplog)[0]
    for second in range(59):
        clock.now += 1
        refusals.note("busy", loop, 1001 + second, 1000)
        refusals.note("head_timeout", loop, 1001, 1000)
    assert len(lines(caplog)) == 1  # nothing more within the minute
    clock.now += 1
    clock.run_due()  # a minute after the first line, without a new refusal to trigger it
    assert len(lines(caplog)) == 2
    second_line = lines(caplog)[1]
    assert "59 over the connection cap (503; up to 1059 connections open" in second_line
    assert "59 request heads not complete" in second_line
    assert refusals.totals["busy"] == 60 and refusals.counts == {}


def test_connections_that_sent_nothing_do_not_log_by_themselves(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "routilux.api")
    clock, loop = new_loop()
    refusals = Refusals()
    for _ in range(5):
        refusals.note("idle", loop, 10, 1000)
    assert lines(caplog) == [] and clock.timers == []
    refusals.note("head_too_large", loop, 10, 1000)
    assert len(lines(caplog)) == 1
    assert "5 connections closed that sent nothing" in lines(caplog)[0]
    assert "1 request heads too large (414/431)" in lines(caplog)[0]

"""The fan-out benchmark, bounded (``make test``) and full size (``make bench``, ``-m slow``).

The bounded test bursts 2,000 events to 100 job monitor sockets (half of which stop reading
after their snapshot) on a real server, and asserts what must hold on any machine: every
socket's stream is consistent (each event once, in order, every missing seq named by a gap frame
in its place) and reaches the job's end; the job takes about as long as with no socket at all
(generous: 5x, plus half a second); the API answers during the burst (p99 under 2 s). The unit
test checks the client's consistency check itself. The slow test runs the issue's sizes and
asserts its targets.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from bench.fanout import client as fan_client
from bench.fanout import run as fan_run
from bench.ws.scenarios import setup_routilux
from bench.ws.servers import Server


class _Client:
    def __init__(self) -> None:
        self.ready = self.done = 0

    def on_ready(self) -> None:
        self.ready += 1

    def on_done(self) -> None:
        self.done += 1


def _stream(*frames: bytes) -> fan_client.Stream:
    stream = fan_client.Stream(_Client(), sleeper=False)  # type: ignore[arg-type]
    for frame in frames:
        stream.handle(frame)
    return stream


SNAPSHOT = b'{"type":"snapshot","job_id":"j","last_seq":10}'


def _event(seq: int, type_: str = "log") -> bytes:
    return f'{{"type":"{type_}","seq":{seq},"job_id":"j"}}'.encode()


def _gap(first: int, last: int) -> bytes:
    return f'{{"type":"gap","job_id":"j","from_seq":{first},"to_seq":{last}}}'.encode()


def test_the_client_accepts_a_consistent_stream_and_names_every_inconsistency() -> None:
    good = _stream(SNAPSHOT, _event(11), _gap(12, 20), b'{"type":"metrics"}', _event(21), _event(22, "job_end"))
    assert good.errors == [] and good.done and (good.events, good.gaps, good.gap_named) == (3, 1, 9)

    assert "duplicate" in _stream(SNAPSHOT, _event(11), _event(11)).errors[0]
    assert "hole without a gap" in _stream(SNAPSHOT, _event(11), _event(13)).errors[0]
    assert "where seq 12 was due" in _stream(SNAPSHOT, _event(11), _gap(11, 14)).errors[0], "a gap over a sent event"
    assert "where seq 12 was due" in _stream(SNAPSHOT, _event(11), _gap(13, 14)).errors[0], "a gap that starts late"
    assert "undecodable" in _stream(SNAPSHOT, b"not json").errors[0]


def _run(readers: int, sleepers: int, events: int) -> tuple[fan_run.Burst, fan_run.Burst]:
    """The burst to the sockets, and the same burst with no socket, on one fresh server."""
    with tempfile.TemporaryDirectory(prefix="routilux-fanout-test-") as tmp:
        work = Path(tmp)
        with Server("routilux", work) as server:
            setup_routilux(server)
            alone = fan_run.run_burst(server, work, 0, 0, events, lambda _msg: None)
            watched = fan_run.run_burst(server, work, readers, sleepers, events, lambda _msg: None)
    return watched, alone


def _describe(burst: fan_run.Burst) -> dict[str, Any]:
    return burst.as_dict()


def test_fanout_bench_quick() -> None:
    watched, alone = _run(readers=50, sleepers=50, events=2000)
    for report in (watched.reader_report, watched.sleeper_report):
        assert report["inconsistent"] == 0, _describe(watched)
        assert report["unfinished"] == 0 and report["closed_by_server"] == {}, _describe(watched)
        assert report["events"] >= report["clients"], "every socket got its events (at least the job's end)"
    assert watched.job_seconds <= 5 * alone.job_seconds + 0.5, (
        f"the job took {watched.job_seconds:.2f}s with 100 sockets, {alone.job_seconds:.2f}s with none")
    assert watched.health_ms and watched.health_failures == 0
    assert watched.health_p99 <= 2000, _describe(watched)


@pytest.mark.slow
def test_fanout_bench_targets() -> None:
    """The issue's sizes and targets (``python -m bench.fanout --check`` prints the same table)."""
    rows = fan_run.run_bench(fan_run.Settings(), say=lambda _msg: None)
    missed = [f"{r.scenario}: {r.figure}" for r in rows if not r.passed]
    assert not missed, missed

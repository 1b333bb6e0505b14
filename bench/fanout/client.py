"""A fan-out bench client process (``python -m bench.fanout --worker SPEC``): ``clients`` job
monitor sockets that either read all along or stop reading once they have their ``snapshot``
(and read again when the parent says ``RESUME``), each checking that its stream is consistent.

Consistent means: after the snapshot's ``last_seq``, every event of the job arrives once, in
order, and every seq that does not arrive is named by exactly one ``gap`` frame placed where
those events would have been — the next event or gap starts right after the last one.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any, Final

import msgspec

from bench.server import HOST, new_loop
from bench.ws.frames import PONG, RawWs

#: Handshakes in flight at once.
CONNECT_PARALLEL: Final[int] = 50
_CONTROL: Final = frozenset({"snapshot", "gap", "ping", "pong", "metrics", "subscribed", "unsubscribed", "error"})


class _Frame(msgspec.Struct):
    type: str = ""
    seq: int = 0
    last_seq: int | None = None
    from_seq: int = 0
    to_seq: int = 0


_decode = msgspec.json.Decoder(_Frame).decode


class Stream:
    """One socket's view: what :class:`bench.ws.frames.RawWs` needs of it (``handle``,
    ``on_closed``, ``errors``, ``send``) and the consistency check."""

    __slots__ = ("client", "close_code", "done", "errors", "events", "gap_named", "gaps", "next_seq",
                 "protocol", "send", "sleeper", "snapshot")

    def __init__(self, client: Client, sleeper: bool) -> None:
        self.client = client
        self.sleeper = sleeper
        self.snapshot = False
        self.next_seq = 0
        self.events = 0
        self.gaps = 0
        self.gap_named = 0
        self.done = False
        self.close_code: int | None = None
        self.errors: list[str] = []
        self.send: Any = None
        self.protocol: RawWs | None = None

    def _error(self, why: str) -> None:
        if len(self.errors) < 3:
            self.errors.append(why)

    def handle(self, payload: bytes | str) -> None:
        try:
            frame = _decode(payload)
        except msgspec.MsgspecError as exc:
            self._error(f"undecodable frame ({exc}): {payload[:200]!r}")
            return
        kind = frame.type
        if kind == "snapshot":
            self.snapshot = True
            self.next_seq = (frame.last_seq or 0) + 1
            if self.sleeper and self.protocol is not None and self.protocol.transport is not None:
                self.protocol.transport.pause_reading()  # from now on this client reads nothing
            self.client.on_ready()
        elif kind == "gap":
            self.gaps += 1
            self.gap_named += frame.to_seq - frame.from_seq + 1
            if frame.from_seq != self.next_seq or frame.to_seq < frame.from_seq:
                self._error(f"gap {frame.from_seq}-{frame.to_seq} where seq {self.next_seq} was due")
            self.next_seq = max(self.next_seq, frame.to_seq + 1)
        elif kind == "ping":
            if self.send is not None:
                self.send(PONG)
        elif kind == "error":
            self._error(f"error frame: {payload[:300]!r}")
        elif kind not in _CONTROL:
            self.events += 1
            if frame.seq != self.next_seq:
                what = "duplicate or out of order" if frame.seq < self.next_seq else "hole without a gap frame"
                self._error(f"seq {frame.seq} where {self.next_seq} was due ({what})")
            self.next_seq = max(self.next_seq, frame.seq + 1)
            if kind == "job_end":
                self._finish()

    def _finish(self) -> None:
        if not self.done:
            self.done = True
            self.client.on_done()

    def on_closed(self, code: int | None) -> None:
        if self.close_code is None:
            self.close_code = code if code is not None else 1006
            self._finish()


class Client:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.streams = [Stream(self, spec["sleepers"]) for _ in range(spec["clients"])]
        self.ready = 0
        self.finished = 0
        self.all_ready = asyncio.Event()
        self.all_done = asyncio.Event()

    def on_ready(self) -> None:
        self.ready += 1
        if self.ready >= len(self.streams):
            self.all_ready.set()

    def on_done(self) -> None:
        self.finished += 1
        if self.finished >= len(self.streams):
            self.all_done.set()

    async def _open(self, stream: Stream, gate: asyncio.Semaphore) -> None:
        loop = asyncio.get_running_loop()
        async with gate:
            opened: asyncio.Future[None] = loop.create_future()
            _transport, protocol = await loop.create_connection(
                lambda: RawWs(stream, self.spec["path"], self.spec["port"], opened), HOST, self.spec["port"]  # type: ignore[arg-type]
            )
            stream.protocol = protocol
            await opened

    async def run(self) -> dict[str, Any]:
        gate = asyncio.Semaphore(CONNECT_PARALLEL)
        await asyncio.wait_for(asyncio.gather(*(self._open(s, gate) for s in self.streams)), self.spec["timeout"])
        await asyncio.wait_for(self.all_ready.wait(), self.spec["timeout"])
        _say(f"READY {len(self.streams)}")
        if self.spec["sleepers"]:
            await _line_from_parent()  # RESUME
            for s in self.streams:
                if s.protocol is not None and s.protocol.transport is not None and not s.done:
                    s.protocol.transport.resume_reading()
        t0 = time.perf_counter()
        try:
            await asyncio.wait_for(self.all_done.wait(), self.spec["timeout"])
        except TimeoutError:
            pass
        seconds = time.perf_counter() - t0
        for s in self.streams:
            if s.protocol is not None:
                s.protocol.close()
        codes: dict[str, int] = {}
        for s in self.streams:
            if s.close_code is not None:
                codes[str(s.close_code)] = codes.get(str(s.close_code), 0) + 1
        return {
            "clients": len(self.streams),
            "seconds": round(seconds, 3),
            "unfinished": sum(1 for s in self.streams if not s.done),
            "ended": sum(1 for s in self.streams if s.done and s.close_code is None),
            "closed_by_server": codes,
            "events": sum(s.events for s in self.streams),
            "gaps": sum(s.gaps for s in self.streams),
            "gap_named": sum(s.gap_named for s in self.streams),
            "inconsistent": sum(1 for s in self.streams if s.errors),
            "errors": [e for s in self.streams for e in s.errors][:5],
        }


async def _line_from_parent() -> None:
    loop = asyncio.get_running_loop()
    got = asyncio.Event()
    loop.add_reader(sys.stdin.fileno(), got.set)
    try:
        await got.wait()
    finally:
        loop.remove_reader(sys.stdin.fileno())


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def worker_main(spec_json: str) -> int:
    spec = json.loads(spec_json)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < spec["clients"] + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, spec["clients"] + 256), hard))
    with asyncio.Runner(loop_factory=new_loop) as runner:
        result = runner.run(Client(spec).run())
    Path(spec["out"]).write_text(json.dumps(result))
    _say("DONE")
    return 0

"""A WebSocket bench client process (``python -m bench.ws --worker SPEC``): its connections, the
stream or idle mode, and the report it writes for the parent.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from array import array
from pathlib import Path
from typing import Any, Final

from bench.server import HOST, new_loop
from bench.ws.frames import IDLE_PING_EVERY, PING, RawWs, Sub

# =============================================================================================
# The client process
# =============================================================================================
#: Handshakes in flight per client process (``python -m bench.cluster --ws-client`` lowers it).
CONNECT_PARALLEL: Final[int] = 50


class Worker:
    """A client process: ``clients`` connections to ``path``; reports over stdout/a JSON file."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.mode: str = spec["mode"]  # "stream" | "idle"
        self.latencies = array("d")
        self.subs: list[Sub] = []
        self.closers: list[Any] = []
        self.ready = 0
        self.finished = 0
        self.closed = 0
        self.last_recv = 0.0
        self.all_ready = asyncio.Event()
        self.all_done = asyncio.Event()

    def on_ready(self) -> None:
        self.ready += 1
        if self.ready >= self.spec["clients"]:
            self.all_ready.set()

    def on_done(self) -> None:
        self.finished += 1
        if self.finished >= self.spec["clients"]:
            self.all_done.set()

    def on_closed(self, sub: Sub) -> None:
        self.closed += 1
        if not sub.done and self.mode == "stream":
            sub._finish()

    async def _open_raw(self, sub: Sub, gate: asyncio.Semaphore) -> None:
        loop = asyncio.get_running_loop()
        async with gate:
            opened: asyncio.Future[None] = loop.create_future()
            _transport, protocol = await loop.create_connection(
                lambda: RawWs(sub, self.spec["path"], self.spec["port"], opened), HOST, self.spec["port"]
            )
            await opened
        self.closers.append(protocol.close)
        if self.mode == "idle":
            sub.send(PING)

    async def _open_lib(self, sub: Sub, gate: asyncio.Semaphore, tasks: list[asyncio.Task[None]]) -> None:
        from websockets.asyncio.client import connect

        async with gate:
            ws = await connect(
                f"ws://{HOST}:{self.spec['port']}{self.spec['path']}",
                compression=None,
                max_queue=None,
                ping_interval=None,
                open_timeout=60,
            )
        loop = asyncio.get_running_loop()
        sub.send = lambda text: loop.create_task(ws.send(text.decode()))

        async def read() -> None:
            try:
                async for message in ws:
                    sub.handle(message)
            except Exception as exc:  # noqa: BLE001 - recorded, the run decides
                if len(sub.errors) < 3:
                    sub.errors.append(repr(exc))
            sub.on_closed(ws.close_code)

        tasks.append(loop.create_task(read()))
        self.closers.append(lambda: loop.create_task(ws.close()))
        if self.mode == "idle":
            sub.send(PING)

    async def run(self) -> dict[str, Any]:
        spec = self.spec
        n = spec["clients"]
        self.subs = [Sub(self, spec.get("expect", 0)) for _ in range(n)]
        gate = asyncio.Semaphore(CONNECT_PARALLEL)
        lib_tasks: list[asyncio.Task[None]] = []
        t0 = time.perf_counter()
        if spec["client"] == "websockets":
            opening = [self._open_lib(s, gate, lib_tasks) for s in self.subs]
        else:
            opening = [self._open_raw(s, gate) for s in self.subs]
        await asyncio.wait_for(asyncio.gather(*opening), spec["connect_timeout"])
        await asyncio.wait_for(self.all_ready.wait(), spec["connect_timeout"])
        connect_seconds = time.perf_counter() - t0
        cpu0 = time.process_time()
        _say(f"READY {n}")
        timed_out = False
        if self.mode == "stream":
            timed_out = not await self._wait_stream()
        else:
            await self._wait_close_order()
        cpu = time.process_time() - cpu0
        closed_by_server = self.closed  # before we close anything ourselves
        unfinished = sum(1 for s in self.subs if not s.done)
        for close in self.closers:
            close()
        await asyncio.sleep(0.05)
        for task in lib_tasks:
            task.cancel()
        subs = self.subs
        return {
            "clients": n,
            "ready": self.ready,
            "connect_seconds": round(connect_seconds, 3),
            "cpu_seconds": cpu,
            "timed_out": unfinished if timed_out else 0,
            "closed_by_server": closed_by_server,
            "events": sum(s.events for s in subs),
            "ticks": sum(s.ticks for s in subs),
            "missing_ticks": sum(max(0, s.expect - s.ticks) for s in subs),
            "clients_with_loss": sum(1 for s in subs if s.ticks < s.expect or s.holes),
            "min_ticks": min((s.ticks for s in subs), default=0),
            "holes": sum(s.holes for s in subs),
            "disorder": sum(s.disorder for s in subs),
            "tick_disorder": sum(s.tick_disorder for s in subs),
            "gaps": sum(s.gaps for s in subs),
            "gap_named": sum(s.gap_named for s in subs),
            "first_t": min((s.first_t for s in subs), default=math.inf),
            "last_recv": max((s.last_recv for s in subs), default=0.0),
            "max_silence": max((s.max_silence for s in subs), default=0.0),
            "errors": [e for s in subs for e in s.errors][:5],
        }

    async def _wait_stream(self) -> bool:
        """Until every client saw the last event; or, once the source should have finished
        (``seconds`` after READY), nothing arrived for ``quiet`` seconds; or the deadline.
        True if every client finished."""
        spec = self.spec
        start = time.monotonic()
        deadline = start + spec["deadline"]
        source_done = start + spec["seconds"]
        while time.monotonic() < deadline:
            try:
                await asyncio.wait_for(self.all_done.wait(), 0.25)
                return True
            except TimeoutError:
                pass
            source_done_wall = time.time() - (time.monotonic() - source_done)
            if time.time() - max(self.last_recv, source_done_wall) > spec["quiet"]:
                return self.all_done.is_set()
        return self.all_done.is_set()

    async def _wait_close_order(self) -> None:
        """Idle mode: keep the connections open (pinging) until the parent writes a line."""
        loop = asyncio.get_running_loop()
        order = asyncio.Event()
        fd = sys.stdin.fileno()
        loop.add_reader(fd, order.set)
        deadline = time.monotonic() + self.spec["deadline"]
        try:
            while not order.is_set() and time.monotonic() < deadline:
                try:
                    await asyncio.wait_for(order.wait(), IDLE_PING_EVERY)
                except TimeoutError:
                    for sub in self.subs:
                        if sub.send is not None:
                            sub.send(PING)
        finally:
            loop.remove_reader(fd)


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def worker_main(spec_json: str) -> int:
    import resource

    spec = json.loads(spec_json)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = spec["clients"] + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, want), hard))
    worker = Worker(spec)
    with asyncio.Runner(loop_factory=new_loop) as runner:
        result = runner.run(worker.run())
    Path(spec["out"]).write_text(json.dumps(result))
    Path(spec["out"] + ".lat").write_bytes(worker.latencies.tobytes())
    _say("DONE")
    return 0



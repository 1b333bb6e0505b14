"""The recorder keeps every job's history whole: it holds jobs back when it falls behind, and
what still overflows its buffer is recorded as a ``gap`` entry that every reader returns in its
place — a history never has a silent hole."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import msgspec

from routilux.bus import decode_gap
from routilux.engine import Connection, Engine, Entry, Flow, Job, JobStatus, Routine
from routilux.server.eventlog import EventHistory, Recorder
from routilux.server.eventlog.reader import GAP, EventLog
from routilux.store import MemoryStore
from tests.support.routines import chain, make_registry

DEADLINE = 20.0


class Shout(Routine):
    """Logs ``data`` lines in one activation, without awaiting: nothing can hold it back midway."""

    slots = ["input"]
    events = ["output"]

    async def logic(self, ctx: Any, input: list[dict]) -> None:
        for item in input:
            for n in range(item["data"]):
                ctx.log("line", n=n)
            await ctx.emit("output", data=0)


class SlowRecorder(Recorder):
    """A recorder behind a slow store: each batch takes a while."""

    async def consume(self, batch: list[Any]) -> None:
        await anyio.sleep(0.005)
        await super().consume(batch)


@asynccontextmanager
async def recording(buffer: int, slow: bool = False) -> AsyncIterator[tuple[Engine, Recorder, EventLog, MemoryStore]]:
    registry = make_registry()
    registry.register(Shout)
    store = MemoryStore()
    with anyio.fail_after(DEADLINE):
        async with store, anyio.create_task_group() as tg:
            async with Engine(registry=registry) as engine:
                recorder = (SlowRecorder if slow else Recorder)(engine, store, EventHistory(), buffer=buffer)
                tg.start_soon(recorder.run)
                yield engine, recorder, EventLog(recorder), store


def seqs_accounted_for(items: list[tuple[int, str, bytes]]) -> list[int]:
    """Every seq an answer covers, an event's own or a gap's whole range."""
    covered: list[int] = []
    for seq, type_, payload in items:
        if type_ == GAP:
            first, last = decode_gap(payload)
            assert last == seq
            covered.extend(range(first, last + 1))
        else:
            covered.append(seq)
    return covered


def looping(flow_id: str) -> Flow:
    """r0 feeds itself until its count reaches 0."""
    flow = chain(flow_id, "Loop")
    return msgspec.structs.replace(flow, connections=[Connection("r0.output", "r0.input")])


async def finish(engine: Engine, *entries: Entry, flow: str = "Relay") -> Job:
    job = await engine.start_job(chain("f", flow, "Collect"), entries=list(entries), complete_when_idle=True)
    assert await job.wait(DEADLINE) is JobStatus.COMPLETED
    return job


async def test_a_recorder_that_falls_behind_holds_activations_back_instead_of_dropping() -> None:
    async with recording(buffer=64, slow=True) as (engine, recorder, log, _store):
        # Loops: one activation at a time per job, a few events each, so only the wait before
        # each activation can keep the buffer from overflowing.
        jobs = [await engine.start_job(looping(f"f{n}"), entries=[Entry("r0", "input", {"data": 100})],
                                       complete_when_idle=True) for n in range(4)]
        for job in jobs:
            assert await job.wait(DEADLINE) is JobStatus.COMPLETED
        assert engine.bus.congestions > 0, "the engine never waited: the test proves nothing"
        assert recorder.lost == 0 and recorder.dropped == 0
        for job in jobs:
            found = await log.events_since(job.job_id, 0)
            assert [item[0] for item in found.events] == list(range(1, job.last_seq + 1))
            assert found.gaps() == []


async def test_what_overflows_anyway_is_a_gap_entry_in_memory_and_in_the_store() -> None:
    async with recording(buffer=16) as (engine, recorder, log, store):
        job = await finish(engine, Entry("r0", "input", {"data": 200}), flow="Shout")
        found = await log.events_since(job.job_id, 0)
        assert recorder.lost > 0
        assert seqs_accounted_for(found.events) == list(range(1, job.last_seq + 1))
        lost = sum(last - first + 1 for first, last in found.gaps())
        assert lost == recorder.lost
        await store.flush()
        stored = await store.events_since(job.job_id, 0, 10_000)
        assert seqs_accounted_for([(e.seq, e.type, e.payload) for e in stored]) == list(range(1, job.last_seq + 1))
        gap = next(e for e in stored if e.type == GAP)
        assert msgspec.json.decode(gap.payload) == {"type": "gap", "job_id": job.job_id,
                                                    "from_seq": decode_gap(gap.payload)[0], "to_seq": gap.seq}


async def test_a_reader_starting_inside_a_gap_is_told_only_what_it_misses() -> None:
    async with recording(buffer=16) as (engine, _recorder, log, _store):
        job = await finish(engine, Entry("r0", "input", {"data": 200}), flow="Shout")
        first, last = (await log.events_since(job.job_id, 0)).gaps()[0]
        assert last > first, "a one-seq gap cannot be entered"
        found = await log.events_since(job.job_id, first)
        assert found.gaps()[0] == (first + 1, last)
        assert seqs_accounted_for(found.events) == list(range(first + 1, job.last_seq + 1))


async def test_trace_and_log_readers_see_gaps_too() -> None:
    async with recording(buffer=16) as (engine, _recorder, log, _store):
        job = await finish(engine, Entry("r0", "input", {"data": 200}), flow="Shout")
        found = await log.events_since(job.job_id, 0, types={"log"})
        assert found.gaps() and all(t in ("log", GAP) for _s, t, _p in found.events)

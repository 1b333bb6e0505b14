"""A live job's checkpoint, and restoring the job from it in a new engine (DESIGN.md §7, engine half).

Each restore happens in a NEW Engine, after the one that ran the job has exited: what the job
needs must be in the checkpoint's bytes, nothing else survives. Waits are on events and job
status, bounded by ``anyio.fail_after``; the only sleeps let wall-clock time pass on purpose.
"""

from __future__ import annotations

import threading
from typing import Any

import anyio
import msgspec
import pytest

from routilux.bus import Event, Subscription
from routilux.bus.payloads import JobResume, payload_of
from routilux.engine import (
    Connection,
    Engine,
    Entry,
    Flow,
    IllegalTransition,
    JobStatus,
    PolicySpec,
    Registry,
    Routine,
    RoutineSpec,
)
from routilux.engine.checkpoint import CHECKPOINT_VERSION, JobCheckpoint, decode_checkpoint, encode_checkpoint
from routilux.engine.errors import CheckpointError
from tests.support.routines import ALL, chain

S = JobStatus

#: Per job id: ``entered`` is set when the gate's logic runs, ``release`` lets it go on. Kept
#: outside the job on purpose: anyio and threading events are not data a checkpoint could keep.
GATES: dict[str, tuple[anyio.Event, anyio.Event]] = {}
SYNC_GATES: dict[str, tuple[threading.Event, threading.Event]] = {}


class Gate(Routine):
    """Async: records what it took and ``ctx.redelivered``, waits for its job's gate (if one is
    armed), then passes the items on."""

    slots = ["input"]
    events = ["output"]

    async def logic(self, ctx: Any, input: list[dict]) -> None:
        ctx.state.setdefault("seen", []).append({"items": [i["data"] for i in input], "redelivered": ctx.redelivered})
        gate = GATES.get(ctx.job_id)
        if gate is not None:
            entered, release = gate
            entered.set()
            await release.wait()
        for item in input:
            await ctx.emit("output", **item)


class SyncGate(Routine):
    """The same in a worker thread (its context is a ThreadContext)."""

    slots = ["input"]
    events = ["output"]

    def logic(self, ctx: Any, input: list[dict]) -> None:
        gate = SYNC_GATES.get(ctx.job_id)
        if gate is not None:
            entered, release = gate
            entered.set()
            release.wait(10)
            return
        ctx.emit("output", data={"items": [i["data"] for i in input], "redelivered": ctx.redelivered})


def registry() -> Registry:
    reg = Registry()
    for cls in (*ALL, Gate, SyncGate):
        reg.register(cls)
    return reg


async def next_event(sub: Subscription, type_: str, timeout: float = 5) -> Event:
    with anyio.fail_after(timeout):
        async for item in sub:
            if isinstance(item, Event) and item.type == type_:
                return item
    raise AssertionError("the bus closed")


def drained(sub: Subscription) -> list[Event]:
    out = []
    while (item := sub.receive_nowait()) is not None:
        assert isinstance(item, Event)
        out.append(item)
    return out


async def until_idle(job: Any, sub: Subscription) -> None:
    while job.status is not S.IDLE:
        await next_event(sub, "job_idle")


def flat(batches: list[list[Any]]) -> list[Any]:
    return [x for batch in batches for x in batch]


# ------------------------------------------------------------------------------------------------
# Round trips in each status
# ------------------------------------------------------------------------------------------------
async def test_a_paused_job_comes_back_paused_with_its_queues_and_shared_data() -> None:
    flow = chain("f", "Relay", "Collect")
    async with Engine(registry=registry()) as engine:
        sub = engine.bus.subscribe()
        job = await engine.start_job(flow, entries=[Entry("r0", "input", 0)], timeout=600)
        await until_idle(job, sub)
        job.pause("for the night")
        await job.post("r0", "input", 1)
        await job.post("r0", "input", 2)
        job.shared_data["note"] = {"owner": "ops", "sizes": [1, 2.5, None]}
        cp = job.checkpoint()
        data = encode_checkpoint(cp)
        last_seq = job.last_seq
        job_id = job.job_id

    assert isinstance(data, bytes) and msgspec.json.decode(data)["version"] == CHECKPOINT_VERSION
    assert decode_checkpoint(data) == cp  # JSON bytes that decode back equal
    assert cp.status is S.PAUSED and cp.seq == last_seq and len(cp.pause_points) == 1
    assert cp.routines["r0"].queues == {"input": [{"data": 1}, {"data": 2}]} and cp.routines["r0"].redelivered == {}
    assert 590 < cp.timeout_left <= 600 and cp.timeout == 600  # type: ignore[operator]

    async with Engine(registry=registry()) as engine:
        sub, everything = engine.bus.subscribe(), engine.bus.subscribe()
        job = engine.restore_job(flow, data)
        assert job.job_id == job_id and job.status is S.PAUSED and engine.get_job(job_id) is job
        assert job.shared_data["note"] == {"owner": "ops", "sizes": [1, 2.5, None]}
        assert job.shared_data["batches"] == {"r1": [[0]]}
        assert job.parked_items() == [{"routine_id": "r0", "slot": "input", "count": 2}]
        assert job.pause_points[0].reason == "for the night"
        assert job.routine_states["r0"].execution_count == 1 and len(job.execution_history) == 2
        await anyio.wait_all_tasks_blocked()
        (resumed,) = drained(sub)  # the boundary, and nothing runs while paused
        assert (resumed.type, resumed.seq, resumed.data) == ("job_resume", last_seq + 1,
                                                            {"reason": "restart", "status": "paused"})
        assert payload_of(resumed) == JobResume(reason="restart", status=S.PAUSED)  # the bus's schema
        job.resume()
        await until_idle(job, sub)
        assert flat(job.shared_data["batches"]["r1"]) == [0, 1, 2]  # entries did not run again
        assert not [e for e in drained(everything) if e.type == "job_start"]
        job.complete()


async def test_an_idle_job_comes_back_idle_and_takes_posts() -> None:
    flow = chain("f", "Relay", "Collect")
    async with Engine(registry=registry()) as engine:
        sub = engine.bus.subscribe()
        job = await engine.start_job(flow)
        await job.post("r0", "input", 1)
        await until_idle(job, sub)
        data = job.checkpoint_bytes()
        seq = job.last_seq

    async with Engine(registry=registry()) as engine:
        sub, everything = engine.bus.subscribe(), engine.bus.subscribe()
        job = engine.restore_job(engine.compile(flow), data)
        assert job.status is S.IDLE and job.routine_states["r1"].status == "idle"
        assert job.checkpoint().timeout_left is None
        await job.post("r0", "input", 2)
        await until_idle(job, sub)
        events = drained(everything)
        assert events[0].type == "job_resume" and events[0].seq == seq + 1
        assert events[0].data == {"reason": "restart", "status": "idle"}
        assert [e.seq for e in events] == list(range(seq + 1, seq + 1 + len(events)))
        assert job.shared_data["batches"]["r1"] == [[1], [2]]


# ------------------------------------------------------------------------------------------------
# In-flight activations run again: at-least-once, and ctx says so
# ------------------------------------------------------------------------------------------------
async def test_a_running_jobs_in_flight_items_are_redelivered_first_and_ctx_says_so() -> None:
    flow = chain("g", "Gate", "Collect")
    async with Engine(registry=registry()) as engine:
        job = await engine.start_job(flow)
        entered, release = GATES[job.job_id] = (anyio.Event(), anyio.Event())
        try:
            await job.post("r0", "input", 1)
            with anyio.fail_after(5):
                await entered.wait()  # the activation holding [1] is in flight
            await job.post("r0", "input", 2)
            await job.post("r0", "input", 3)
            changes = job.changes
            cp = job.checkpoint()
            data = encode_checkpoint(cp)
            seq = job.last_seq
        finally:
            del GATES[job.job_id]  # the "crash": the engine goes, the activation never finishes
    assert changes >= 3  # three posts at least; nothing ended yet
    assert cp.status is S.RUNNING
    # the in-flight item goes back to the FRONT, ahead of what was queued behind it
    assert cp.routines["r0"].queues == {"input": [{"data": 1}, {"data": 2}, {"data": 3}]}
    assert cp.routines["r0"].redelivered == {"input": 1}
    assert cp.routines["r0"].state.status == "running"

    async with Engine(registry=registry()) as engine:  # a new process, as far as the job knows
        sub = engine.bus.subscribe()
        job = engine.restore_job(flow, data)
        assert job.routine_states["r0"].status == "idle"  # until the activation runs again
        first = await next_event(sub, "job_resume")
        assert first.seq == seq + 1 and first.data == {"reason": "restart", "status": "running"}
        await until_idle(job, sub)
        # before the restart it saw [1] (not redelivered); after, [1, 2, 3] flagged as redelivered
        assert job.shared_data["seen"] == [{"items": [1], "redelivered": False},
                                           {"items": [1, 2, 3], "redelivered": True}]
        assert flat(job.shared_data["batches"]["r1"]) == [1, 2, 3]
        await job.post("r0", "input", 4)
        await until_idle(job, sub)
        assert job.shared_data["seen"][-1] == {"items": [4], "redelivered": False}  # counted off
        assert job.checkpoint().routines["r0"].redelivered == {}


async def test_a_sync_routine_is_told_of_redelivery_too() -> None:
    flow = chain("s", "SyncGate", "Collect")
    async with Engine(registry=registry()) as engine:
        job = await engine.start_job(flow)
        entered, release = SYNC_GATES[job.job_id] = (threading.Event(), threading.Event())
        try:
            await job.post("r0", "input", 7)
            with anyio.fail_after(5):
                while not entered.is_set():
                    await anyio.to_thread.run_sync(entered.wait, 0.1)
            data = job.checkpoint_bytes()
        finally:
            del SYNC_GATES[job.job_id]
            release.set()  # the abandoned worker thread may end

    async with Engine(registry=registry()) as engine:
        sub = engine.bus.subscribe()
        job = engine.restore_job(flow, data)
        await until_idle(job, sub)
        assert job.shared_data["batches"]["r1"] == [[{"items": [7], "redelivered": True}]]


# ------------------------------------------------------------------------------------------------
# Time: pending batches, policy timers and the timeout carry on with what they had left
# ------------------------------------------------------------------------------------------------
def policies_flow() -> Flow:
    return Flow(
        flow_id="t",
        routines={
            "src": RoutineSpec("Relay"),
            "batch": RoutineSpec("Collect", policy=PolicySpec(type="batch_size", n=3)),
            "tick": RoutineSpec("Collect", policy=PolicySpec(type="time_interval", seconds=2.0)),
        },
        connections=[Connection("src.output", "batch.input"), Connection("src.output", "tick.input")],
    )


async def test_batch_leftovers_and_a_time_interval_flush_survive_a_restore() -> None:
    flow = policies_flow()
    async with Engine(registry=registry()) as engine:
        job = await engine.start_job(flow)
        await job.post("src", "input", 0)
        await anyio.wait_all_tasks_blocked()
        await job.post("src", "input", 1)
        await anyio.wait_all_tasks_blocked()
        assert job.shared_data["batches"] == {"tick": [[0]]}  # the leading edge; 1 waits for the interval
        assert job.status is S.RUNNING  # the pending flush is work
        await anyio.sleep(1.0)  # let half the interval pass before the checkpoint
        cp = job.checkpoint()
        data = encode_checkpoint(cp)
    tick = cp.routines["tick"]
    assert tick.queues == {"input": [{"data": 1}]} and tick.wake_in is not None and 0.3 < tick.wake_in < 1.05
    assert tick.policy_state["interval_left"] == pytest.approx(tick.wake_in, abs=0.01)
    assert cp.routines["batch"].queues == {"input": [{"data": 0}, {"data": 1}]}

    async with Engine(registry=registry()) as engine:
        sub = engine.bus.subscribe()
        t0 = anyio.current_time()
        job = engine.restore_job(flow, data)
        assert job.status is S.RUNNING
        await until_idle(job, sub)  # idle only once the re-armed timer has flushed the leftover
        waited = anyio.current_time() - t0
        assert job.shared_data["batches"]["tick"] == [[0], [1]]
        assert 0.25 < waited < 1.9  # what was left of the interval, not a whole new one
        assert "batch" not in job.shared_data["batches"]  # two of three: the batch still waits
        await job.post("src", "input", 2)
        await until_idle(job, sub)
        assert job.shared_data["batches"]["batch"] == [[0, 1, 2]]  # the leftovers made the batch


async def test_the_remaining_timeout_fires_after_a_restore() -> None:
    flow = chain("f", "Relay", "Collect")
    async with Engine(registry=registry()) as engine:
        job = await engine.start_job(flow, timeout=60)
        cp = job.checkpoint()
    assert cp.timeout == 60 and 59 < cp.timeout_left <= 60  # type: ignore[operator]
    # What is re-armed is what was left (here made short), not the job's whole timeout.
    cp = msgspec.structs.replace(cp, timeout_left=0.2)
    async with Engine(registry=registry()) as engine:
        job = engine.restore_job(flow, encode_checkpoint(cp))
        assert job.timeout == 60
        assert await job.wait(5) is S.FAILED
        assert job.error is not None and job.error["type"] == "timeout"


# ------------------------------------------------------------------------------------------------
# What cannot be checkpointed or restored says why
# ------------------------------------------------------------------------------------------------
async def test_a_value_that_is_not_json_fails_the_checkpoint_naming_it() -> None:
    async with Engine(registry=registry()) as engine:
        job = await engine.start_job(chain("f", "Relay", "Collect"))
        job.shared_data["fine"] = {"a": [1, 2]}
        job.shared_data["cfg"] = {"ok": 1, "bad": [1, threading.Lock()]}
        with pytest.raises(CheckpointError) as caught:
            job.checkpoint_bytes()
        assert caught.value.code == "checkpoint_not_encodable"
        assert caught.value.context["where"] == "shared_data['cfg']['bad'][1]"
        assert "shared_data['cfg']['bad'][1]" in caught.value.message and "lock" in caught.value.message
        del job.shared_data["cfg"]

        job.pause()
        await job.post("r0", "input", {"handle": object()})  # in-process posts may carry anything
        with pytest.raises(CheckpointError) as caught:
            job.checkpoint_bytes()
        assert caught.value.context["where"] == "routines['r0'].queues['input'][0]['handle']"
        assert caught.value.context["routine_id"] == "r0"
        assert job.status is S.PAUSED  # the job itself is unharmed
        job.cancel()
        with pytest.raises(IllegalTransition):  # an ended job has no checkpoint
            job.checkpoint()


async def test_a_checkpoint_the_flow_no_longer_fits_is_refused_clearly() -> None:
    flow = chain("f", "Relay", "Collect")
    async with Engine(registry=registry()) as engine:
        job = await engine.start_job(flow)
        job.pause()
        await job.post("r1", "input", 1)
        data = job.checkpoint_bytes()

    async with Engine(registry=registry()) as engine:
        cases = {
            "routine 'r1' is no longer in flow 'f'": chain("f", "Relay"),
            "routine 'r1' of flow 'f' no longer has slot 'input'": Flow(
                flow_id="f", routines={"r0": RoutineSpec("Relay"), "r1": RoutineSpec("Pair")},
                connections=[Connection("r0.output", "r1.left")]),
            "is of flow 'f', not 'other'": chain("other", "Relay", "Collect"),
        }
        for message, changed in cases.items():
            with pytest.raises(CheckpointError, match=message) as caught:
                engine.restore_job(changed, data)
            assert caught.value.code == "checkpoint_incompatible"
            assert engine.get_job(job.job_id) is None
        # an added routine is fine: it starts empty
        grown = Flow(flow_id="f", routines={**flow.routines, "extra": RoutineSpec("Collect")},
                     connections=flow.connections)
        restored = engine.restore_job(grown, data)
        assert restored.status is S.PAUSED
        with pytest.raises(CheckpointError) as caught:  # the same job twice
            engine.restore_job(flow, data)
        assert caught.value.code == "checkpoint_conflict"

        with pytest.raises(CheckpointError) as caught:
            engine.restore_job(flow, b'{"version": 99}')
        assert caught.value.code == "checkpoint_invalid" and "version 99" in caught.value.message
        with pytest.raises(CheckpointError) as caught:
            engine.restore_job(flow, b"not json")
        assert caught.value.code == "checkpoint_invalid"


def test_a_checkpoint_is_plain_json() -> None:
    """A store or another tool reads it with any JSON parser; field names are the format."""
    fields = set(JobCheckpoint.__struct_fields__)
    assert {"version", "job_id", "flow_id", "runtime_id", "status", "seq", "shared_data", "routines",
            "timeout_left", "complete_when_idle", "execution_history", "errors"} <= fields

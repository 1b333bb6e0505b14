"""A job: one live execution of a flow plan.

Everything a job owns is per job — slot queues, routine states, shared data, policy memory — so
two jobs of one flow never see each other's data. A job has no task of its own: activations are
started on demand in its runtime's task group, its timeout and policy wake-ups live in the
engine's one timer heap, and waiting for it is waiting on an event. An idle job is only memory.

The job reports everything it does by publishing events on the bus; it never knows who listens.
"""

from __future__ import annotations

import traceback as tb
from collections import deque
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import anyio
import msgspec

from routilux.bus.encoding import capture
from routilux.bus.events import Event, EventType, utc_now
from routilux.bus.status import LIVE_STATUSES, JobStatus
from routilux.engine.checkpoint import (
    CHECKPOINT_STATUSES,
    CHECKPOINT_VERSION,
    JobCheckpoint,
    encode_checkpoint,
)
from routilux.engine.errors import IllegalTransition, JobTerminated, UnknownEvent, UnknownRoutine
from routilux.engine.ids import new_job_id
from routilux.engine.ports import RuntimeServices
from routilux.engine.probe import Probe
from routilux.engine.records import ErrorRecord, ExecutionRecord, PausePoint, RoutineState
from routilux.engine.routine_run import RoutineRun
from routilux.engine.slots import DEFAULT_PUT_TIMEOUT, DEFAULT_SLOT_CAPACITY, QueueStatus, SlotQueue

if TYPE_CHECKING:
    from routilux.engine.plan import FlowPlan
    from routilux.engine.policies import Taken
    from routilux.engine.timers import TimerHandle

RUNNABLE: Final = frozenset({JobStatus.RUNNING, JobStatus.IDLE})
ACCEPTS_POST: Final = LIVE_STATUSES  # a paused job parks what is posted until it resumes


class Entry(msgspec.Struct, frozen=True):
    """Data posted to one slot when a job starts."""

    routine_id: str
    slot_name: str
    data: Any = None


class JobOptions(msgspec.Struct, frozen=True):
    """Per-job limits; the runtime fills them from the engine settings."""

    slot_capacity: int = DEFAULT_SLOT_CAPACITY
    put_timeout: float = DEFAULT_PUT_TIMEOUT
    history_limit: int = 1000
    error_limit: int = 100
    preview_bytes: int = 4096


DEFAULT_JOB_OPTIONS: Final = JobOptions()


class JobSnapshot(msgspec.Struct, frozen=True):
    """A job as the outside world reads it."""

    job_id: str
    flow_id: str
    runtime_id: str
    status: JobStatus
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    error: dict[str, Any] | None
    timeout: float | None
    complete_when_idle: bool


def _wrap(data: Any) -> dict[str, Any]:
    """Slots carry dicts. A non-dict posted value is wrapped as ``{"data": value}``."""
    if isinstance(data, dict):
        return data
    if isinstance(data, Mapping):
        return dict(data)
    return {"data": data}


class Job:
    """One execution of a flow. Created by :meth:`routilux.engine.runtime.Runtime.start_job`."""

    def __init__(
        self,
        plan: FlowPlan,
        runtime: RuntimeServices,
        *,
        job_id: str | None = None,
        timeout: float | None = None,
        complete_when_idle: bool = False,
        options: JobOptions = DEFAULT_JOB_OPTIONS,
    ) -> None:
        self.plan = plan
        self.job_id = job_id or new_job_id()
        self.flow_id = plan.flow_id
        self._runtime = runtime
        self._bus = runtime.bus
        self._handoff = runtime.handoff
        self.options = options
        self.timeout = timeout if timeout is not None else plan.timeout
        self.complete_when_idle = complete_when_idle
        self.status = JobStatus.PENDING
        self.created_at = utc_now()
        self.started_at: datetime | None = None
        self.completed_at: datetime | None = None
        self.error: dict[str, Any] | None = None
        self.shared_data: dict[str, Any] = {}
        self.routine_states: dict[str, RoutineState] = {rid: RoutineState() for rid in plan.routines}
        self.execution_history: deque[ExecutionRecord] = deque(maxlen=options.history_limit)
        self.errors: deque[ErrorRecord] = deque(maxlen=options.error_limit)
        self.pause_points: list[PausePoint] = []
        self._seq = 0
        self._active = 0
        #: Grows by one per activation that ends, post, pause, resume and idle: whatever a
        #: checkpoint would see differently. A server checkpoints a running job when it has grown
        #: enough since its last checkpoint (a cheap integer compare, no event subscription).
        self.changes = 0
        self._scopes: set[anyio.CancelScope] = set()
        self._done = anyio.Event()
        self._ended = False
        self.probe: Probe[Job] | None = None  # a debugger, when one is attached
        self._resumed = anyio.Event()
        self._resumed.set()
        self._events_closed = False
        self._timeout_handle: TimerHandle | None = None
        self._runs: dict[str, RoutineRun] = {}
        #: Each routine's slot queues, shared with its run (readable after :meth:`release`).
        self._queues: dict[str, dict[str, SlotQueue]] = {}
        for rid, routine in plan.routines.items():
            self._queues[rid] = queues = {
                name: SlotQueue(
                    rid,
                    name,
                    spec.capacity or options.slot_capacity,
                    spec.put_timeout if spec.put_timeout is not None else options.put_timeout,
                )
                for name, spec in routine.slot_specs.items()
            }
            handler = plan.error_handlers[rid]
            self._runs[rid] = RoutineRun(self, rid, routine, handler, queues, max(1, type(routine).max_concurrency))

    def __repr__(self) -> str:
        return f"<Job {self.job_id} flow={self.flow_id} status={self.status.value}>"

    # ------------------------------------------------------------------------------------------
    # Observing
    # ------------------------------------------------------------------------------------------
    @property
    def runtime_id(self) -> str:
        return self._runtime.runtime_id

    @property
    def is_terminal(self) -> bool:
        return self._ended

    @property
    def last_seq(self) -> int:
        return self._seq

    @property
    def active_activations(self) -> int:
        return self._active

    def snapshot(self) -> JobSnapshot:
        return JobSnapshot(
            job_id=self.job_id,
            flow_id=self.flow_id,
            runtime_id=self.runtime_id,
            status=self.status,
            created_at=self.created_at,
            started_at=self.started_at,
            completed_at=self.completed_at,
            error=self.error,
            timeout=self.timeout,
            complete_when_idle=self.complete_when_idle,
        )

    def queue_status(self, routine_id: str | None = None, slot: str | None = None) -> list[QueueStatus]:
        """Queue status of every slot (of one routine, or one slot, if given)."""
        if routine_id is None:
            return [q.status() for queues in self._queues.values() for q in queues.values()]
        if slot is not None:
            self.plan.check_port(routine_id, slot)
            return [self._queues[routine_id][slot].status()]
        if routine_id not in self._queues:
            raise UnknownRoutine(f"routine '{routine_id}' is not in flow '{self.flow_id}'", routine_id=routine_id)
        return [q.status() for q in self._queues[routine_id].values()]

    def parked_items(self) -> list[dict[str, Any]]:
        """Data waiting in slots while the job is paused (it runs on resume)."""
        if self.status is not JobStatus.PAUSED:
            return []
        return [
            {"routine_id": q.routine_id, "slot": q.name, "count": len(q)}
            for queues in self._queues.values()
            for q in queues.values()
            if len(q)
        ]

    def release(self) -> None:
        """Let go of an ended job's runs (``Engine.forget_job``): each points back at its job, a cycle
        only the collector's slow full passes would free. What it shows stays readable."""
        if self._ended:
            self._runs = {}

    def state(self) -> dict[str, Any]:
        """The whole job state as plain data (what ``GET /api/jobs/{id}/state`` shows)."""
        return {
            **msgspec.to_builtins(self.snapshot()),
            "routine_states": msgspec.to_builtins(self.routine_states),
            "execution_history": msgspec.to_builtins(list(self.execution_history)),
            "errors": msgspec.to_builtins(list(self.errors)),
            "shared_data": msgspec.to_builtins(self.shared_data, enc_hook=repr),
            "pause_points": msgspec.to_builtins(self.pause_points),
            "deferred_events": self.parked_items(),
        }

    async def wait(self, timeout: float | None = None) -> JobStatus:
        """Wait until the job ends (or ``timeout`` seconds pass); returns the status then."""
        if timeout is None:
            await self._done.wait()
        else:
            with anyio.move_on_after(timeout):
                await self._done.wait()
        return self.status

    # ------------------------------------------------------------------------------------------
    # Controlling
    # ------------------------------------------------------------------------------------------
    def _require(self, action: str, allowed: frozenset[JobStatus]) -> None:
        if self.status not in allowed:
            raise IllegalTransition(self.job_id, self.status.value, action)

    async def start(self, entries: list[Entry] | tuple[Entry, ...] = ()) -> None:
        """pending → running; posts the entry data, arms the timeout."""
        self._require("start", frozenset({JobStatus.PENDING}))
        for entry in entries:
            self.plan.check_port(entry.routine_id, entry.slot_name)
        self.status = JobStatus.RUNNING
        self.started_at = utc_now()
        self._publish("job_start", None, {"runtime_id": self.runtime_id, "timeout": self.timeout})
        if self.timeout is not None:
            self._timeout_handle = self._runtime.timers.call_later(self.timeout, self._on_timeout)
        for entry in entries:  # deliver them all before the job may be judged idle
            await self._deliver(entry.routine_id, entry.slot_name, _wrap(entry.data), None)
        self._settle()

    async def post(self, routine_id: str, slot: str, data: Any = None, *, timeout: float | None = None) -> None:
        """Queue ``data`` at ``routine_id.slot``; waits while the slot is full.

        Accepted while pending, running, idle or paused (parked until resume, never dropped).
        A non-dict value is wrapped as ``{"data": value}``.
        """
        self._require("post to", ACCEPTS_POST)
        self.plan.check_port(routine_id, slot)
        await self._deliver(routine_id, slot, _wrap(data), None, timeout)
        self.changes += 1
        self._settle()

    def pause(self, reason: str | None = None, *, routine_id: str | None = None) -> None:
        """Start no new activations; those in flight finish. Pausing a paused job is a no-op.
        ``routine_id``: the routine the pause is about (a debugger stopping before it)."""
        if self.status is JobStatus.PAUSED:
            return
        self._require("pause", RUNNABLE)
        self.status = JobStatus.PAUSED
        self._resumed = anyio.Event()
        active = [rid for rid, run in self._runs.items() if run.active]
        point = PausePoint(paused_at=utc_now(), reason=reason, active_routines=active, routine_id=routine_id)
        self.pause_points.append(point)
        self.changes += 1
        self._publish("job_pause", None, {"reason": reason, "active_routines": active})

    def resume(self) -> None:
        """Continue a paused job. Resuming a running or idle job is a no-op."""
        if self.status in RUNNABLE:
            return
        self._require("resume", frozenset({JobStatus.PAUSED}))
        self.status = JobStatus.RUNNING
        if self.pause_points and self.pause_points[-1].resumed_at is None:
            last = self.pause_points[-1]
            self.pause_points[-1] = msgspec.structs.replace(last, resumed_at=utc_now())
        self._publish("job_resume", None, {})
        self.changes += 1
        self._resumed.set()
        for rid in self._runs:
            self._schedule(rid)
        self._settle()

    def cancel(self, reason: str | None = None) -> None:
        """End the job now: async logic is cancelled, thread results are abandoned."""
        self._require("cancel", LIVE_STATUSES)
        self._finish(JobStatus.CANCELLED, {"type": "cancelled", "message": reason or "cancelled"} if reason else None)

    def complete(self) -> None:
        """Mark the job completed from outside; anything still in flight is abandoned."""
        self._require("complete", LIVE_STATUSES)
        self._finish(JobStatus.COMPLETED, None)

    def fail(self, message: str = "failed by request", error_type: str = "failed_by_request") -> None:
        """Mark the job failed from outside with ``message``."""
        self._require("fail", LIVE_STATUSES)
        self._finish(JobStatus.FAILED, {"type": error_type, "message": message})

    # ------------------------------------------------------------------------------------------
    # Checkpoints (see routilux.engine.checkpoint)
    # ------------------------------------------------------------------------------------------
    def checkpoint(self) -> JobCheckpoint:
        """What it takes to bring this job back in another process, in its status.

        Only a running, idle or paused job has one; any other raises :class:`IllegalTransition`
        (an ended job is wholly described by its stored record, and a pending one is not yet
        started). Cheap: it copies references and queue lists, not values, so it shares
        ``shared_data`` and queued items with the job: encode it before the job runs on
        (:meth:`checkpoint_bytes`).
        """
        if self.status not in CHECKPOINT_STATUSES:
            raise IllegalTransition(self.job_id, self.status.value, "checkpoint")
        now = anyio.current_time()
        timeout = self._timeout_handle
        policies = self.plan.policies
        return JobCheckpoint(
            version=CHECKPOINT_VERSION,
            job_id=self.job_id,
            flow_id=self.flow_id,
            runtime_id=self.runtime_id,
            status=self.status,
            taken_at=utc_now(),
            created_at=self.created_at,
            started_at=self.started_at,
            seq=self._seq,
            timeout=self.timeout,
            timeout_left=None if timeout is None else max(0.0, timeout.deadline - now),
            complete_when_idle=self.complete_when_idle,
            error=self.error,
            shared_data=self.shared_data,
            routines={rid: run.checkpoint(policies[rid], now) for rid, run in self._runs.items()},
            execution_history=list(self.execution_history),
            errors=list(self.errors),
            pause_points=list(self.pause_points),
        )

    def checkpoint_bytes(self) -> bytes:
        """:meth:`checkpoint` as JSON bytes, taken and encoded in one step (so it is consistent).
        A value that is not JSON data raises :class:`~routilux.engine.errors.CheckpointError`."""
        return encode_checkpoint(self.checkpoint())

    def _restore(self, checkpoint: JobCheckpoint, last_seq: int = 0, reason: str = "restart") -> None:
        """Become the job ``checkpoint`` describes and carry on (``Runtime.restore_job`` calls it on a
        new job). No entries run and no ``job_start`` is published: the job started long ago.
        One ``job_resume`` with ``reason`` ("restart"; "moved": to another server) marks the
        boundary, after the last event the checkpoint saw (or ``last_seq``, if later); then a
        paused job waits for resume, a live one runs what is queued.
        """
        now = anyio.current_time()
        cp = checkpoint
        self.created_at = cp.created_at
        self.started_at = cp.started_at
        self.timeout = cp.timeout
        self.error = cp.error
        self.shared_data = cp.shared_data
        self.execution_history.extend(cp.execution_history)
        self.errors.extend(cp.errors)
        self.pause_points = list(cp.pause_points)
        self._seq = max(cp.seq, last_seq)
        for rid, saved in cp.routines.items():
            # what was running will run again, as a new activation
            status = "idle" if saved.state.status == "running" else saved.state.status
            self.routine_states[rid] = msgspec.structs.replace(saved.state, status=status, active=0)
            self._runs[rid].restore(saved, self.plan.policies[rid], now)
        self.status = cp.status
        if cp.status is JobStatus.PAUSED:
            self._resumed = anyio.Event()
        self._publish("job_resume", None, {"reason": reason, "status": cp.status.value})
        if cp.timeout_left is not None:
            self._timeout_handle = self._runtime.timers.call_later(cp.timeout_left, self._on_timeout)
        if cp.status is not JobStatus.PAUSED:
            for rid in self._runs:
                self._schedule(rid)
            self._settle()

    # ------------------------------------------------------------------------------------------
    # Data flow
    # ------------------------------------------------------------------------------------------
    async def _deliver(
        self, routine_id: str, slot: str, item: dict[str, Any], source: str | None, timeout: float | None = None
    ) -> None:
        queue = self._queues[routine_id][slot]
        while not queue.put_nowait(item):
            await queue.wait_for_room(timeout)
        if self._bus.has_subscribers(self.job_id, self.flow_id):
            self._publish(
                "slot_call",
                routine_id,
                {"slot": slot, "source": source, "data": capture(item, self.options.preview_bytes)},
            )
        if self.probe is not None:
            self.probe.on_slot(self, routine_id, slot, item, source)  # a hit pauses: the item waits
        self._schedule(routine_id)

    async def _emit(self, routine_id: str, event: str, payload: dict[str, Any]) -> None:
        if self._ended:
            raise JobTerminated(f"job {self.job_id} has ended; the emission of {routine_id}.{event} is abandoned")
        routes = self.plan.routes.get((routine_id, event))
        if routes is None:
            if event not in self.plan.routines[routine_id].event_names:
                raise UnknownEvent(
                    f"routine '{routine_id}' has no event '{event}'. "
                    f"Events: {', '.join(self.plan.routines[routine_id].event_names) or 'none'}",
                    routine_id=routine_id,
                    event=event,
                )
            routes = ()
        if self._bus.has_subscribers(self.job_id, self.flow_id):
            self._publish(
                "event_emit",
                routine_id,
                {"event": event, "data": capture(payload, self.options.preview_bytes), "targets": len(routes)},
            )
        probe = self.probe
        if probe is not None and probe.on_emit(self, routine_id, event, payload):
            await self._held()
        source = f"{routine_id}.{event}"
        last = len(routes) - 1
        for i, route in enumerate(routes):
            # Each target gets its own top-level dict, so one consumer can't rewrite another's.
            item = payload if i == last else dict(payload)
            probe = self.probe
            if probe is not None and probe.on_connection(self, source, route.target_routine, route.target_slot, item):
                await self._held()
            await self._deliver(route.target_routine, route.target_slot, item, source)

    def _log(self, routine_id: str, level: str, message: str, fields: dict[str, Any]) -> None:
        fields_preview = capture(fields, self.options.preview_bytes)
        self._publish("log", routine_id, {"level": level, "message": message, "fields": fields_preview})

    def _progress(self, routine_id: str, fraction: float, message: str | None) -> None:
        fraction = min(1.0, max(0.0, float(fraction)))
        self._publish("progress", routine_id, {"fraction": fraction, "message": message})

    async def _held(self) -> None:
        """Wait, holding whatever the caller holds, until the job is resumed (or ends)."""
        while self.status is JobStatus.PAUSED:
            await self._resumed.wait()
        if self._ended:
            raise JobTerminated(f"job {self.job_id} ended while held at a breakpoint")

    # ------------------------------------------------------------------------------------------
    # Scheduling
    # ------------------------------------------------------------------------------------------
    def _schedule(self, routine_id: str, draining: bool = False) -> None:
        """Start as many activations of ``routine_id`` as its policy and concurrency allow."""
        if self.status not in RUNNABLE:
            return
        run = self._runs[routine_id]
        policy = self.plan.policies[routine_id]
        run.draining = draining
        try:
            while run.active < run.max_active:
                if run.redelivered:  # after a restore, until the re-queued items are taken
                    taken, again = run.take_redelivered(policy)
                else:
                    taken, again = policy.take(run), False
                if taken is None:
                    break
                self._start_activation(run, taken, again)
        except Exception as exc:  # a custom policy's bug fails this job, never the runtime
            record = ErrorRecord(
                routine_id=routine_id,
                type="policy_error",
                message=f"activation policy {policy!r} raised {type(exc).__name__}: {exc}",
                traceback="".join(tb.format_exception(exc)),
                timestamp=utc_now(),
            )
            self.errors.append(record)
            self._finish(JobStatus.FAILED, record.job_error())
        finally:
            run.draining = False

    def _start_activation(self, run: RoutineRun, taken: Taken, redelivered: bool) -> None:
        if self.status is JobStatus.IDLE:
            self.status = JobStatus.RUNNING
        run.active += 1
        self._active += 1
        self._runtime.spawn(run.activate, taken, redelivered)
        run.in_flight[id(taken)] = {slot: items[:] for slot, items in taken.items()}

    def _settle(self) -> None:
        """If nothing is running or runnable, the job is idle (and completes if asked to).

        A job that completes when idle first gets a draining pass: policies may flush partial
        work (a half-full batch) so it ends with nothing stuck. Other jobs keep partial batches
        queued, since more input may still be posted.
        """
        if self.status is not JobStatus.RUNNING or self._active:
            return
        if self.complete_when_idle:
            for rid in self._runs:
                self._schedule(rid, draining=True)
                if self._active:
                    return
        if any(run.wake is not None for run in self._runs.values()):
            return
        self.status = JobStatus.IDLE
        self.changes += 1
        self._publish("job_idle", None, {})
        if self.complete_when_idle:
            self._finish(JobStatus.COMPLETED, None)

    def _on_wake(self, routine_id: str) -> None:
        run = self._runs[routine_id]
        run.wake = None
        if not self._ended:
            self._schedule(run.routine_id)
            self._settle()

    def _on_timeout(self) -> None:
        self._timeout_handle = None
        if self._ended:
            return
        record = ErrorRecord(
            routine_id=None,
            type="timeout",
            message=f"job exceeded its timeout of {self.timeout:g} seconds",
            traceback=None,
            timestamp=utc_now(),
        )
        self.errors.append(record)
        self._finish(JobStatus.FAILED, record.job_error())

    # ------------------------------------------------------------------------------------------
    # Ending and publishing
    # ------------------------------------------------------------------------------------------
    def _finish(self, status: JobStatus, error: dict[str, Any] | None) -> None:
        """Enter a terminal status exactly once; ``job_end`` is the job's last event."""
        if self._ended:
            return
        self._ended = True
        self.status = status
        self._resumed.set()  # anything held at a breakpoint wakes up and sees the end
        self.error = error
        self.completed_at = utc_now()
        for scope in list(self._scopes):
            scope.cancel()
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
            self._timeout_handle = None
        for rid, run in self._runs.items():
            if run.wake is not None:
                run.wake.cancel()
                run.wake = None
            for queue in run.queues.values():
                queue.close()
            state = self.routine_states[rid]
            if run.active and state.status == "running":
                state.status = "cancelled"
            elif status is JobStatus.COMPLETED and state.status == "idle":
                state.status = "completed"
            state.active = 0
        unconsumed = sum(len(q) for queues in self._queues.values() for q in queues.values())
        self._publish("job_end", None, {"status": status.value, "error": error, "unconsumed": unconsumed})
        self._events_closed = True
        self._done.set()
        self._runtime._job_ended(self.job_id)

    def publish(self, type_: EventType, routine_id: str | None, data: dict[str, Any]) -> None:
        """Publish an event of this job (for probes: ``breakpoint_hit``, ``debug_step``)."""
        self._publish(type_, routine_id, data)

    def _publish(self, type_: EventType, routine_id: str | None, data: dict[str, Any]) -> None:
        if self._events_closed:
            return
        if self._handoff.pending:
            self._handoff.drain()
        self._seq += 1
        self._bus.publish(
            Event(
                seq=self._seq,
                type=type_,
                job_id=self.job_id,
                flow_id=self.flow_id,
                routine_id=routine_id,
                timestamp=utc_now(),
                data=data,
            )
        )

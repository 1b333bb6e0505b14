"""One routine within one job: its slot queues, its policy's memory, and running its activations.

An activation is one call of the routine's logic with the items its policy took. It runs as a
task of the job's runtime: attempt after attempt while the routine's error handler says retry,
async logic on the loop and sync logic in a worker thread whose emissions, logs and progress are
pumped back onto the loop (:class:`~routilux.engine.outbox.Outbox`). Each attempt is published
(``routine_start``, ``routine_end``) and recorded in the job's history; an error is handled by the
routine's strategy, and ``stop`` (or retries exhausted) fails the job.

The job hands each run its routine and error handler (from the plan) and is itself seen only as
an :class:`~routilux.engine.ports.ActivationJob`, so this module does not import the job's.

A run also knows the items its activations in flight took (:attr:`RoutineRun.in_flight`), so a
checkpoint can put them back at the front of their queues: after a restore they run again, and
the activation that takes them is told so (``ctx.redelivered``: delivery is at-least-once).
"""

from __future__ import annotations

import logging
import time
import traceback as tb
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from routilux.bus.events import utc_now
from routilux.bus.payloads import ActivationStatus
from routilux.bus.status import JobStatus
from routilux.engine.checkpoint import RoutineCheckpoint
from routilux.engine.errors import JobTerminated
from routilux.engine.flow import ErrorHandler
from routilux.engine.outbox import Outbox
from routilux.engine.policies import ActivationPolicy, Taken
from routilux.engine.ports import ActivationJob
from routilux.engine.records import ErrorRecord, ExecutionRecord
from routilux.engine.routine import Context, Routine, ThreadContext
from routilux.engine.slots import SlotQueue

if TYPE_CHECKING:
    from routilux.engine.timers import TimerHandle

log = logging.getLogger("routilux.engine")

#: The longest an activation waits for a congested bus (see :mod:`routilux.bus.bus`) before it
#: starts anyway: history that must not be lost slows jobs down, a stuck reader never stops them.
BACKPRESSURE_WAIT_SECONDS = 5.0


class RoutineRun:
    """The per-job side of one routine. It is also the
    :class:`~routilux.engine.policies.PolicyView` handed to the routine's policy."""

    __slots__ = (
        "active", "draining", "handler", "in_flight", "job", "max_active", "queues", "redelivered", "routine",
        "routine_id", "state", "wake",
    )

    def __init__(
        self,
        job: ActivationJob,
        routine_id: str,
        routine: Routine,
        handler: ErrorHandler,
        queues: dict[str, SlotQueue],
        max_active: int,
    ) -> None:
        self.job = job
        self.routine_id = routine_id
        self.routine = routine
        self.handler = handler
        self.queues = queues
        self.state: dict[str, Any] = {}
        self.active = 0
        self.max_active = max_active
        self.wake: TimerHandle | None = None
        self.draining = False
        #: What each activation in flight took, keyed by ``id()`` of its ``taken``, oldest first:
        #: copies of the lists, so logic that consumes its input in place changes nothing here.
        self.in_flight: dict[int, Taken] = {}
        #: After a restore: how many items at the front of each slot are redelivered ones.
        #: Empty otherwise, and then it costs one truth test per activation.
        self.redelivered: dict[str, int] = {}

    # -- policy view -------------------------------------------------------------------------
    @property
    def now(self) -> float:
        return anyio.current_time()

    def wake_at(self, deadline: float) -> None:
        if self.wake is not None:
            if self.wake.deadline <= deadline:
                return
            self.wake.cancel()
        self.wake = self.job._runtime.timers.call_at(deadline, self.job._on_wake, self.routine_id)

    # -- taking items ------------------------------------------------------------------------
    def take_redelivered(self, policy: ActivationPolicy) -> tuple[Taken | None, bool]:
        """``policy.take`` while re-queued items are at the front of some slots: also says
        whether this activation gets any of them, and counts them off."""
        counted = self.redelivered
        before = {slot: len(self.queues[slot]) for slot in counted}
        taken = policy.take(self)
        if taken is None:
            return None, False
        again = False
        for slot, length in before.items():
            took = length - len(self.queues[slot])  # take() is synchronous: nothing arrived since
            if took > 0:
                again = True
                left = counted[slot] - took
                if left > 0:
                    counted[slot] = left
                else:
                    del counted[slot]
        return taken, again

    # -- checkpoints -----------------------------------------------------------------------
    def checkpoint(self, policy: ActivationPolicy, now: float) -> RoutineCheckpoint:
        """This routine's part of a job checkpoint: what activations in flight took goes back to
        the front of its slots (oldest activation first), ahead of what is queued."""
        front: dict[str, list[Any]] = {}
        for taken in self.in_flight.values():
            for slot, items in taken.items():
                if items:
                    front.setdefault(slot, []).extend(items)
        queues: dict[str, list[Any]] = {}
        redelivered: dict[str, int] = {}
        for slot, queue in self.queues.items():
            items = front.get(slot, [])
            again = len(items) + self.redelivered.get(slot, 0)
            items += queue.peek()
            if items:
                queues[slot] = items
            if again:
                redelivered[slot] = again
        wake = self.wake
        return RoutineCheckpoint(
            state=msgspec.structs.replace(self.job.routine_states[self.routine_id]),
            queues=queues,
            redelivered=redelivered,
            policy_state=policy.save_state(self.state, now),
            wake_in=None if wake is None or wake.cancelled else max(0.0, wake.deadline - now),
        )

    def restore(self, saved: RoutineCheckpoint, policy: ActivationPolicy, now: float) -> None:
        """Take back what :meth:`checkpoint` saved, with times counted from ``now``."""
        for slot, items in saved.queues.items():
            self.queues[slot].refill(items)
        self.redelivered = {slot: n for slot, n in saved.redelivered.items() if n > 0}
        self.state = policy.load_state(saved.policy_state, now)
        if saved.wake_in is not None:
            self.wake_at(now + saved.wake_in)

    # -- one activation ----------------------------------------------------------------------
    async def activate(self, taken: Taken, redelivered: bool = False) -> None:
        """Run one activation to its end, applying the routine's error strategy."""
        job = self.job
        rid = self.routine_id
        with anyio.CancelScope() as scope:
            job._scopes.add(scope)
            try:
                await self._attempts(taken, redelivered)
            except JobTerminated:
                pass  # the job ended under us; its results are abandoned by design
            except Exception as exc:  # a bug in the engine: fail this job, keep the runtime alive
                log.exception("internal error in job %s routine %s", job.job_id, rid)
                if not job._ended:
                    error = {"type": "internal_error", "message": f"{type(exc).__name__}: {exc}", "routine_id": rid}
                    job._finish(JobStatus.FAILED, error)
            finally:
                job._scopes.discard(scope)
                del self.in_flight[id(taken)]
                self.active -= 1
                job._active -= 1
                job.changes += 1
                state = job.routine_states[rid]
                state.active = self.active
                if not job._ended:
                    if state.status == "running" and not self.active:
                        state.status = "idle"
                    job._schedule(rid)
                    job._settle()

    async def _attempts(self, taken: Taken, redelivered: bool) -> None:
        job = self.job
        rid = self.routine_id
        if job.status is JobStatus.PAUSED:
            # Started just before a pause but not yet running: it waits, like any new activation.
            await job._held()
        if job.probe is not None and job.probe.before_activation(job, rid, taken):
            await job._held()
        bus = job._runtime.bus
        if bus.congested:
            # A subscriber that must not lose events (the job history) is behind: let it catch
            # up before this activation adds more, but never wait longer than the bound.
            await bus.wait_for_room(BACKPRESSURE_WAIT_SECONDS)
        routine = self.routine
        handler = self.handler
        state = job.routine_states[rid]
        count = sum(len(v) for v in taken.values())
        attempt = 1
        while True:
            started = utc_now()
            t0 = time.perf_counter()
            state.status = "running"
            state.active = self.active
            job._publish(
                "routine_start", rid,
                {"attempt": attempt, "items": {k: len(v) for k, v in taken.items()}, "thread": not routine.is_async},
            )
            try:
                if routine.is_async:
                    await routine.logic(Context(job, rid, routine.config, attempt, redelivered), **taken)
                else:
                    await self._run_in_thread(routine, taken, attempt, redelivered)
            except JobTerminated:
                raise
            except Exception as exc:
                if job._ended:
                    raise JobTerminated("job ended during the activation") from None
                status = self._on_error(exc, handler, attempt, started, t0, count)
                if status == "retrying":
                    await anyio.sleep(handler.delay_before(attempt))
                    if job._ended:
                        return
                    attempt += 1
                    continue
                return
            if job._ended:
                return
            duration = time.perf_counter() - t0
            state.execution_count += 1
            state.last_execution = started
            self._record("completed", started, duration, count, attempt, None)
            job._publish("routine_end", rid, {"status": "completed", "duration": duration, "attempt": attempt,
                                              "error": None})
            return

    async def _run_in_thread(self, routine: Routine, taken: Taken, attempt: int, redelivered: bool) -> None:
        """Run sync logic in a worker thread while a pump delivers its outbox on the loop."""
        job = self.job
        outbox = Outbox(job._handoff)
        ctx = ThreadContext(job, self.routine_id, routine.config, attempt, outbox, redelivered)
        call = partial(routine.logic, ctx, **taken)
        pumped = anyio.Event()
        job._runtime.spawn(self._pump, outbox, pumped)
        try:
            await anyio.to_thread.run_sync(call, abandon_on_cancel=True, limiter=job._runtime.limiter)
        except Exception:
            # What the logic emitted before it raised is still delivered, and before any retry.
            outbox.close()
            await pumped.wait()
            raise
        except BaseException:  # cancelled: the thread is abandoned, and so is what it emits
            outbox.abort(JobTerminated("the activation was cancelled; its emissions are abandoned"))
            outbox.close()
            raise
        outbox.close()
        await pumped.wait()
        if outbox.error is not None:
            raise outbox.error

    async def _pump(self, outbox: Outbox, pumped: anyio.Event) -> None:
        job = self.job
        rid = self.routine_id
        with anyio.CancelScope() as scope:
            job._scopes.add(scope)
            try:
                while await outbox.wait():
                    for kind, a, b, c in outbox.take():
                        if kind == "emit":
                            await job._emit(rid, a, b)
                        elif kind == "log":
                            job._log(rid, a, b, c)
                        else:
                            job._progress(rid, a, b)
            except Exception as exc:  # SlotFull, UnknownEvent, JobTerminated: the thread learns of it
                outbox.abort(exc)
            finally:
                job._scopes.discard(scope)
                pumped.set()

    def _on_error(
        self, exc: Exception, handler: ErrorHandler, attempt: int, started: datetime, t0: float, count: int
    ) -> ActivationStatus:
        job = self.job
        rid = self.routine_id
        duration = time.perf_counter() - t0
        state = job.routine_states[rid]
        state.execution_count += 1
        state.last_execution = started
        record = ErrorRecord(
            routine_id=rid,
            type=type(exc).__name__,
            message=str(exc),
            traceback="".join(tb.format_exception(exc)),
            timestamp=utc_now(),
            attempt=attempt,
            strategy=handler.strategy,
        )
        summary = f"{record.type}: {record.message}"
        strategy = handler.strategy
        status: ActivationStatus
        if strategy == "retry" and attempt <= handler.max_retries:
            status = "retrying"
        elif strategy == "continue":
            status = "failed"
        elif strategy == "skip":
            status = "skipped"
        else:
            status = "failed"
        if status != "skipped":
            job.errors.append(record)
            state.error_count += 1
            state.error = record.job_error()
        state.status = "running" if status == "retrying" else status
        self._record(status, started, duration, count, attempt, summary)
        job._publish(
            "routine_end",
            rid,
            {"status": status, "duration": duration, "attempt": attempt,
             "error": {"type": record.type, "message": record.message}},
        )
        fatal = strategy == "stop" or (strategy == "retry" and status != "retrying")
        if fatal:
            job._finish(JobStatus.FAILED, record.job_error())
        return status

    def _record(
        self, status: ActivationStatus, started: datetime, duration: float, items: int, attempt: int, error: str | None
    ) -> None:
        self.job.execution_history.append(
            ExecutionRecord(
                routine_id=self.routine_id,
                status=status,
                started_at=started,
                ended_at=utc_now(),
                duration=duration,
                items=items,
                attempt=attempt,
                error=error,
            )
        )

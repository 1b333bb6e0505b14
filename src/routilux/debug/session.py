"""A debug session: one job's breakpoints, where it stopped, and what it was holding.

:class:`JobDebugger` is the job's :class:`~routilux.engine.probe.Probe`. When a breakpoint is hit
it pauses that job only, publishes ``breakpoint_hit`` with a preview of the data, and tells the
engine to hold the data right there. ``step`` lets exactly the held activation run and stops again
before the job's next activation (``debug_step``); ``continue`` runs until the next hit. Job
pause/resume/cancel keep working: resuming the job is the same as continuing.

A condition that raises or is not a boolean is reported in the session and counts as not hit.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Final

from routilux.bus.events import capture, utc_now
from routilux.debug.breakpoints import Breakpoint
from routilux.debug.expressions import ExpressionError, evaluate
from routilux.engine import Job, JobStatus
from routilux.engine.policies import Taken

CALL_STACK_DEPTH: Final = 50
MAX_CONDITION_ERRORS: Final = 50
MAX_BREAKPOINTS: Final = 100
CONDITION_TIME_LIMIT: Final = 0.01  # conditions run on the event loop: keep each one short


def _names(item: Any, extra: dict[str, Any]) -> dict[str, Any]:
    """What a condition sees: the item's keys as names, plus ``item`` and the context."""
    names = dict(item) if isinstance(item, dict) else {}
    names.update(extra)
    names["item"] = item
    return names


class JobDebugger:
    def __init__(self, job: Job) -> None:
        self.job = job
        self.breakpoints: dict[str, Breakpoint] = {}
        self.call_stack: deque[dict[str, Any]] = deque(maxlen=CALL_STACK_DEPTH)
        self.condition_errors: deque[dict[str, Any]] = deque(maxlen=MAX_CONDITION_ERRORS)
        self.stepping = False
        self.stops = 0
        self._paused_at: dict[str, Any] | None = None
        self._held: dict[str, Any] | None = None
        self._pause_index = -1  # which of the job's pause points our stop is

    # -- breakpoints ---------------------------------------------------------------------------
    def add(self, breakpoint: Breakpoint) -> None:
        if len(self.breakpoints) >= MAX_BREAKPOINTS:
            raise ValueError(f"a job may have at most {MAX_BREAKPOINTS} breakpoints")
        self.breakpoints[breakpoint.breakpoint_id] = breakpoint

    def remove(self, breakpoint_id: str) -> Breakpoint | None:
        return self.breakpoints.pop(breakpoint_id, None)

    # -- control -------------------------------------------------------------------------------
    @property
    def is_paused(self) -> bool:
        """Stopped at a breakpoint or step — and still in that very pause (a job resumed through
        the job API and paused again later has no frame)."""
        job = self.job
        return (
            job.status is JobStatus.PAUSED
            and self._paused_at is not None
            and len(job.pause_points) == self._pause_index
        )

    def step(self) -> None:
        """Run the held activation (or the next one) and stop before the one after."""
        self.stepping = True
        self._resume()

    def continue_(self) -> None:
        self.stepping = False
        self._resume()

    def _resume(self) -> None:
        self._paused_at = None
        self._held = None
        self.job.resume()

    # -- probe ---------------------------------------------------------------------------------
    @property
    def armed(self) -> bool:
        """Anything to do at all: an enabled breakpoint, or a step to finish."""
        return self.stepping or any(bp.enabled for bp in self.breakpoints.values())

    def before_activation(self, job: Job, routine_id: str, taken: Taken) -> bool:
        if not self.armed:
            return False
        items = [item for values in taken.values() for item in values]
        self.call_stack.appendleft(
            {"kind": "activation", "routine_id": routine_id, "items": len(items), "at": utc_now()}
        )
        config = job.plan.routines[routine_id].config_dict()
        if self.stepping:
            self.stepping = False
            self._stop(None, "step", routine_id, {"items": items, "taken": taken}, config, slot=None, event=None)
            return True
        for bp in self._enabled("routine", routine_id):
            for slot, values in taken.items():
                for item in values:
                    if self._condition(bp, item, {"routine_id": routine_id, "slot": slot, "config": config}):
                        self._stop(bp, "breakpoint", routine_id, {"items": items, "taken": taken, "item": item},
                                   config, slot=slot, event=None)
                        return True
        return False

    def on_slot(self, job: Job, routine_id: str, slot: str, item: dict[str, Any], source: str | None) -> bool:
        if not self.breakpoints or self.is_paused:  # already stopped: the item simply waits
            return False
        config = None
        for bp in self._enabled("slot", routine_id):
            if bp.slot_name != slot:
                continue
            config = config if config is not None else job.plan.routines[routine_id].config_dict()
            if self._condition(bp, item, {"routine_id": routine_id, "slot": slot, "source": source, "config": config}):
                self._stop(bp, "breakpoint", routine_id, {"item": item, "source": source}, config,
                           slot=slot, event=None)
                return True
        return False

    def on_emit(self, job: Job, routine_id: str, event: str, payload: dict[str, Any]) -> bool:
        if not self.armed:
            return False
        self.call_stack.appendleft({"kind": "emission", "routine_id": routine_id, "event": event, "at": utc_now()})
        config = None
        for bp in self._enabled("event", routine_id):
            if bp.event_name != event:
                continue
            config = config if config is not None else job.plan.routines[routine_id].config_dict()
            if self._condition(bp, payload, {"routine_id": routine_id, "event": event, "config": config}):
                self._stop(bp, "breakpoint", routine_id, {"item": payload}, config, slot=None, event=event)
                return True
        return False

    def on_connection(self, job: Job, source: str, target_routine: str, target_slot: str, item: dict[str, Any]) -> bool:
        if not self.breakpoints:
            return False
        target = f"{target_routine}.{target_slot}"
        for bp in self.breakpoints.values():
            if bp.type != "connection" or not bp.enabled or bp.source != source or bp.target != target:
                continue
            routine_id = source.partition(".")[0]
            config = job.plan.routines[routine_id].config_dict()
            extra = {"routine_id": routine_id, "source": source, "target": target, "config": config}
            if self._condition(bp, item, extra):
                self._stop(bp, "breakpoint", routine_id, {"item": item, "source": source, "target": target}, config,
                           slot=target_slot, event=source.partition(".")[2])
                return True
        return False

    def _enabled(self, kind: str, routine_id: str) -> list[Breakpoint]:
        return [bp for bp in self.breakpoints.values()
                if bp.enabled and bp.type == kind and bp.routine_id == routine_id]

    def _condition(self, bp: Breakpoint, item: Any, extra: dict[str, Any]) -> bool:
        if bp.compiled is None:
            bp.hit_count += 1
            return True
        try:
            result = evaluate(bp.compiled, _names(item, extra), time_limit=CONDITION_TIME_LIMIT)
        except ExpressionError as exc:
            self._condition_error(bp, exc.kind, exc.message)
            return False
        if not isinstance(result, bool):
            self._condition_error(bp, "type", f"a condition must be true or false, got {type(result).__name__}")
            return False
        if result:
            bp.hit_count += 1
        return result

    def _condition_error(self, bp: Breakpoint, kind: str, message: str) -> None:
        self.condition_errors.appendleft(
            {"breakpoint_id": bp.breakpoint_id, "kind": kind, "message": message, "at": utc_now()}
        )

    def _stop(
        self, bp: Breakpoint | None, reason: str, routine_id: str, held: dict[str, Any], config: dict[str, Any],
        *, slot: str | None, event: str | None,
    ) -> None:
        job = self.job
        self.stops += 1
        self._paused_at = {
            "breakpoint_id": bp.breakpoint_id if bp else None,
            "type": bp.type if bp else "step",
            "routine_id": routine_id,
            "slot": slot,
            "event": event,
            "reason": reason,
            "at": utc_now(),
        }
        self._held = {"data": held, "config": config}
        if job.status is not JobStatus.PAUSED:
            job.pause(f"breakpoint {bp.breakpoint_id}" if bp else "step", routine_id=routine_id)
        self._pause_index = len(job.pause_points)
        preview = capture(held.get("item", held.get("items")), job.options.preview_bytes)
        if bp is not None:
            job.publish("breakpoint_hit", routine_id, {**self._paused_at, "data": preview,
                                                        "hit_count": bp.hit_count})
        else:
            job.publish("debug_step", routine_id, {**self._paused_at, "data": preview})

    # -- views ---------------------------------------------------------------------------------
    def paused_at(self) -> dict[str, Any] | None:
        return self._paused_at if self.is_paused else None

    def variables(self) -> dict[str, Any] | None:
        """The held data, the routine config and the job's state — None unless stopped."""
        if not self.is_paused or self._held is None:
            return None
        data = self._held["data"]
        return {
            "data": {k: v for k, v in data.items() if k != "taken"},
            "config": self._held["config"],
            "state": self.job.shared_data,
        }

    @property
    def frame_routine(self) -> str | None:
        """The routine of the frame the job is stopped at (None when it is not stopped)."""
        return self._paused_at["routine_id"] if self.is_paused and self._paused_at is not None else None

    def set_variable(self, name: str, value: Any) -> None:
        """Set ``name`` in the item the job is stopped with (the item a condition saw, or the
        first item of the held activation): what the routine then gets, what ``variables`` and
        ``evaluate`` show. The item is a plain dict of JSON data held before any logic ran, so
        changing it is what posting it that way would have been. LookupError when not stopped."""
        if not self.is_paused or self._held is None:
            raise LookupError("the job is not stopped at a breakpoint or step")
        data = self._held["data"]
        item = data.get("item")
        if item is None and data.get("items"):
            item = data["items"][0]
        if not isinstance(item, dict):
            raise LookupError("the frame holds no item")
        item[name] = value

    def frame_names(self) -> dict[str, Any] | None:
        """What ``evaluate`` without variables sees: like a condition at the stop point."""
        if not self.is_paused or self._held is None or self._paused_at is None:
            return None
        data = self._held["data"]
        item = data.get("item")
        if item is None and data.get("items"):
            item = data["items"][0]
        extra = {
            "routine_id": self._paused_at["routine_id"],
            "slot": self._paused_at["slot"],
            "event": self._paused_at["event"],
            "config": self._held["config"],
            "items": data.get("items", [item] if item is not None else []),
            "state": self.job.shared_data,
        }
        return _names(item, extra)

    def view(self) -> dict[str, Any]:
        return {
            "job_id": self.job.job_id,
            "status": "paused" if self.is_paused else self.job.status.value,
            "paused_at": self.paused_at(),
            "variables": self.variables(),
            "call_stack": list(self.call_stack),
            "breakpoints": [bp.view() for bp in self.breakpoints.values()],
            "condition_errors": list(self.condition_errors),
            "stepping": self.stepping,
        }


def attach(job: Job) -> JobDebugger:
    """The job's debugger, attaching one if it has none yet."""
    probe = job.probe
    if isinstance(probe, JobDebugger):
        return probe
    debugger = JobDebugger(job)
    job.probe = debugger
    return debugger



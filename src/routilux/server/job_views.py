"""How a job looks to clients: the one view every REST answer and WebSocket snapshot shares.

The engine and the store keep a job's errors as objects (type, message, routine, traceback).
Clients — the Routilux Overseer dashboard among them — show ``error`` as text, so wherever a job
or a routine state is shown, ``error`` is ``"<Type>: <message>"`` and the object is beside it as
``error_detail``. Execution-history records and pause points also carry the names a dashboard
reads (``timestamp``, ``event_name``, ``data``; ``timestamp``, ``current_routine_id``), and a
job's state says when it last changed (``updated_at``). Everything is computed here, when a job
is shown: what the engine holds and what the store keeps stay as they are, so records stored
before these fields existed show them too.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import msgspec

from routilux.bus import JobStatus
from routilux.engine import Job
from routilux.engine.records import error_summary
from routilux.store.base import JobRecord


class JobView(msgspec.Struct):
    """A job as the API shows it (``JobView`` in the spec)."""

    job_id: str
    flow_id: str
    runtime_id: str
    status: JobStatus
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    error: str | None
    error_detail: dict[str, Any] | None
    timeout: float | None
    complete_when_idle: bool


def error_fields(error: Mapping[str, Any] | None) -> dict[str, Any]:
    """``error`` as text and ``error_detail`` as the object, for a job or a routine state."""
    return {"error": error_summary(error), "error_detail": None if error is None else dict(error)}


def job_view(job: Job | JobRecord) -> JobView:
    """A job as the API shows it, whether it is live or only remembered by the store."""
    return JobView(
        job_id=job.job_id,
        flow_id=job.flow_id,
        runtime_id=job.runtime_id,
        status=JobStatus(job.status),
        created_at=job.created_at,
        started_at=job.started_at,
        completed_at=job.completed_at,
        timeout=job.timeout,
        complete_when_idle=job.complete_when_idle,
        **error_fields(job.error),
    )


def routine_states_view(states: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    return {rid: {**state, **error_fields(state.get("error"))} for rid, state in states.items()}


def history_record_view(record: Mapping[str, Any]) -> dict[str, Any]:
    """One activation: the engine's record, plus ``timestamp`` (when it started), ``event_name``
    (``routine_end``, the event that closed it) and ``data`` (what that event said of it)."""
    return {
        **record,
        "timestamp": record["started_at"],
        "event_name": "routine_end",
        "data": {key: record.get(key) for key in ("items", "duration", "attempt", "error")},
    }


def pause_point_view(point: Mapping[str, Any]) -> dict[str, Any]:
    """A pause: ``timestamp`` (when it paused) and ``current_routine_id`` — the routine a debugger
    stopped before, or else the first routine still running when the job was paused."""
    view = {key: value for key, value in point.items() if key != "routine_id"}
    active = point.get("active_routines") or []
    view["timestamp"] = point["paused_at"]
    view["current_routine_id"] = point.get("routine_id") or (active[0] if active else None)
    return view


def _latest(times: list[Any]) -> Any:
    """The latest of ISO 8601 timestamps (compared as times: their text differs in precision)."""
    return max((t for t in times if t), key=lambda t: datetime.fromisoformat(t), default=None)


def state_view(state: Mapping[str, Any]) -> dict[str, Any]:
    """A job's whole state (the engine's ``Job.state()``, or a stored record's fields and state)
    as the API shows it; ``updated_at`` is its latest change: start, end, an activation ending, a
    pause or a resume."""
    view = {**state, **error_fields(state.get("error"))}
    view["routine_states"] = routine_states_view(state.get("routine_states", {}))
    view["execution_history"] = [history_record_view(r) for r in state.get("execution_history", [])]
    view["pause_points"] = [pause_point_view(p) for p in state.get("pause_points", [])]
    history = state.get("execution_history") or [{}]
    pauses = state.get("pause_points") or [{}]
    view["updated_at"] = _latest([
        state.get("created_at"), state.get("started_at"), state.get("completed_at"),
        history[-1].get("ended_at"), pauses[-1].get("paused_at"), pauses[-1].get("resumed_at"),
    ])
    return view

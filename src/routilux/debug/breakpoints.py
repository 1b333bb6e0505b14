"""Breakpoints: where to stop one job, and on what condition.

Four kinds: ``routine`` (before the routine's logic runs, with the items its policy took),
``slot`` (when data arrives at a slot), ``event`` (when a routine emits) and ``connection`` (data
crossing one connection). A condition, if any, is an expression of :mod:`routilux.debug.expressions`
evaluated against the data at that point; the breakpoint is hit when it is true.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from routilux.bus.events import utc_now
from routilux.debug.expressions import Expression, compile_expression
from routilux.engine.plan import FlowPlan

Kind = Literal["routine", "slot", "event", "connection"]


class BreakpointSpecError(ValueError):
    """A breakpoint asks for something that does not fit together or does not exist."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass
class Breakpoint:
    breakpoint_id: str
    job_id: str
    type: Kind
    routine_id: str | None
    slot_name: str | None
    event_name: str | None
    source: str | None  # "routine.event", connection breakpoints
    target: str | None  # "routine.slot", connection breakpoints
    condition: str | None
    enabled: bool
    hit_count: int
    created_at: datetime
    compiled: Expression | None = None

    def view(self) -> dict[str, Any]:
        """The breakpoint as the API shows it."""
        return {
            "breakpoint_id": self.breakpoint_id,
            "job_id": self.job_id,
            "type": self.type,
            "routine_id": self.routine_id,
            "slot_name": self.slot_name,
            "event_name": self.event_name,
            "source": self.source,
            "target": self.target,
            "condition": self.condition,
            "enabled": self.enabled,
            "hit_count": self.hit_count,
            "created_at": self.created_at,
        }


def make_breakpoint(
    plan: FlowPlan,
    job_id: str,
    *,
    type: Kind | None,
    routine_id: str | None = None,
    slot_name: str | None = None,
    event_name: str | None = None,
    source: str | None = None,
    target: str | None = None,
    condition: str | None = None,
    enabled: bool = True,
) -> Breakpoint:
    """Check a breakpoint against the job's flow; :class:`BreakpointSpecError` says what is wrong.

    Without ``type``, the fields decide: a ``slot_name`` means ``slot``, an ``event_name``
    ``event``, ``source``/``target`` ``connection``, a ``routine_id`` alone ``routine`` (the spec's
    ``{"routine_id", "condition"}``).
    """
    if type is None:
        if source is not None or target is not None:
            type = "connection"
        elif slot_name is not None:
            type = "slot"
        elif event_name is not None:
            type = "event"
        else:
            type = "routine"
    allowed = {
        "routine": {"routine_id"},
        "slot": {"routine_id", "slot_name"},
        "event": {"routine_id", "event_name"},
        "connection": {"source", "target"},
    }[type]
    given = {
        name
        for name, value in (
            ("routine_id", routine_id), ("slot_name", slot_name), ("event_name", event_name),
            ("source", source), ("target", target),
        )
        if value is not None
    }
    for missing in sorted(allowed - given):
        raise BreakpointSpecError(f"a {type} breakpoint needs '{missing}'", f"body.{missing}")
    for extra in sorted(given - allowed):
        raise BreakpointSpecError(f"'{extra}' does not belong on a {type} breakpoint", f"body.{extra}")

    def routine(rid: str, field: str) -> Any:
        found = plan.routines.get(rid)
        if found is None:
            raise BreakpointSpecError(
                f"routine '{rid}' is not in flow '{plan.flow_id}'. Routines: {', '.join(plan.routines)}", field
            )
        return found

    if type in ("routine", "slot", "event"):
        assert routine_id is not None
        found = routine(routine_id, "body.routine_id")
        if slot_name is not None and slot_name not in found.slot_specs:
            raise BreakpointSpecError(
                f"routine '{routine_id}' has no slot '{slot_name}'. Slots: {', '.join(found.slot_specs)}",
                "body.slot_name",
            )
        if event_name is not None and event_name not in found.event_names:
            raise BreakpointSpecError(
                f"routine '{routine_id}' has no event '{event_name}'. Events: {', '.join(found.event_names)}",
                "body.event_name",
            )
    else:
        assert source is not None and target is not None
        known = {(r.index, f"{s_rid}.{s_event}", f"{r.target_routine}.{r.target_slot}")
                 for (s_rid, s_event), routes in plan.routes.items() for r in routes}
        if not any(src == source and tgt == target for _, src, tgt in known):
            listed = ", ".join(f"{src} -> {tgt}" for _, src, tgt in sorted(known)) or "none"
            raise BreakpointSpecError(
                f"flow '{plan.flow_id}' has no connection {source} -> {target}. Connections: {listed}", "body.source"
            )
    compiled = compile_expression(condition) if condition is not None else None
    return Breakpoint(
        breakpoint_id=uuid.uuid4().hex[:12],
        job_id=job_id,
        type=type,
        routine_id=routine_id,
        slot_name=slot_name,
        event_name=event_name,
        source=source,
        target=target,
        condition=condition,
        enabled=enabled,
        hit_count=0,
        created_at=utc_now(),
        compiled=compiled,
    )

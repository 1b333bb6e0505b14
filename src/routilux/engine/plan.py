"""From a flow document to something that runs.

:func:`validate_flow` checks a :class:`~routilux.engine.flow.Flow` against a registry and reports
every problem with its location; :func:`compile_flow` does the same work and, if there are no
errors, returns a :class:`FlowPlan`: routine instances, resolved policies and error handlers,
and a routing table from ``(routine, event)`` to target slots. Jobs run plans; plans are
immutable and shared by every job of a flow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from routilux.engine.errors import (
    ConfigError,
    FlowValidationError,
    Problem,
    UnknownRoutine,
    UnknownRoutineClass,
    UnknownSlot,
)
from routilux.engine.flow import (
    STOP,
    ErrorHandler,
    Flow,
    PolicySpec,
    is_valid_id,
    is_valid_routine_id,
)
from routilux.engine.policies import ActivationPolicy, AllSlotsReady, BatchSize, Custom, Immediate, TimeInterval
from routilux.engine.registry import Registry
from routilux.engine.routine import Routine


class ValidationReport(msgspec.Struct, frozen=True):
    """The outcome of validating a flow: errors stop it from running, warnings do not."""

    errors: list[Problem]
    warnings: list[Problem]

    @property
    def valid(self) -> bool:
        return not self.errors


@dataclass(frozen=True, slots=True)
class Route:
    """One connection, resolved: where an emitted payload goes."""

    index: int
    target_routine: str
    target_slot: str


@dataclass(frozen=True)
class FlowPlan:
    """A validated flow, ready to run any number of jobs."""

    flow: Flow
    routines: Mapping[str, Routine]
    policies: Mapping[str, ActivationPolicy]
    error_handlers: Mapping[str, ErrorHandler]
    routes: Mapping[tuple[str, str], tuple[Route, ...]]
    warnings: list[Problem] = field(default_factory=list)

    @property
    def flow_id(self) -> str:
        return self.flow.flow_id

    @property
    def timeout(self) -> float | None:
        return self.flow.execution.timeout

    def check_port(self, routine_id: str, slot: str) -> None:
        """Raise :class:`UnknownRoutine`/:class:`UnknownSlot` unless ``routine_id.slot`` exists."""
        routine = self.routines.get(routine_id)
        if routine is None:
            raise UnknownRoutine(
                f"routine '{routine_id}' is not in flow '{self.flow_id}'. Routines: {', '.join(self.routines)}",
                routine_id=routine_id,
            )
        if slot not in routine.slot_specs:
            raise UnknownSlot(
                f"routine '{routine_id}' has no slot '{slot}'. Slots: {', '.join(routine.slot_specs) or 'none'}",
                routine_id=routine_id,
                slot=slot,
            )


def build_policy(spec: PolicySpec, registry: Registry) -> ActivationPolicy:
    """The policy a DSL ``policy`` block describes; ``ValueError`` says what is missing."""
    if spec.type == "immediate":
        return Immediate()
    if spec.type == "all_slots_ready":
        return AllSlotsReady()
    if spec.type == "batch_size":
        if spec.n is None:
            raise ValueError("batch_size needs 'n' (the batch size)")
        flush = True if spec.flush_when_idle is None else spec.flush_when_idle
        return BatchSize(spec.n, flush_when_idle=flush)
    if spec.type == "time_interval":
        if spec.seconds is None:
            raise ValueError("time_interval needs 'seconds'")
        return TimeInterval(spec.seconds)
    if spec.name is None:
        raise ValueError("custom needs 'name' (a policy registered in Python)")
    fn = registry.get_policy(spec.name)
    if fn is None:
        available = ", ".join(registry.policy_names()) or "none"
        raise ValueError(f"unknown custom policy '{spec.name}'. Available: {available}")
    return Custom(fn, spec.name)


def _analyse(flow: Flow, registry: Registry) -> tuple[FlowPlan | None, ValidationReport]:
    errors: list[Problem] = []
    warnings: list[Problem] = []
    routines: dict[str, Routine] = {}
    policies: dict[str, ActivationPolicy] = {}
    handlers: dict[str, ErrorHandler] = {}

    if not is_valid_id(flow.flow_id):
        errors.append(
            Problem("flow_id", "invalid_id", "must be 1-128 of letters, digits, '_', '.', '-' (not '.' or '..')")
        )
    if not flow.routines:
        warnings.append(Problem("routines", "empty_flow", "the flow has no routines"))
    timeout = flow.execution.timeout
    if timeout is not None and not 0 < timeout <= 86400:
        errors.append(
            Problem("execution.timeout", "invalid_timeout", "must be > 0 and <= 86400 seconds")
        )

    for rid, spec in flow.routines.items():
        where = f"routines.{rid}"
        if not is_valid_routine_id(rid):
            errors.append(
                Problem(where, "invalid_id", "routine ids are 1-128 of letters, digits, '_', '-'")
            )
            continue
        try:
            cls = registry.get(spec.class_name)
        except UnknownRoutineClass as exc:
            errors.append(Problem(f"{where}.class", exc.code, exc.message))
            continue
        try:
            routines[rid] = cls(spec.config)
        except ConfigError as exc:
            location = f"{where}.{exc.context.get('location', 'config')}"
            message = exc.message.split(": ", 1)[-1]
            errors.append(Problem(location, exc.code, message))
            continue
        except Exception as exc:  # a routine's own __init__ rejecting its config
            errors.append(Problem(f"{where}.config", "invalid_config", f"{type(exc).__name__}: {exc}"))
            continue
        if spec.policy is not None:
            try:
                policies[rid] = build_policy(spec.policy, registry)
            except ValueError as exc:
                errors.append(Problem(f"{where}.policy", "invalid_policy", str(exc)))
        else:
            policies[rid] = routines[rid].policy  # the class's, unless its __init__ set its own
        handlers[rid] = spec.error_handler or cls.error_handler or flow.error_handler or STOP

    routes: dict[tuple[str, str], list[Route]] = {}
    seen: set[tuple[str, str]] = set()
    fed_slots: set[tuple[str, str]] = set()
    for index, conn in enumerate(flow.connections):
        where = f"connections[{index}]"
        ends: list[tuple[str, str] | None] = []
        for side, text, port_kind in (("from", conn.source, "event"), ("to", conn.target, "slot")):
            rid, dot, port = text.partition(".")
            if not dot or not rid or not port:
                errors.append(
                    Problem(f"{where}.{side}", "invalid_reference", f"'{text}' must be 'routine.{port_kind}'")
                )
                ends.append(None)
                continue
            if rid not in flow.routines:
                errors.append(
                    Problem(f"{where}.{side}", "unknown_routine", f"routine '{rid}' is not in the flow")
                )
                ends.append(None)
                continue
            routine = routines.get(rid)
            if routine is None:  # its own problem is already reported
                ends.append(None)
                continue
            ports = routine.event_names if port_kind == "event" else list(routine.slot_specs)
            if port not in ports:
                listed = ", ".join(ports) or "none"
                errors.append(
                    Problem(
                        f"{where}.{side}",
                        f"unknown_{port_kind}",
                        f"routine '{rid}' ({flow.routines[rid].class_name}) has no {port_kind} "
                        f"'{port}'. Its {port_kind}s: {listed}",
                    )
                )
                ends.append(None)
                continue
            ends.append((rid, port))
        source, target = ends
        if source is None or target is None:
            continue
        key = (conn.source, conn.target)
        if key in seen:
            errors.append(
                Problem(where, "duplicate_connection", f"{conn.source} -> {conn.target} is listed twice")
            )
            continue
        seen.add(key)
        fed_slots.add(target)
        routes.setdefault(source, []).append(Route(index, target[0], target[1]))

    for rid, routine in routines.items():
        for event in routine.event_names:
            if (rid, event) not in routes:
                warnings.append(
                    Problem(f"routines.{rid}.events.{event}", "unconnected_event", "nothing receives this event")
                )
        for slot in routine.slot_specs:
            if (rid, slot) not in fed_slots:
                warnings.append(
                    Problem(
                        f"routines.{rid}.slots.{slot}",
                        "unconnected_slot",
                        "no connection feeds this slot; it receives data only when posted",
                    )
                )

    report = ValidationReport(errors=errors, warnings=warnings)
    if errors:
        return None, report
    plan = FlowPlan(
        flow=flow,
        routines=routines,
        policies=policies,
        error_handlers=handlers,
        routes={key: tuple(value) for key, value in routes.items()},
        warnings=warnings,
    )
    return plan, report


def validate_flow(flow: Flow, registry: Registry) -> ValidationReport:
    """Every error and warning of ``flow``, each with its location."""
    return _analyse(flow, registry)[1]


def compile_flow(flow: Flow, registry: Registry) -> FlowPlan:
    """A runnable plan of ``flow``; :class:`FlowValidationError` lists every error otherwise."""
    plan, report = _analyse(flow, registry)
    if plan is None:
        raise FlowValidationError(report.errors)
    return plan


def describe_plan(plan: FlowPlan) -> dict[str, Any]:
    """Ports of each routine as instantiated (events of config-driven routines included)."""
    return {
        rid: {"slots": list(r.slot_specs), "events": list(r.event_names)}
        for rid, r in plan.routines.items()
    }

"""make_breakpoint: the type follows from the fields, every field is checked against the flow, and a
bad condition is refused when the breakpoint is created (not when it is first hit)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import pytest

from routilux.debug.breakpoints import Breakpoint, BreakpointSpecError, make_breakpoint
from routilux.debug.expressions import Expression, ExpressionError
from routilux.engine import Connection, Flow, FlowPlan, RoutineSpec, compile_flow
from tests.support.routines import make_registry


@pytest.fixture(scope="module")
def plan() -> FlowPlan:
    """src (Relay) fans out to a (Relay) and b (SyncRelay); both feed j (Pair); loop has 2 events."""
    flow = Flow(
        flow_id="shape",
        routines={
            "src": RoutineSpec("Relay"),
            "a": RoutineSpec("Relay"),
            "b": RoutineSpec("SyncRelay"),
            "j": RoutineSpec("Pair"),
            "loop": RoutineSpec("Loop"),
        },
        connections=[
            Connection("src.output", "a.input"),
            Connection("src.output", "b.input"),
            Connection("a.output", "j.left"),
            Connection("b.output", "j.right"),
            Connection("loop.output", "loop.input"),
        ],
    )
    return compile_flow(flow, make_registry())


def make(plan: FlowPlan, **fields: Any) -> Breakpoint:
    fields.setdefault("type", None)
    return make_breakpoint(plan, "job1", **fields)


def spec_error(plan: FlowPlan, **fields: Any) -> BreakpointSpecError:
    with pytest.raises(BreakpointSpecError) as info:
        make(plan, **fields)
    assert isinstance(info.value, ValueError)
    return info.value


# ------------------------------------------------------------------------------------------------
# Type inference
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "kind"),
    [
        ({"routine_id": "a"}, "routine"),
        ({"routine_id": "a", "condition": "data > 1"}, "routine"),
        ({"routine_id": "j", "slot_name": "left"}, "slot"),
        ({"routine_id": "a", "event_name": "output"}, "event"),
        ({"source": "src.output", "target": "b.input"}, "connection"),
    ],
)
def test_the_type_follows_from_the_fields(plan: FlowPlan, fields: dict[str, Any], kind: str) -> None:
    bp = make(plan, **fields)
    assert bp.type == kind
    explicit = make(plan, **fields | {"type": kind})
    assert explicit.type == kind


def test_a_breakpoint_records_what_was_asked(plan: FlowPlan) -> None:
    bp = make(plan, source="a.output", target="j.left", condition="data == 1", enabled=False)
    assert (bp.job_id, bp.type, bp.source, bp.target) == ("job1", "connection", "a.output", "j.left")
    assert bp.routine_id is None and bp.slot_name is None and bp.event_name is None
    assert bp.condition == "data == 1" and isinstance(bp.compiled, Expression)
    assert bp.enabled is False and bp.hit_count == 0
    assert isinstance(bp.created_at, datetime) and bp.created_at.tzinfo is not None
    assert re.fullmatch(r"[0-9a-f]{12}", bp.breakpoint_id)
    view = bp.view()
    assert set(view) == {
        "breakpoint_id", "job_id", "type", "routine_id", "slot_name", "event_name", "source", "target",
        "condition", "enabled", "hit_count", "created_at",
    }
    assert "compiled" not in view
    assert view["breakpoint_id"] == bp.breakpoint_id and view["enabled"] is False


def test_defaults_enabled_no_condition_and_unique_ids(plan: FlowPlan) -> None:
    bps = [make(plan, routine_id="a") for _ in range(50)]
    assert all(bp.enabled and bp.condition is None and bp.compiled is None for bp in bps)
    assert len({bp.breakpoint_id for bp in bps}) == 50


def test_a_connection_within_a_cycle_is_a_valid_connection(plan: FlowPlan) -> None:
    assert make(plan, source="loop.output", target="loop.input").type == "connection"
    assert make(plan, routine_id="loop", event_name="done").type == "event"


# ------------------------------------------------------------------------------------------------
# Missing and extra fields
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({}, "body.routine_id"),  # nothing at all: a routine breakpoint without its routine
        ({"type": "routine"}, "body.routine_id"),
        ({"type": "slot", "routine_id": "a"}, "body.slot_name"),
        ({"type": "slot", "slot_name": "input"}, "body.routine_id"),
        ({"slot_name": "input"}, "body.routine_id"),
        ({"type": "event", "routine_id": "a"}, "body.event_name"),
        ({"event_name": "output"}, "body.routine_id"),
        ({"type": "connection"}, "body.source"),
        ({"source": "src.output"}, "body.target"),
        ({"target": "a.input"}, "body.source"),
        ({"type": "connection", "source": "src.output"}, "body.target"),
        ({"condition": "x > 1"}, "body.routine_id"),
    ],
)
def test_a_missing_field_is_named(plan: FlowPlan, fields: dict[str, Any], field: str) -> None:
    err = spec_error(plan, **fields)
    assert err.field == field
    assert f"needs '{field.removeprefix('body.')}'" in str(err)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"type": "routine", "routine_id": "a", "slot_name": "input"}, "body.slot_name"),
        ({"type": "routine", "routine_id": "a", "event_name": "output"}, "body.event_name"),
        ({"type": "slot", "routine_id": "a", "slot_name": "input", "event_name": "output"}, "body.event_name"),
        ({"routine_id": "a", "slot_name": "input", "event_name": "output"}, "body.event_name"),  # inferred slot
        ({"type": "event", "routine_id": "a", "event_name": "output", "slot_name": "input"}, "body.slot_name"),
        ({"source": "src.output", "target": "a.input", "routine_id": "src"}, "body.routine_id"),
        ({"source": "src.output", "target": "a.input", "slot_name": "input"}, "body.slot_name"),
        ({"type": "connection", "source": "a.output", "target": "j.left", "event_name": "output"}, "body.event_name"),
        ({"type": "routine", "routine_id": "a", "source": "src.output"}, "body.source"),
    ],
)
def test_an_extra_field_is_named(plan: FlowPlan, fields: dict[str, Any], field: str) -> None:
    err = spec_error(plan, **fields)
    assert err.field == field
    assert "does not belong" in str(err)


def test_missing_fields_are_reported_before_extra_ones(plan: FlowPlan) -> None:
    err = spec_error(plan, type="connection", routine_id="a")
    assert err.field in ("body.source", "body.target")
    assert "needs" in str(err)


# ------------------------------------------------------------------------------------------------
# Unknown routines, slots, events and connections, with the alternatives listed
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fields",
    [
        {"routine_id": "nope"},
        {"routine_id": "nope", "slot_name": "input"},
        {"routine_id": "nope", "event_name": "output"},
    ],
)
def test_an_unknown_routine_lists_the_routines(plan: FlowPlan, fields: dict[str, Any]) -> None:
    err = spec_error(plan, **fields)
    assert err.field == "body.routine_id"
    assert "'nope'" in str(err) and "'shape'" in str(err)
    assert "Routines: src, a, b, j, loop" in str(err)


def test_an_unknown_slot_lists_the_routines_slots(plan: FlowPlan) -> None:
    err = spec_error(plan, routine_id="j", slot_name="middle")
    assert err.field == "body.slot_name"
    assert "'middle'" in str(err) and "Slots: left, right" in str(err)


def test_an_event_name_is_not_a_slot_name(plan: FlowPlan) -> None:
    assert spec_error(plan, routine_id="a", slot_name="output").field == "body.slot_name"
    assert spec_error(plan, routine_id="a", event_name="input").field == "body.event_name"


def test_an_unknown_event_lists_the_routines_events(plan: FlowPlan) -> None:
    err = spec_error(plan, routine_id="loop", event_name="finished")
    assert err.field == "body.event_name"
    assert "'finished'" in str(err) and "Events: output, done" in str(err)


def test_an_event_on_a_routine_without_events_lists_none(plan: FlowPlan) -> None:
    flow = Flow(flow_id="sink", routines={"c": RoutineSpec("Collect")}, connections=[])
    sink_plan = compile_flow(flow, make_registry())
    err = spec_error(sink_plan, routine_id="c", event_name="output")
    assert err.field == "body.event_name" and "Events:" in str(err)


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("src.output", "j.left"),  # both ends exist, but they are not connected
        ("a.output", "j.right"),
        ("nope.output", "a.input"),
        ("src.output", "nope.input"),
        ("src", "a.input"),
        ("src.output", "a"),
        ("a.input", "src.output"),  # reversed
        ("loop.done", "loop.input"),
    ],
)
def test_an_unknown_connection_lists_the_connections(plan: FlowPlan, source: str, target: str) -> None:
    err = spec_error(plan, source=source, target=target)
    assert err.field == "body.source"
    message = str(err)
    assert f"no connection {source} -> {target}" in message
    for known in ("src.output -> a.input", "src.output -> b.input", "a.output -> j.left", "b.output -> j.right",
                  "loop.output -> loop.input"):
        assert known in message


def test_a_flow_without_connections_says_none() -> None:
    flow = Flow(flow_id="lonely", routines={"r": RoutineSpec("Relay")}, connections=[])
    lonely = compile_flow(flow, make_registry())
    err = spec_error(lonely, source="r.output", target="r.input")
    assert "Connections: none" in str(err)


# ------------------------------------------------------------------------------------------------
# Conditions are compiled (and refused) at creation
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("condition", "kind"),
    [
        ("data >", "syntax"),
        ("", "syntax"),
        ("open('x')", "forbidden"),
        ("data.__class__", "forbidden"),
        ("[i for i in items]", "forbidden"),
        ("x" * 1001, "limit"),
        ("2 ** 5000", "limit"),  # a constant part is evaluated at creation, under the same bounds
        ("data.n > 'a' * 10 ** 9", "limit"),  # ... also inside an expression that uses names
        ("data.n ** 5000", None),  # a limit found only when evaluated: compiles fine
        ("undefined_name > 1", None),  # names are only known at the stop point: compiles fine
        ("data.n if data.ok else 1 / 0", None),  # a constant that fails otherwise is legal
    ],
)
def test_a_bad_condition_is_refused_when_the_breakpoint_is_made(
    plan: FlowPlan, condition: str, kind: str | None
) -> None:
    if kind is None:
        assert make(plan, routine_id="a", condition=condition).compiled is not None
        return
    with pytest.raises(ExpressionError) as info:
        make(plan, routine_id="a", condition=condition)
    assert info.value.kind == kind


def test_the_fields_are_checked_before_the_condition(plan: FlowPlan) -> None:
    err = spec_error(plan, routine_id="nope", condition="data >")
    assert err.field == "body.routine_id"

"""A flow is checked against the registry, and every problem says where it is."""

from __future__ import annotations

import pytest

from routilux.engine import (
    Connection,
    Flow,
    FlowValidationError,
    Routine,
    RoutineSpec,
    compile_flow,
    validate_flow,
)
from routilux.engine.flow import Execution
from tests.support.routines import make_registry


def where(problems) -> dict[str, str]:
    return {p.location: p.code for p in problems}


def test_a_good_flow_has_no_errors_and_warns_about_loose_ends() -> None:
    flow = Flow(
        flow_id="ok",
        routines={"a": RoutineSpec("Relay"), "b": RoutineSpec("Loop")},
        connections=[Connection("a.output", "b.input"), Connection("b.output", "b.input")],  # a cycle is fine
    )
    report = validate_flow(flow, make_registry())
    assert report.valid and report.errors == []
    assert where(report.warnings) == {
        "routines.b.events.done": "unconnected_event",
        "routines.a.slots.input": "unconnected_slot",
    }


def test_every_kind_of_error_is_reported_at_once_with_its_location() -> None:
    flow = Flow(
        flow_id="bad id!",
        execution=Execution(timeout=0),
        routines={
            "a": RoutineSpec("Relay"),
            "ghost": RoutineSpec("Nope"),
            "imp": RoutineSpec("os.system"),
            "cfg": RoutineSpec("Flaky", config={"failures": "many"}),
            "extra": RoutineSpec("Flaky", config={"colour": "red"}),
            "bad.id": RoutineSpec("Relay"),
        },
        connections=[
            Connection("a.output", "a.nope"),
            Connection("a.nope", "a.input"),
            Connection("zz.output", "a.input"),
            Connection("a", "a.input"),
            Connection("a.output", "a.input"),
            Connection("a.output", "a.input"),
        ],
    )
    report = validate_flow(flow, make_registry())
    assert where(report.errors) == {
        "flow_id": "invalid_id",
        "execution.timeout": "invalid_timeout",
        "routines.ghost.class": "unknown_routine_class",
        "routines.imp.class": "unknown_routine_class",
        "routines.cfg.config.failures": "invalid_config",
        "routines.extra.config.colour": "invalid_config",
        "routines.bad.id": "invalid_id",
        "connections[0].to": "unknown_slot",
        "connections[1].from": "unknown_event",
        "connections[2].from": "unknown_routine",
        "connections[3].from": "invalid_reference",
        "connections[5]": "duplicate_connection",
    }
    messages = {p.location: p.message for p in report.errors}
    assert messages["routines.cfg.config.failures"] == "expected integer, got string"
    assert messages["routines.extra.config.colour"] == "unknown field 'colour'"
    assert "Its slots: input" in messages["connections[0].to"]
    assert "import path" in messages["routines.imp.class"]
    with pytest.raises(FlowValidationError) as caught:
        compile_flow(flow, make_registry())
    assert len(caught.value.problems) == len(report.errors)
    assert caught.value.to_dict()["error"] == "invalid_flow"


def test_a_routine_whose_init_rejects_its_config_is_reported() -> None:
    class Picky(Routine):
        def __init__(self, config=None):
            super().__init__(config)
            raise ValueError("needs at least one route")

    registry = make_registry()
    registry.register(Picky)
    report = validate_flow(Flow(flow_id="p", routines={"p": RoutineSpec("Picky")}), registry)
    assert [(p.location, p.message) for p in report.errors] == [
        ("routines.p.config", "ValueError: needs at least one route")
    ]


def test_an_empty_flow_is_valid_with_a_warning() -> None:
    report = validate_flow(Flow(flow_id="empty"), make_registry())
    assert report.valid and where(report.warnings) == {"routines": "empty_flow"}


def test_the_plan_routes_events_to_slots_in_connection_order() -> None:
    flow = Flow(
        flow_id="fan",
        routines={"a": RoutineSpec("Relay"), "b": RoutineSpec("Collect"), "c": RoutineSpec("Collect")},
        connections=[Connection("a.output", "c.input"), Connection("a.output", "b.input")],
    )
    plan = compile_flow(flow, make_registry())
    assert [(r.target_routine, r.index) for r in plan.routes[("a", "output")]] == [("c", 0), ("b", 1)]

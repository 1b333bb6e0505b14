"""The request and response bodies of the HTTP API, as msgspec Structs.

These are the schema of the wire format; ``openapi/openapi.yaml`` describes the same shapes by
hand, and the test-suite checks that real responses validate against it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from routilux.engine.flow import (
    ID_PATTERN,
    ROUTINE_ID_PATTERN,
    ErrorHandler,
    PolicySpec,
)

# msgspec searches with Python's re, where "$" also matches before a final newline: "\Z" does
# not, so "my-flow\n" is refused (it would otherwise reach a Location header and break it).
Id = Annotated[str, msgspec.Meta(pattern=ID_PATTERN.replace("$", r"\Z"))]
RoutineId = Annotated[str, msgspec.Meta(pattern=ROUTINE_ID_PATTERN.replace("$", r"\Z"))]
Timeout = Annotated[float, msgspec.Meta(gt=0, le=86400)]
MAX_AGE_SECONDS = 100 * 366 * 86400  # a century: any larger cut-off would fall before year 1


class Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Request bodies refuse unknown fields, so a typo is a 422 rather than silently ignored."""


# -- flows ---------------------------------------------------------------------------------------
class FlowCreate(Strict, frozen=True):
    flow_id: Id | None = None
    #: DSL text; a mapping here is taken as ``dsl_dict`` (the dashboard sends it so).
    dsl: str | dict[str, Any] | None = None
    dsl_dict: dict[str, Any] | None = None


class FlowReplace(Strict, frozen=True):
    dsl: str | None = None
    dsl_dict: dict[str, Any] | None = None


class RoutineAdd(Strict, frozen=True):
    routine_id: RoutineId
    #: Required, under this name or as ``object_name`` (the dashboard's name for it), not both.
    class_name: str | None = None
    object_name: str | None = None
    config: dict[str, Any] | None = None  # None: {}
    error_handler: ErrorHandler | None = None
    policy: PolicySpec | None = None


class ConnectionAdd(Strict, frozen=True):
    source_routine: RoutineId
    source_event: str
    target_routine: RoutineId
    target_slot: str


class RoutineView(msgspec.Struct):
    routine_id: str
    class_name: str
    slots: list[str]
    events: list[str]
    config: dict[str, Any]
    policy: dict[str, Any] | None
    error_handler: ErrorHandler | None


class ConnectionView(msgspec.Struct):
    connection_id: str
    index: int
    source_routine: str
    source_event: str
    target_routine: str
    target_slot: str


class FlowView(msgspec.Struct):
    flow_id: str
    description: str | None
    routines: dict[str, RoutineView]
    connections: list[ConnectionView]
    execution: dict[str, Any]
    revision: int
    created_at: datetime
    updated_at: datetime
    source: str | None
    runnable: bool
    problems: list[dict[str, str]]


# -- jobs ----------------------------------------------------------------------------------------
class EntryBody(Strict, frozen=True):
    routine_id: RoutineId
    slot_name: str
    data: Any = None


class JobStart(Strict, frozen=True):
    flow_id: Id
    runtime_id: Id | None = None
    timeout: Timeout | None = None
    entry: EntryBody | None = None
    complete_when_idle: bool = False
    #: Checkpointed to outlive the process (None: as the flow's ``execution.durable`` says).
    durable: bool | None = None


class JobPost(Strict, frozen=True):
    routine_id: RoutineId
    slot_name: str
    data: Any = None


class JobReason(Strict, frozen=True):
    reason: Annotated[str, msgspec.Meta(max_length=2000)] | None = None


class JobFail(Strict, frozen=True):
    reason: Annotated[str, msgspec.Meta(max_length=2000)] = "failed by request"


class JobWait(Strict, frozen=True):
    timeout: Annotated[float, msgspec.Meta(gt=0)] | None = None


class JobCleanup(Strict, frozen=True):
    """What ``POST /api/jobs/cleanup`` deletes. ``older_than_seconds`` and ``statuses`` are its
    criteria, at least one of which must be given (here or as the query's ``max_age_hours`` and
    ``status``): a bodiless POST — which any web page can make a browser send — deletes nothing."""

    older_than_seconds: Annotated[float, msgspec.Meta(ge=0, le=MAX_AGE_SECONDS)] | None = None
    statuses: list[Literal["completed", "failed", "cancelled"]] | None = None
    flow_id: Id | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 10_000


# -- runtimes ------------------------------------------------------------------------------------
class RuntimeCreate(Strict, frozen=True):
    runtime_id: Id
    thread_pool_size: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 0
    is_default: bool = False
    worker_group: Id | None = None


# -- debugging -----------------------------------------------------------------------------------
class BreakpointCreate(Strict, frozen=True):
    routine_id: RoutineId | None = None
    condition: Annotated[str, msgspec.Meta(max_length=1000)] | None = None
    type: Literal["routine", "slot", "event", "connection"] | None = None
    slot_name: str | None = None
    event_name: str | None = None
    source: str | None = None
    target: str | None = None
    enabled: bool = True


class BreakpointUpdate(Strict, frozen=True):
    enabled: bool


class EvaluateBody(Strict, frozen=True):
    expression: str
    variables: dict[str, Any] | None = None
    #: The frame to evaluate in, when no ``variables``: the routine the job is stopped at, and the
    #: frame's index in the call stack (0, the stop: the one frame that holds data).
    routine_id: RoutineId | None = None
    frame_index: Annotated[int, msgspec.Meta(ge=0)] | None = None


class VariableSet(Strict, frozen=True):
    value: Any

"""How flows look on the wire (the field names the dashboard reads, DESIGN.md §5)."""

from __future__ import annotations

import msgspec

from routilux.api.schemas import ConnectionView, FlowView, RoutineView
from routilux.engine import Registry
from routilux.engine.flow import Connection
from routilux.server.catalog import FlowEntry


def connection_view(index: int, conn: Connection) -> ConnectionView:
    return ConnectionView(
        connection_id=f"{conn.source}->{conn.target}",
        index=index,
        source_routine=conn.source_routine,
        source_event=conn.source_event,
        target_routine=conn.target_routine,
        target_slot=conn.target_slot,
    )


def routine_views(entry: FlowEntry, registry: Registry) -> dict[str, RoutineView]:
    views = {}
    for rid, spec in entry.flow.routines.items():
        ports = entry.ports(rid, registry)
        views[rid] = RoutineView(
            routine_id=rid,
            class_name=spec.class_name,
            slots=[slot.name for slot in ports.slots],
            events=ports.events,
            config=spec.config,
            policy=msgspec.to_builtins(spec.policy) if spec.policy is not None else None,
            error_handler=spec.error_handler,
        )
    return views


def flow_view(entry: FlowEntry, registry: Registry) -> FlowView:
    flow = entry.flow
    return FlowView(
        flow_id=flow.flow_id,
        description=flow.description,
        routines=routine_views(entry, registry),
        connections=[connection_view(i, c) for i, c in enumerate(flow.connections)],
        execution=msgspec.to_builtins(flow.execution),
        revision=entry.revision,
        created_at=entry.created_at,
        updated_at=entry.updated_at,
        source=entry.source,
        runnable=entry.plan is not None,
        problems=[msgspec.to_builtins(p) for p in entry.problems],
    )

"""Flows: create (from an id, DSL text or a DSL mapping), read, replace, edit, export, delete."""

from __future__ import annotations

from typing import Any

import anyio
import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from routilux.api.body import path_id, query_choice, query_int, read_json
from routilux.api.errors import APIError
from routilux.api.responses import json_response
from routilux.api.schemas import ConnectionAdd, FlowCreate, FlowReplace, RoutineAdd
from routilux.api.services import services
from routilux.api.views import connection_view, flow_view, routine_views
from routilux.engine import Connection, Flow, RoutineSpec
from routilux.engine.dsl import Format, dump_flow, load_flow, load_flow_dict
from routilux.engine.plan import validate_flow


def _view(request: Request, entry: Any, status: int = 200) -> Response:
    body = flow_view(entry, services(request).catalog.registry)
    return json_response(body, status, headers={"ETag": f'"{entry.revision}"'})


def _if_match(request: Request) -> int | None:
    raw = request.headers.get("if-match")
    if raw is None:
        return None
    text = raw.strip().removeprefix("W/").strip('"')
    try:
        return int(text)
    except ValueError:
        raise APIError(
            400, "invalid_if_match", "If-Match must be the flow's revision number (its ETag)", field="header.If-Match"
        ) from None


async def _parse(dsl: str | None, dsl_dict: dict[str, Any] | None, flow_id: str | None) -> Flow:
    """The flow a body describes; YAML parsing runs in a thread (it is pure Python)."""
    if dsl is not None and dsl_dict is not None:
        raise APIError(422, "validation_error", "body: give either 'dsl' or 'dsl_dict', not both", field="body")
    if dsl is not None:
        flow = await anyio.to_thread.run_sync(lambda: load_flow(dsl, default_flow_id=flow_id))
    elif dsl_dict is not None:
        flow = load_flow_dict(dsl_dict, default_flow_id=flow_id)
    elif flow_id is not None:
        return Flow(flow_id=flow_id)
    else:
        raise APIError(
            422, "validation_error", "body: give 'flow_id', 'dsl' (YAML or JSON text) or 'dsl_dict'", field="body"
        )
    if flow_id is not None and flow.flow_id != flow_id:
        raise APIError(
            422,
            "flow_id_mismatch",
            f"body.flow_id is '{flow_id}' but the DSL says '{flow.flow_id}'",
            field="body.flow_id",
        )
    return flow


async def list_flows(request: Request) -> Response:
    limit = query_int(request, "limit", 100, 1, 1000)
    offset = query_int(request, "offset", 0, 0, 10_000_000)
    svc = services(request)
    entries = await svc.catalog.listing()
    page = [flow_view(e, svc.catalog.registry) for e in entries[offset : offset + limit]]
    return json_response({"flows": page, "total": len(entries), "limit": limit, "offset": offset})


async def create_flow(request: Request) -> Response:
    body = await read_json(request, FlowCreate)
    if isinstance(body.dsl, dict):  # a DSL mapping sent as `dsl` is a `dsl_dict`
        if body.dsl_dict is not None:
            raise APIError(422, "validation_error", "body: give either 'dsl' or 'dsl_dict', not both", field="body")
        flow = await _parse(None, body.dsl, body.flow_id)
    else:
        flow = await _parse(body.dsl, body.dsl_dict, body.flow_id)
    entry = await services(request).catalog.create(flow)
    response = _view(request, entry, 201)
    response.headers["Location"] = f"/api/flows/{entry.flow_id}"
    return response


async def get_flow(request: Request) -> Response:
    return _view(request, await services(request).catalog.fetch(path_id(request, "flow_id")))


async def replace_flow(request: Request) -> Response:
    flow_id = path_id(request, "flow_id")
    await services(request).catalog.fetch(flow_id)  # 404 before looking at the body
    body = await read_json(request, FlowReplace)
    if body.dsl is None and body.dsl_dict is None:
        raise APIError(422, "validation_error", "body: give 'dsl' (YAML or JSON text) or 'dsl_dict'", field="body")
    flow = await _parse(body.dsl, body.dsl_dict, flow_id)
    entry = await services(request).catalog.change(flow_id, lambda _old: flow, _if_match(request))
    return _view(request, entry)


async def delete_flow(request: Request) -> Response:
    await services(request).catalog.delete(path_id(request, "flow_id"))
    return Response(status_code=204)


async def export_dsl(request: Request) -> Response:
    entry = await services(request).catalog.fetch(path_id(request, "flow_id"))
    fmt: Format = "json" if query_choice(request, "format", ("yaml", "json"), "yaml") == "json" else "yaml"
    text = await anyio.to_thread.run_sync(dump_flow, entry.flow, fmt)
    return json_response({"flow_id": entry.flow_id, "format": fmt, "revision": entry.revision, "dsl": text})


async def validate(request: Request) -> Response:
    svc = services(request)
    entry = await svc.catalog.fetch(path_id(request, "flow_id"))
    report = validate_flow(entry.flow, svc.catalog.registry)
    return json_response({"flow_id": entry.flow_id, "valid": report.valid, **msgspec.to_builtins(report)})


async def list_routines(request: Request) -> Response:
    """The flow's routines as a bare map ``{routine_id: routine}``: a dashboard's routine picker
    takes every key for a routine."""
    svc = services(request)
    entry = await svc.catalog.fetch(path_id(request, "flow_id"))
    return json_response(routine_views(entry, svc.catalog.registry))


def _class_name(body: RoutineAdd) -> str:
    """``class_name``, or ``object_name`` (the dashboard's name for it): exactly one."""
    if body.class_name is not None and body.object_name is not None:
        raise APIError(422, "validation_error", "body: give 'class_name' or 'object_name' (the same thing), not both",
                       field="body.object_name")
    name = body.class_name if body.class_name is not None else body.object_name
    if name is None:
        raise APIError(422, "validation_error", "body.class_name: a registered routine class is required",
                       field="body.class_name")
    return name


async def add_routine(request: Request) -> Response:
    flow_id = path_id(request, "flow_id")
    body = await read_json(request, RoutineAdd)
    class_name = _class_name(body)

    def edit(flow: Flow) -> Flow:
        if body.routine_id in flow.routines:
            raise APIError(
                409, "routine_exists", f"flow '{flow_id}' already has a routine '{body.routine_id}'",
                routine_id=body.routine_id,
            )
        spec = RoutineSpec(
            class_name=class_name, config=body.config or {}, error_handler=body.error_handler, policy=body.policy
        )
        return msgspec.structs.replace(flow, routines={**flow.routines, body.routine_id: spec})

    entry = await services(request).catalog.change(flow_id, edit, _if_match(request))
    return _view(request, entry, 201)


async def remove_routine(request: Request) -> Response:
    flow_id = path_id(request, "flow_id")
    routine_id = path_id(request, "routine_id", routine=True)

    def edit(flow: Flow) -> Flow:
        if routine_id not in flow.routines:
            raise APIError(
                404, "routine_not_found", f"flow '{flow_id}' has no routine '{routine_id}'", routine_id=routine_id
            )
        routines = {rid: spec for rid, spec in flow.routines.items() if rid != routine_id}
        connections = [
            c for c in flow.connections if routine_id not in (c.source_routine, c.target_routine)
        ]
        return msgspec.structs.replace(flow, routines=routines, connections=connections)

    entry = await services(request).catalog.change(flow_id, edit, _if_match(request))
    return _view(request, entry)


async def list_connections(request: Request) -> Response:
    entry = await services(request).catalog.fetch(path_id(request, "flow_id"))
    views = [connection_view(i, c) for i, c in enumerate(entry.flow.connections)]
    return json_response({"flow_id": entry.flow_id, "connections": views, "total": len(views)})


async def add_connection(request: Request) -> Response:
    flow_id = path_id(request, "flow_id")
    body = await read_json(request, ConnectionAdd)
    new = Connection(f"{body.source_routine}.{body.source_event}", f"{body.target_routine}.{body.target_slot}")

    def edit(flow: Flow) -> Flow:
        if new in flow.connections:
            raise APIError(409, "connection_exists", f"{new.source} -> {new.target} already exists")
        return msgspec.structs.replace(flow, connections=[*flow.connections, new])

    entry = await services(request).catalog.change(flow_id, edit, _if_match(request))
    return _view(request, entry, 201)


async def remove_connection(request: Request) -> Response:
    flow_id = path_id(request, "flow_id")
    raw = request.path_params["index"]
    if not raw.isdigit() or len(raw) > 9:
        raise APIError(422, "validation_error", "path.index: expected a connection index (0, 1, ...)",
                       field="path.index")
    index = int(raw)

    def edit(flow: Flow) -> Flow:
        if index >= len(flow.connections):
            raise APIError(
                404, "connection_not_found",
                f"flow '{flow_id}' has {len(flow.connections)} connections; there is no index {index}",
                index=index,
            )
        return msgspec.structs.replace(flow, connections=[c for i, c in enumerate(flow.connections) if i != index])

    entry = await services(request).catalog.change(flow_id, edit, _if_match(request))
    return _view(request, entry)


routes = [
    Route("/api/flows", list_flows, methods=["GET"]),
    Route("/api/flows", create_flow, methods=["POST"]),
    Route("/api/flows/{flow_id}", get_flow, methods=["GET"]),
    Route("/api/flows/{flow_id}", replace_flow, methods=["PUT"]),
    Route("/api/flows/{flow_id}", delete_flow, methods=["DELETE"]),
    Route("/api/flows/{flow_id}/dsl", export_dsl, methods=["GET"]),
    Route("/api/flows/{flow_id}/validate", validate, methods=["POST"]),
    Route("/api/flows/{flow_id}/routines", list_routines, methods=["GET"]),
    Route("/api/flows/{flow_id}/routines", add_routine, methods=["POST"]),
    Route("/api/flows/{flow_id}/routines/{routine_id}", remove_routine, methods=["DELETE"]),
    Route("/api/flows/{flow_id}/connections", list_connections, methods=["GET"]),
    Route("/api/flows/{flow_id}/connections", add_connection, methods=["POST"]),
    Route("/api/flows/{flow_id}/connections/{index}", remove_connection, methods=["DELETE"]),
]

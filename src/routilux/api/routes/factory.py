"""The catalogue of registered routine classes, with their interfaces."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from routilux.api.errors import APIError
from routilux.api.responses import json_response
from routilux.api.services import services
from routilux.engine.registry import Registry, RoutineInfo


def _info(registry: Registry, request: Request) -> RoutineInfo:
    name = request.path_params["name"]
    if name not in registry:
        raise APIError(
            404,
            "routine_class_not_found",
            f"no routine class is registered as '{name}'; GET /api/factory/objects lists them",
            name=name,
        )
    return registry.interface(name)


async def list_objects(request: Request) -> Response:
    registry = services(request).catalog.registry
    category = request.query_params.get("category") or None
    infos = [registry.interface(name) for name in registry.names()]
    if category is not None:
        infos = [i for i in infos if i.category == category]
    objects = [
        {"name": i.name, "description": i.description, "category": i.category, "object_type": "routine"}
        for i in infos
    ]
    return json_response({"objects": objects, "total": len(objects)})


async def get_object(request: Request) -> Response:
    info = _info(services(request).catalog.registry, request)
    return json_response({**msgspec.to_builtins(info), "object_type": "routine"})


async def get_interface(request: Request) -> Response:
    info = _info(services(request).catalog.registry, request)
    return json_response(
        {
            "name": info.name,
            "slots": [slot.name for slot in info.slots],
            "slot_details": info.slots,
            "events": info.events,
            "config_schema": info.config_schema,
            "policy": info.policy,
        }
    )


routes = [
    Route("/api/factory/objects", list_objects, methods=["GET"]),
    Route("/api/factory/objects/{name}", get_object, methods=["GET"]),
    Route("/api/factory/objects/{name}/interface", get_interface, methods=["GET"]),
]

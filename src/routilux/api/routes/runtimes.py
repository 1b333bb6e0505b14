"""Runtimes: list (with the default), read, create."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from routilux.api.body import path_id, read_json
from routilux.api.responses import json_response
from routilux.api.schemas import RuntimeCreate
from routilux.api.services import services
from routilux.engine.runtime import Runtime


def runtime_view(runtime: Runtime) -> dict[str, object]:
    return msgspec.to_builtins(runtime.info())


async def list_runtimes(request: Request) -> Response:
    svc = services(request)
    views = [runtime_view(r) for r in await svc.runtimes.all()]
    return json_response({"runtimes": views, "total": len(views), "default_runtime_id": svc.engine.default_runtime_id})


async def get_runtime(request: Request) -> Response:
    runtime = await services(request).runtimes.get(path_id(request, "runtime_id"))
    return json_response(runtime_view(runtime))


async def create_runtime(request: Request) -> Response:
    svc = services(request)
    body = await read_json(request, RuntimeCreate)
    runtime = await svc.runtimes.create(body.runtime_id, body.thread_pool_size, is_default=body.is_default,
                                        worker_group=body.worker_group)
    return json_response(runtime_view(runtime), 201, headers={"Location": f"/api/runtimes/{runtime.runtime_id}"})


routes = [
    Route("/api/runtimes", list_runtimes, methods=["GET"]),
    Route("/api/runtimes", create_runtime, methods=["POST"]),
    Route("/api/runtimes/{runtime_id}", get_runtime, methods=["GET"]),
]

"""Runtimes: list (with the default), read, create."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from routilux.api.body import path_id, read_json
from routilux.api.errors import not_found
from routilux.api.responses import json_response
from routilux.api.schemas import RuntimeCreate
from routilux.api.services import services
from routilux.bus.events import utc_now
from routilux.engine.runtime import Runtime
from routilux.store.base import RuntimeRecord


def runtime_view(runtime: Runtime) -> dict[str, object]:
    return msgspec.to_builtins(runtime.info())


async def list_runtimes(request: Request) -> Response:
    engine = services(request).engine
    views = [runtime_view(r) for r in engine.runtimes.values()]
    return json_response({"runtimes": views, "total": len(views), "default_runtime_id": engine.default_runtime_id})


async def get_runtime(request: Request) -> Response:
    runtime_id = path_id(request, "runtime_id")
    runtime = services(request).engine.runtimes.get(runtime_id)
    if runtime is None:
        raise not_found("runtime", runtime_id, "GET /api/runtimes lists the runtimes")
    return json_response(runtime_view(runtime))


async def create_runtime(request: Request) -> Response:
    svc = services(request)
    body = await read_json(request, RuntimeCreate)
    runtime = await svc.engine.create_runtime(body.runtime_id, body.thread_pool_size, is_default=body.is_default)
    await persist_runtimes(svc.engine.runtimes.values(), svc.store)
    return json_response(runtime_view(runtime), 201, headers={"Location": f"/api/runtimes/{runtime.runtime_id}"})


async def persist_runtimes(runtimes, store) -> None:  # type: ignore[no-untyped-def]
    """Store every runtime (a new default changes the others' ``is_default`` too)."""
    now = utc_now()
    for runtime in runtimes:
        await store.put_runtime(
            RuntimeRecord(runtime.runtime_id, runtime.thread_pool_size, runtime.is_default, now)
        )


routes = [
    Route("/api/runtimes", list_runtimes, methods=["GET"]),
    Route("/api/runtimes", create_runtime, methods=["POST"]),
    Route("/api/runtimes/{runtime_id}", get_runtime, methods=["GET"]),
]

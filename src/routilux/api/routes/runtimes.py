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
from routilux.engine import Engine
from routilux.engine.runtime import Runtime
from routilux.store.base import RuntimeRecord, Store


def runtime_view(runtime: Runtime) -> dict[str, object]:
    return msgspec.to_builtins(runtime.info())


async def list_runtimes(request: Request) -> Response:
    svc = services(request)
    if svc.cluster_node is not None:  # another node may have created one a moment ago
        await restore_runtimes(svc.engine, svc.store)
    engine = svc.engine
    views = [runtime_view(r) for r in engine.runtimes.values()]
    return json_response({"runtimes": views, "total": len(views), "default_runtime_id": engine.default_runtime_id})


async def get_runtime(request: Request) -> Response:
    runtime_id = path_id(request, "runtime_id")
    svc = services(request)
    runtime = svc.engine.runtimes.get(runtime_id)
    if runtime is None and svc.cluster_node is not None:
        await restore_runtimes(svc.engine, svc.store)
        runtime = svc.engine.runtimes.get(runtime_id)
    if runtime is None:
        raise not_found("runtime", runtime_id, "GET /api/runtimes lists the runtimes")
    return json_response(runtime_view(runtime))


async def create_runtime(request: Request) -> Response:
    svc = services(request)
    body = await read_json(request, RuntimeCreate)
    runtime = await svc.engine.create_runtime(body.runtime_id, body.thread_pool_size, is_default=body.is_default,
                                              worker_group=body.worker_group)
    await persist_runtimes(svc.engine.runtimes.values(), svc.store)
    if svc.cluster_node is not None:
        await svc.cluster_node.notify("runtimes")
    return json_response(runtime_view(runtime), 201, headers={"Location": f"/api/runtimes/{runtime.runtime_id}"})


async def persist_runtimes(runtimes, store) -> None:  # type: ignore[no-untyped-def]
    """Store every runtime (a new default changes the others' ``is_default`` too)."""
    now = utc_now()
    for runtime in runtimes:
        await store.put_runtime(
            RuntimeRecord(runtime.runtime_id, runtime.thread_pool_size, runtime.is_default, now, runtime.worker_group)
        )


async def restore_runtimes(engine: Engine, store: Store) -> None:
    """Create the stored runtimes this engine lacks, and take the stored default. Called at
    start-up, and in a cluster whenever another node changed the runtimes."""
    for record in await store.list_runtimes():
        if record.runtime_id not in engine.runtimes:
            await engine.create_runtime(record.runtime_id, record.thread_pool_size, is_default=record.is_default,
                                        worker_group=record.worker_group)
        elif record.is_default and engine.default_runtime_id != record.runtime_id:
            engine.runtimes[record.runtime_id].is_default = True
            if engine.default_runtime_id in engine.runtimes:
                engine.runtimes[engine.default_runtime_id].is_default = False
            engine.default_runtime_id = record.runtime_id


routes = [
    Route("/api/runtimes", list_runtimes, methods=["GET"]),
    Route("/api/runtimes", create_runtime, methods=["POST"]),
    Route("/api/runtimes/{runtime_id}", get_runtime, methods=["GET"]),
]

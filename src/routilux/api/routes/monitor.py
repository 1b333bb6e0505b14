"""Monitoring: job and flow metrics, and the dashboard's views of a job's routines and queues.

Every figure comes from the metrics aggregator (a bus subscriber, :mod:`routilux.monitor`): a
live or recently finished job from its memory, an older one from what it stored when the job
ended. A job that ended before the aggregator could see it (for example, interrupted by a
restart) has metrics built from its record: its status and times, and no activity.

Paths: ``/api/monitor/jobs/{id}/metrics`` and ``/api/monitor/flows/{id}/metrics`` (the spec's),
``/api/monitor/runtimes`` (live jobs and thread-pool use per runtime),
with the aliases ``/api/jobs/{id}/metrics`` and ``/api/flows/{id}/metrics``; ``/api/jobs/{id}/
monitoring``, ``/queues/status``, ``/routines/status``, ``/routines/{rid}/queue-status``; and
``/api/flows/{id}/routines/{rid}/info`` (the routine as configured: class, slots with their
capacities, events, policy, error handling, connections).
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from routilux.api.body import path_id, query_choice
from routilux.api.responses import json_response
from routilux.api.services import services
from routilux.bus.events import utc_now
from routilux.engine import Job
from routilux.monitor.aggregator import FinishedJob
from routilux.monitor.views import JobMetrics, JobTotals, RoutineMetrics, SlotQueueStatus
from routilux.server.catalog import FlowEntry
from routilux.server.errors import NotFound
from routilux.server.metrics import runtime_pools
from routilux.server.services import Services
from routilux.store.base import JobRecord

_finished_decoder = msgspec.json.Decoder(FinishedJob)


async def job_metrics_of(svc: Services, job_id: str) -> JobMetrics:
    """The job's metrics wherever they are; 404 for an unknown job."""
    found = svc.metrics.job(job_id)
    if found is not None:
        return found
    blob = await svc.store.get_job_metrics(job_id)
    if blob is not None:
        return _finished_decoder.decode(blob).metrics
    record = await svc.jobs.any_job(job_id)  # 404 if unknown
    return _from_record(record)


def _from_record(job: Job | JobRecord) -> JobMetrics:
    if isinstance(job, Job):  # live, but the aggregator has not seen an event of it yet
        status, flow_id, runtime_id = job.status.value, job.flow_id, job.runtime_id
        started, ended = job.started_at, job.completed_at
    else:
        status, flow_id, runtime_id = job.status, job.flow_id, job.runtime_id
        started, ended = job.started_at, job.completed_at
    duration = (ended - started).total_seconds() if started and ended else None
    return JobMetrics(job_id=job.job_id, flow_id=flow_id, runtime_id=runtime_id, status=status, start_time=started,
                      end_time=ended, duration=duration, totals=JobTotals(), routines={}, slots=[], errors=[],
                      events_seen=0, events_lost=0)


async def _tracebacks(svc: Services, metrics: JobMetrics) -> JobMetrics:
    """Fill each error's traceback from the job's own error records (live job or stored state)."""
    found = await svc.jobs.any_job(metrics.job_id)
    if isinstance(found, Job):
        records = [msgspec.to_builtins(e) for e in found.errors]
    else:
        records = list((found.state or {}).get("errors", []))
    pool: dict[tuple[Any, Any, Any], list[str]] = {}
    for record in records:
        key = (record.get("routine_id"), record.get("type"), record.get("message"))
        pool.setdefault(key, []).append(record.get("traceback") or "")
    errors = []
    for error in metrics.errors:
        tracebacks = pool.get((error.routine_id, error.type, error.message))
        traceback = tracebacks.pop(0) if tracebacks else None
        errors.append(msgspec.structs.replace(error, traceback=traceback or None))
    return msgspec.structs.replace(metrics, errors=errors)


async def job_metrics(request: Request) -> Response:
    svc = services(request)
    job_id = path_id(request, "job_id")
    with_tracebacks = query_choice(request, "include_traceback", ("true", "false"), "false") == "true"
    metrics = await job_metrics_of(svc, job_id)
    if with_tracebacks:
        metrics = await _tracebacks(svc, metrics)
    return json_response(metrics)


async def flow_metrics(request: Request) -> Response:
    svc = services(request)
    flow_id = path_id(request, "flow_id")
    metrics = await svc.metrics.refreshed()  # in a cluster, the other servers' jobs too
    if flow_id not in svc.catalog and flow_id not in metrics.flow_ids():
        raise NotFound("flow", flow_id, "GET /api/flows lists the flows")
    return json_response(metrics.flow(flow_id))


def _by_routine(metrics: JobMetrics) -> dict[str, list[Any]]:
    queues: dict[str, list[Any]] = {rid: [] for rid in metrics.routines}
    for slot in metrics.slots:
        queues.setdefault(slot.routine_id, []).append(slot)
    return queues


def _execution_status(metrics: RoutineMetrics) -> dict[str, Any]:
    """A routine's figures as the dashboard's routine panel reads them."""
    return {
        "routine_id": metrics.routine_id, "is_active": metrics.active > 0, "status": metrics.status,
        "last_execution_time": metrics.last_execution, "execution_count": metrics.execution_count,
        "error_count": metrics.error_count, "active_thread_count": metrics.active,
    }


def _brief_info(svc: Services, job: Job | None, entry: FlowEntry | None, rid: str, slots: list[str]) -> dict[str, Any]:
    """What a routine is, always an object: from the flow the live job runs, else the flow as
    stored now, else (the flow is gone) only its id and the slots its figures name."""
    flow = job.plan.flow if job is not None else entry.flow if entry is not None else None
    spec = flow.routines.get(rid) if flow is not None else None
    if spec is None:
        return {"routine_id": rid, "routine_type": "", "activation_policy": {}, "config": {}, "slots": slots,
                "events": []}
    registry = svc.engine.registry
    routine = job.plan.routines.get(rid) if job is not None else None
    if routine is not None:
        slot_names, events = list(routine.slot_specs), list(routine.event_names)
    elif entry is not None:
        ports = entry.ports(rid, registry)
        slot_names, events = [slot.name for slot in ports.slots], list(ports.events)
    else:
        slot_names, events = slots, []
    if spec.policy is not None:
        policy: dict[str, Any] = msgspec.to_builtins(spec.policy)
    else:
        policy = registry.interface(spec.class_name).policy if spec.class_name in registry else {}
    return {"routine_id": rid, "routine_type": spec.class_name, "activation_policy": policy, "config": spec.config,
            "slots": slot_names, "events": events}


async def job_monitoring(request: Request) -> Response:
    """One call for a dashboard: the job, and per routine its execution status, its queues and
    what it is: ``info`` in brief (always an object), ``routine_info`` in full (null when the
    flow no longer has the routine)."""
    svc = services(request)
    metrics = await job_metrics_of(svc, path_id(request, "job_id"))
    queues = _by_routine(metrics)
    entry = svc.catalog.find(metrics.flow_id)
    job = svc.jobs.live(metrics.job_id)
    routines = {}
    for rid in sorted(set(metrics.routines) | set(queues)):
        execution = metrics.routines.get(rid) or RoutineMetrics(routine_id=rid, status="pending")
        slots = queues.get(rid, [])
        routines[rid] = {
            "routine_id": rid,
            "execution": execution,
            "queues": slots,
            "execution_status": _execution_status(execution),
            "queue_status": [SlotQueueStatus.of(slot) for slot in slots],
            "info": _brief_info(svc, job, entry, rid, [slot.slot for slot in slots]),
            "routine_info": routine_info(entry, rid, svc) if entry is not None and rid in entry.flow.routines else None,
        }
    latest = [t for t in (metrics.start_time, metrics.end_time) if t is not None]
    latest += [r.last_execution for r in metrics.routines.values() if r.last_execution is not None]
    return json_response({
        "job_id": metrics.job_id, "flow_id": metrics.flow_id, "status": metrics.status, "job_status": metrics.status,
        "start_time": metrics.start_time, "end_time": metrics.end_time, "duration": metrics.duration,
        "updated_at": max(latest) if latest else utc_now(),
        "totals": metrics.totals, "errors": metrics.errors, "routines": routines,
    })


async def queues_status(request: Request) -> Response:
    """Every slot queue of the job, by routine: a bare map ``{routine_id: [SlotQueueStatus]}``
    (the dashboard's queue panel takes every key for a routine)."""
    svc = services(request)
    metrics = await job_metrics_of(svc, path_id(request, "job_id"))
    queues = _by_routine(metrics)
    return json_response({rid: [SlotQueueStatus.of(slot) for slot in slots] for rid, slots in sorted(queues.items())})


async def routines_status(request: Request) -> Response:
    svc = services(request)
    metrics = await job_metrics_of(svc, path_id(request, "job_id"))
    return json_response({"job_id": metrics.job_id, "status": metrics.status, "routines": metrics.routines})


async def routine_queue_status(request: Request) -> Response:
    svc = services(request)
    metrics = await job_metrics_of(svc, path_id(request, "job_id"))
    routine_id = path_id(request, "routine_id", routine=True)
    queues = _by_routine(metrics)
    if routine_id not in queues:
        entry = svc.catalog.find(metrics.flow_id)
        if entry is None or routine_id not in entry.flow.routines:
            raise NotFound("routine", routine_id, f"GET /api/jobs/{metrics.job_id}/routines/status lists them")
    return json_response({"job_id": metrics.job_id, "routine_id": routine_id, "queues": queues.get(routine_id, [])})


def routine_info(entry: FlowEntry, routine_id: str, svc: Services) -> dict[str, Any]:
    """A routine as configured in its flow: class, slots (capacity, put timeout), events, policy,
    error handling, and the connections in and out of it."""
    spec = entry.flow.routines[routine_id]
    registry = svc.engine.registry
    ports = entry.ports(routine_id, registry)
    flow = entry.flow
    return {
        "flow_id": flow.flow_id,
        "routine_id": routine_id,
        "class_name": spec.class_name,
        "description": spec.description,
        "known_class": spec.class_name in registry,
        "slots": msgspec.to_builtins(ports.slots),
        "events": ports.events,
        "config": spec.config,
        "policy": msgspec.to_builtins(spec.policy) if spec.policy is not None else None,
        "error_handler": msgspec.to_builtins(spec.error_handler or flow.error_handler) if (
            spec.error_handler or flow.error_handler) else None,
        "inbound": [c.source + "->" + c.target for c in flow.connections if c.target_routine == routine_id],
        "outbound": [c.source + "->" + c.target for c in flow.connections if c.source_routine == routine_id],
    }


async def flow_routine_info(request: Request) -> Response:
    svc = services(request)
    flow_id = path_id(request, "flow_id")
    routine_id = path_id(request, "routine_id", routine=True)
    entry = svc.catalog.get(flow_id)  # 404 if unknown
    if routine_id not in entry.flow.routines:
        raise NotFound("routine", routine_id, f"GET /api/flows/{flow_id}/routines lists them")
    return json_response(routine_info(entry, routine_id, svc))


async def runtime_metrics(request: Request) -> Response:
    svc = services(request)
    metrics = await svc.metrics.refreshed()  # in a cluster, the other servers' demand too
    return json_response({"runtimes": metrics.runtimes(runtime_pools(svc.engine))})


routes = [
    Route("/api/monitor/runtimes", runtime_metrics, methods=["GET"]),
    Route("/api/monitor/jobs/{job_id}/metrics", job_metrics, methods=["GET"]),
    Route("/api/jobs/{job_id}/metrics", job_metrics, methods=["GET"]),
    Route("/api/monitor/flows/{flow_id}/metrics", flow_metrics, methods=["GET"]),
    Route("/api/flows/{flow_id}/metrics", flow_metrics, methods=["GET"]),
    Route("/api/jobs/{job_id}/monitoring", job_monitoring, methods=["GET"]),
    Route("/api/jobs/{job_id}/queues/status", queues_status, methods=["GET"]),
    Route("/api/jobs/{job_id}/routines/status", routines_status, methods=["GET"]),
    Route("/api/jobs/{job_id}/routines/{routine_id}/queue-status", routine_queue_status, methods=["GET"]),
    Route("/api/flows/{flow_id}/routines/{routine_id}/info", flow_routine_info, methods=["GET"]),
]

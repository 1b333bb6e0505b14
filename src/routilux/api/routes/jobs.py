"""Jobs: start, list, read, control (pause/resume/cancel/complete/fail), feed, wait, history."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import anyio
import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from routilux.api.body import (
    MAX_SEQ,
    path_id,
    query_choice,
    query_choices,
    query_id,
    query_int,
    query_number,
    read_json,
)
from routilux.api.errors import APIError
from routilux.api.middleware.forwarding import FORWARDED, place_job
from routilux.api.responses import json_response
from routilux.api.schemas import (
    MAX_AGE_SECONDS,
    JobCleanup,
    JobFail,
    JobPost,
    JobReason,
    JobStart,
    JobWait,
)
from routilux.api.services import services
from routilux.bus import JobStatus
from routilux.bus.events import utc_now
from routilux.engine import Entry, Job
from routilux.server.eventlog.reader import GAP
from routilux.server.job_views import history_record_view, job_view, state_view
from routilux.server.retention import jobs_to_clean_up
from routilux.store.base import JobQuery, JobRecord

STATUSES = tuple(s.value for s in JobStatus)
FINISHED = ("completed", "failed", "cancelled")  # what a cleanup may delete
POST_WAIT_SECONDS = 10.0


async def list_jobs(request: Request) -> Response:
    svc = services(request)
    query = JobQuery(
        flow_id=query_id(request, "flow_id"),
        status=query_choice(request, "status", STATUSES),
        runtime_id=query_id(request, "runtime_id"),
        limit=query_int(request, "limit", 100, 1, 1000),
        offset=query_int(request, "offset", 0, 0, 10_000_000),
        with_state=False,
    )
    found, total = await svc.jobs.listing(query)
    views = [job_view(job) for job in found]
    return json_response({"jobs": views, "total": total, "limit": query.limit, "offset": query.offset})


async def start_job(request: Request) -> Response:
    svc = services(request)
    body = await read_json(request, JobStart)
    plan = (await svc.catalog.fetch(body.flow_id)).runnable_plan()
    if body.runtime_id is not None and await svc.runtimes.find(body.runtime_id) is None:
        raise APIError(
            404,
            "runtime_not_found",
            f"runtime '{body.runtime_id}' does not exist; GET /api/runtimes lists the runtimes",
            runtime_id=body.runtime_id,
        )
    node = svc.cluster_node
    runtime = svc.engine.runtimes.get(body.runtime_id or svc.engine.default_runtime_id)
    group = runtime.worker_group if runtime is not None else None
    if node is not None and group is not None and group != svc.settings.worker_group and FORWARDED not in request.scope:
        return await place_job(node, request, group)  # a server of the runtime's worker group runs it
    entries = [Entry(body.entry.routine_id, body.entry.slot_name, body.entry.data)] if body.entry else []
    job = await svc.control.start(
        plan,
        runtime_id=body.runtime_id,
        entries=entries,
        timeout=body.timeout,
        complete_when_idle=body.complete_when_idle,
        durable=body.durable,
    )
    return json_response(job_view(job), 201, headers={"Location": f"/api/jobs/{job.job_id}"})


async def get_job(request: Request) -> Response:
    return json_response(job_view(await services(request).jobs.any_job(path_id(request, "job_id"))))


async def job_status(request: Request) -> Response:
    found = await services(request).jobs.any_job(path_id(request, "job_id"))
    view = job_view(found)
    live = found if isinstance(found, Job) else None
    return json_response(
        {
            "job_id": view.job_id,
            "flow_id": view.flow_id,
            "status": view.status,
            "error": view.error,
            "error_detail": view.error_detail,
            "active_activations": live.active_activations if live is not None else 0,
            "last_seq": live.last_seq if live is not None else None,
        }
    )


def _stored_state(record: JobRecord) -> dict[str, Any]:
    state = {
        "routine_states": {},
        "execution_history": [],
        "shared_data": {},
        "pause_points": [],
        "deferred_events": [],
        "errors": [],
        **record.state,
    }
    return state_view({**msgspec.to_builtins(job_view(record)), **state, "error": record.error})


async def job_state(request: Request) -> Response:
    svc = services(request)
    found = await svc.jobs.any_job(path_id(request, "job_id"))
    if not isinstance(found, Job):
        return json_response({**_stored_state(found), "durable": False, "checkpoint_error": None})
    checkpointer = svc.control.checkpointer
    durable = checkpointer is not None and not found.is_terminal and checkpointer.is_durable(found)
    error = checkpointer.checkpoint_error(found.job_id) if checkpointer is not None and durable else None
    return json_response({**state_view(found.state()), "durable": durable, "checkpoint_error": error})


def _control(action: str):
    async def handler(request: Request) -> Response:
        svc = services(request)
        job = await svc.jobs.controllable(path_id(request, "job_id"), action)
        if action == "pause":
            job.pause((await read_json(request, JobReason, required=False)).reason)
        elif action == "resume":
            job.resume()
        elif action == "cancel":
            job.cancel((await read_json(request, JobReason, required=False)).reason)
        elif action == "complete":
            job.complete()
        else:
            body = await read_json(request, JobFail, required=False)
            job.fail(body.reason)
        await svc.control.saved(job)  # the answer says saved
        return json_response(job_view(job))

    handler.__name__ = f"{action}_job"
    return handler


async def post_data(request: Request) -> Response:
    svc = services(request)
    job_id = path_id(request, "job_id")
    body = await read_json(request, JobPost)
    job = await svc.jobs.controllable(job_id, "post to")
    # A full slot holds the request for a bounded time, then answers 503 slot_full (retry later).
    await svc.control.post(job, body.routine_id, body.slot_name, body.data, timeout=POST_WAIT_SECONDS)
    (queue,) = job.queue_status(body.routine_id, body.slot_name)
    return json_response(
        {
            "job_id": job.job_id,
            "routine_id": body.routine_id,
            "slot_name": body.slot_name,
            "status": job.status.value,
            "queue": queue,
        },
        202,
    )


async def _wait(job: Job, timeout: float, stopping: anyio.Event) -> JobStatus:
    """The job's status once it ended, ``timeout`` passed, or the server began to stop (a long
    poll must not hold a graceful stop up: the client gets the status now, ``timed_out``)."""
    if stopping.is_set():
        return job.status
    with anyio.move_on_after(timeout):
        async with anyio.create_task_group() as tg:

            async def until_stopping() -> None:
                await stopping.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(until_stopping)
            await job.wait()
            tg.cancel_scope.cancel()
    return job.status


async def wait_job(request: Request) -> Response:
    svc = services(request)
    job_id = path_id(request, "job_id")
    body = await read_json(request, JobWait, required=False)
    limit = svc.settings.max_wait_seconds
    timeout = body.timeout if body.timeout is not None else limit
    if timeout > limit:
        raise APIError(
            422, "validation_error", f"body.timeout: at most {limit:g} seconds", field="body.timeout"
        )
    found = await svc.jobs.any_job(job_id)
    if isinstance(found, Job):
        status = await _wait(found, timeout, svc.control.stopping)
        view = job_view(found)
        timed_out = not status.is_terminal
    else:
        view = job_view(found)
        timed_out = False
    return json_response({**msgspec.to_builtins(view), "timed_out": timed_out})


async def execution_history(request: Request) -> Response:
    found = await services(request).jobs.any_job(path_id(request, "job_id"))
    routine_id = query_id(request, "routine_id")
    limit = query_int(request, "limit", 1000, 1, 10_000)
    if isinstance(found, Job):
        history = msgspec.to_builtins(list(found.execution_history))
    else:
        history = found.state.get("execution_history", [])
    if routine_id is not None:
        history = [h for h in history if h["routine_id"] == routine_id]
    total = len(history)
    shown = [history_record_view(h) for h in history[-limit:]]
    return json_response({"job_id": found.job_id, "history": shown, "total": total})


async def _events(
    request: Request, types: frozenset[str] | None
) -> tuple[str, list[msgspec.Raw], list[dict[str, int]], int | None]:
    """The job's id, its events after ``since``, the seq ranges among them that are gone for good
    (oldest first), and the last seq the answer accounts for (the next ``since``)."""
    svc = services(request)
    job_id = path_id(request, "job_id")
    await svc.jobs.any_job(job_id)  # 404 for an unknown job
    since = query_int(request, "since", 0, 0, MAX_SEQ)
    limit = query_int(request, "limit", 1000, 1, 10_000)
    found = await svc.events.events_since(job_id, since, limit=limit, types=types)
    events = [msgspec.Raw(payload) for _seq, type_, payload in found.events if type_ != GAP]
    gaps = [{"from_seq": first, "to_seq": last} for first, last in found.gaps()]
    last = found.events[-1][0] if found.events else (found.gap[1] if found.gap is not None else None)
    return job_id, events, gaps, last


async def job_events(request: Request) -> Response:
    job_id, events, gaps, last = await _events(request, None)
    return json_response({"job_id": job_id, "events": events, "count": len(events), "last_seq": last, "gaps": gaps})


TRACE_TYPES = frozenset({"routine_start", "routine_end", "slot_call", "event_emit"})
LOG_TYPES = frozenset({"log", "progress"})


async def job_trace(request: Request) -> Response:
    job_id, events, gaps, _last = await _events(request, TRACE_TYPES)
    return json_response({"job_id": job_id, "trace": events, "count": len(events), "gaps": gaps})


async def job_logs(request: Request) -> Response:
    job_id, events, gaps, _last = await _events(request, LOG_TYPES)
    return json_response({"job_id": job_id, "logs": events, "count": len(events), "gaps": gaps})


async def cleanup_jobs(request: Request) -> Response:
    svc = services(request)
    body = await read_json(request, JobCleanup, required=False)
    older_than_seconds, statuses = _cleanup_criteria(request, body)
    chosen = await jobs_to_clean_up(svc.store, statuses=statuses, flow_id=body.flow_id, limit=body.limit,
                                    ended_before=utc_now() - timedelta(seconds=older_than_seconds))
    deleted = await svc.delete_jobs(chosen)
    return json_response({"deleted": deleted, "job_ids": chosen})


def _cleanup_criteria(request: Request, body: JobCleanup) -> tuple[float, list[str]]:
    """The age and statuses a cleanup deletes: each given once, in the body
    (``older_than_seconds``, ``statuses``) or in the query (``max_age_hours``, repeated
    ``status``, as dashboards send them); at least one of the two, or 422 ``criterion_required``."""
    hours = query_number(request, "max_age_hours", 0, MAX_AGE_SECONDS / 3600)
    query_statuses = query_choices(request, "status", FINISHED)
    for in_body, in_query, name in ((body.older_than_seconds, hours, "max_age_hours"),
                                    (body.statuses, query_statuses, "status")):
        if in_body is not None and in_query is not None:
            raise APIError(422, "validation_error", f"query.{name}: the body already gives this criterion; "
                           "give each in the body or in the query, not both", field=f"query.{name}")
    older = body.older_than_seconds
    if hours is not None:
        older = hours * 3600
    statuses: list[str] | None = list(body.statuses) if body.statuses is not None else query_statuses
    if older is None and statuses is None:
        raise APIError(422, "criterion_required",
                       "say which finished jobs to delete: older_than_seconds or statuses in the body (or the "
                       "query parameters max_age_hours or status); a cleanup without either deletes nothing",
                       field="body")
    return older or 0.0, statuses if statuses is not None else list(FINISHED)


routes = [
    Route("/api/jobs", list_jobs, methods=["GET"]),
    Route("/api/jobs", start_job, methods=["POST"]),
    Route("/api/jobs/cleanup", cleanup_jobs, methods=["POST"]),
    Route("/api/jobs/{job_id}", get_job, methods=["GET"]),
    Route("/api/jobs/{job_id}/status", job_status, methods=["GET"]),
    Route("/api/jobs/{job_id}/state", job_state, methods=["GET"]),
    Route("/api/jobs/{job_id}/pause", _control("pause"), methods=["POST"]),
    Route("/api/jobs/{job_id}/resume", _control("resume"), methods=["POST"]),
    Route("/api/jobs/{job_id}/cancel", _control("cancel"), methods=["POST"]),
    Route("/api/jobs/{job_id}/complete", _control("complete"), methods=["POST"]),
    Route("/api/jobs/{job_id}/fail", _control("fail"), methods=["POST"]),
    Route("/api/jobs/{job_id}/post", post_data, methods=["POST"]),
    Route("/api/jobs/{job_id}/wait", wait_job, methods=["POST"]),
    Route("/api/jobs/{job_id}/execution-history", execution_history, methods=["GET"]),
    Route("/api/jobs/{job_id}/trace", job_trace, methods=["GET"]),
    Route("/api/jobs/{job_id}/logs", job_logs, methods=["GET"]),
    Route("/api/jobs/{job_id}/events", job_events, methods=["GET"]),
]


"""Breakpoints and debug sessions of live jobs.

The spec's paths (``/api/breakpoints/{job_id}``, ``/api/debug/{job_id}/...``) and the job-scoped
aliases the dashboard uses (``/api/jobs/{job_id}/breakpoints``, ``/api/jobs/{job_id}/debug/...``)
share one handler each.
"""

from __future__ import annotations

import re
from typing import Any, Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from routilux.api.body import path_id, read_json
from routilux.api.errors import APIError
from routilux.api.responses import json_response
from routilux.api.schemas import BreakpointCreate, BreakpointUpdate, EvaluateBody, VariableSet
from routilux.api.services import services
from routilux.debug.breakpoints import BreakpointSpecError, make_breakpoint
from routilux.debug.expressions import ExpressionError
from routilux.debug.session import JobDebugger, attach
from routilux.engine import Job
from routilux.engine.flow import is_valid_routine_id
from routilux.store.base import JobRecord


def _debugger(job: Job) -> JobDebugger | None:
    return job.probe if isinstance(job.probe, JobDebugger) else None


def _session_view(job: Job) -> dict[str, Any]:
    debugger = _debugger(job)
    if debugger is not None:
        return debugger.view()
    return {
        "job_id": job.job_id, "status": job.status.value, "paused_at": None, "variables": None,
        "call_stack": [], "breakpoints": [], "condition_errors": [], "stepping": False,
    }


async def _job(request: Request, action: str) -> Job:
    return await services(request).jobs.controllable(path_id(request, "job_id"), action)


async def _any_job(request: Request) -> Job | None:
    found = await services(request).jobs.any_job(path_id(request, "job_id"))
    return found if isinstance(found, Job) else None


async def list_breakpoints(request: Request) -> Response:
    job_id = path_id(request, "job_id")
    job = await _any_job(request)
    debugger = _debugger(job) if job is not None else None
    views = [bp.view() for bp in debugger.breakpoints.values()] if debugger else []
    return json_response({"job_id": job_id, "breakpoints": views, "total": len(views)})


async def create_breakpoint(request: Request) -> Response:
    job = await _job(request, "set a breakpoint on")
    if job.is_terminal:
        raise APIError(409, "illegal_transition", f"job {job.job_id} has ended", job_status=job.status.value)
    body = await read_json(request, BreakpointCreate)
    try:
        bp = make_breakpoint(
            job.plan, job.job_id, type=body.type, routine_id=body.routine_id, slot_name=body.slot_name,
            event_name=body.event_name, source=body.source, target=body.target,
            condition=body.condition, enabled=body.enabled,
        )
    except BreakpointSpecError as exc:
        raise APIError(422, "invalid_breakpoint", str(exc), field=exc.field) from None
    try:
        attach(job).add(bp)
    except ValueError as exc:
        raise APIError(409, "too_many_breakpoints", str(exc)) from None
    await services(request).control.saved(job)  # kept with the job's checkpoint: 201 means saved
    return json_response(bp.view(), 201)


def _find(job: Job, breakpoint_id: str) -> Any:
    debugger = _debugger(job)
    bp = debugger.breakpoints.get(breakpoint_id) if debugger else None
    if bp is None:
        raise APIError(404, "breakpoint_not_found", f"job {job.job_id} has no breakpoint '{breakpoint_id}'",
                       breakpoint_id=breakpoint_id)
    return bp


async def delete_breakpoint(request: Request) -> Response:
    job = await _job(request, "clear a breakpoint of")
    bp = _find(job, path_id(request, "breakpoint_id"))
    _debugger(job).remove(bp.breakpoint_id)  # type: ignore[union-attr]
    await services(request).control.saved(job)
    return Response(status_code=204)


async def update_breakpoint(request: Request) -> Response:
    job = await _job(request, "change a breakpoint of")
    bp = _find(job, path_id(request, "breakpoint_id"))
    body = await read_json(request, BreakpointUpdate)
    bp.enabled = body.enabled
    await services(request).control.saved(job)
    return json_response(bp.view())


async def get_session(request: Request) -> Response:
    job = await _any_job(request)
    if job is None:
        found = await services(request).jobs.any_job(path_id(request, "job_id"))
        return json_response({
            "job_id": found.job_id, "status": found.status, "paused_at": None, "variables": None,
            "call_stack": [], "breakpoints": [], "condition_errors": [], "stepping": False,
        })
    return json_response(_session_view(job))


async def _running_job(request: Request, action: str) -> Job:
    """A job that has not ended, to step or continue (an ended one is 409)."""
    job = await _job(request, action)
    if job.is_terminal:
        raise APIError(409, "illegal_transition", f"cannot {action} job {job.job_id}: it is {job.status.value}",
                       job_status=job.status.value)
    return job


async def step(request: Request) -> Response:
    job = await _running_job(request, "step")
    attach(job).step()
    return json_response(_session_view(job))


async def continue_(request: Request) -> Response:
    job = await _running_job(request, "continue")
    debugger = _debugger(job)
    if debugger is not None:
        debugger.continue_()
    else:
        job.resume()
    return json_response(_session_view(job))


async def variables(request: Request) -> Response:
    """The paused frame's variables; with ``?routine_id=`` (the dashboard names the routine it
    shows), only if the job is stopped at that routine."""
    job = await _any_job(request)
    routine_id = request.query_params.get("routine_id") or None
    if routine_id is not None and not is_valid_routine_id(routine_id):
        raise APIError(422, "validation_error", "query.routine_id: must be 1-128 of letters, digits, '_', '-'",
                       field="query.routine_id")
    debugger = _debugger(job) if job is not None else None
    shown = debugger is not None and (routine_id is None or routine_id == debugger.frame_routine)
    return json_response({"job_id": path_id(request, "job_id"),
                          "variables": debugger.variables() if debugger and shown else None})


async def call_stack(request: Request) -> Response:
    job = await _any_job(request)
    debugger = _debugger(job) if job is not None else None
    return json_response({"job_id": path_id(request, "job_id"),
                          "call_stack": list(debugger.call_stack) if debugger else []})


def _not_paused(job_id: str) -> APIError:
    return APIError(
        409, "not_paused",
        f"job {job_id} is not stopped at a breakpoint; pass 'variables' to evaluate without one",
        job_id=job_id,
    )


def _frame_names(found: Job | JobRecord, job_id: str, body: EvaluateBody) -> dict[str, Any]:
    """The names of the frame ``body`` selects: the one the job is stopped at (frame 0, in the
    routine it stopped before). Only that frame holds data; any other is 409."""
    debugger = _debugger(found) if isinstance(found, Job) else None
    names = debugger.frame_names() if debugger else None
    if names is None or debugger is None:
        raise _not_paused(job_id)
    routine = debugger.frame_routine
    if body.routine_id is not None and body.routine_id != routine:
        raise APIError(409, "routine_not_paused",
                       f"job {job_id} is stopped at routine '{routine}', not '{body.routine_id}'",
                       job_id=job_id, routine_id=routine)
    if body.frame_index:
        raise APIError(409, "frame_not_available",
                       f"only the frame job {job_id} is stopped at (frame_index 0) holds data; frames further "
                       "down the call stack are gone", job_id=job_id, frame_index=body.frame_index)
    return names


async def evaluate_expression(request: Request) -> Response:
    job_id = path_id(request, "job_id")
    found = await services(request).jobs.any_job(job_id)
    body = await read_json(request, EvaluateBody)
    names = body.variables
    if names is None:
        names = _frame_names(found, job_id, body)
    elif body.routine_id is not None or body.frame_index is not None:
        raise APIError(422, "validation_error",
                       "body: 'routine_id' and 'frame_index' choose the paused frame to evaluate in; with "
                       "'variables' there is none", field="body.variables")
    try:
        result = await services(request).evaluations.evaluate(body.expression, names)
    except ExpressionError as exc:
        raise APIError(400, "invalid_expression", exc.message, kind=exc.kind) from None
    try:
        value = msgspec.to_builtins(result)
    except (TypeError, msgspec.EncodeError):
        value = repr(result)
    return json_response({"result": value, "type": type(result).__name__})


VARIABLE_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,127}")


async def set_variable(request: Request) -> Response:
    """Set a variable of the paused frame: a key of the item the job is stopped with, which the
    held routine then gets (what ``variables`` shows as ``data.item``, and ``evaluate`` sees as a
    name). Committed with the job's checkpoint, like any change to a job."""
    job = await _running_job(request, "set a variable of")
    name = request.path_params["variable"]
    if not VARIABLE_NAME.fullmatch(name):
        raise APIError(422, "invalid_id",
                       "path.variable: a variable is a letter, then up to 127 letters, digits or '_'",
                       field="path.variable")
    body = await read_json(request, VariableSet)
    debugger = _debugger(job)
    try:
        if debugger is None:
            raise LookupError("no debugger")
        debugger.set_variable(name, body.value)
    except LookupError:
        raise APIError(409, "not_paused", f"job {job.job_id} is not stopped at a breakpoint or step",
                       job_id=job.job_id) from None
    await services(request).control.saved(job)
    return json_response({"job_id": job.job_id, "variables": debugger.variables()})


routes = [
    Route("/api/breakpoints/{job_id}", list_breakpoints, methods=["GET"]),
    Route("/api/breakpoints/{job_id}", create_breakpoint, methods=["POST"]),
    Route("/api/breakpoints/{job_id}/{breakpoint_id}", delete_breakpoint, methods=["DELETE"]),
    Route("/api/debug/{job_id}", get_session, methods=["GET"]),
    Route("/api/debug/{job_id}/step", step, methods=["POST"]),
    Route("/api/debug/{job_id}/continue", continue_, methods=["POST"]),
    Route("/api/debug/{job_id}/evaluate", evaluate_expression, methods=["POST"]),
    Route("/api/jobs/{job_id}/breakpoints", list_breakpoints, methods=["GET"]),
    Route("/api/jobs/{job_id}/breakpoints", create_breakpoint, methods=["POST"]),
    Route("/api/jobs/{job_id}/breakpoints/{breakpoint_id}", delete_breakpoint, methods=["DELETE"]),
    Route("/api/jobs/{job_id}/breakpoints/{breakpoint_id}", update_breakpoint, methods=["PUT"]),
    Route("/api/jobs/{job_id}/debug/session", get_session, methods=["GET"]),
    Route("/api/jobs/{job_id}/debug/resume", continue_, methods=["POST"]),
    Route("/api/jobs/{job_id}/debug/step-over", step, methods=["POST"]),
    Route("/api/jobs/{job_id}/debug/step-into", step, methods=["POST"]),
    Route("/api/jobs/{job_id}/debug/variables", variables, methods=["GET"]),
    Route("/api/jobs/{job_id}/debug/variables/{variable}", set_variable, methods=["PUT"]),
    Route("/api/jobs/{job_id}/debug/call-stack", call_stack, methods=["GET"]),
    Route("/api/jobs/{job_id}/debug/evaluate", evaluate_expression, methods=["POST"]),
]

"""The baseline of ``python -m bench.api``: a bare Starlette app with one JSON endpoint.

    python -m uvicorn bench.bare_app:app --http httptools --loop uvloop   (from the repository root)

``GET /job`` answers a constant dict with the same fields and about the same size as a
Routilux job view (``GET /api/jobs/{id}``), encoded by Starlette's own ``JSONResponse`` (the
standard library's ``json``), with no middleware: the fastest a plain Starlette endpoint of that
shape gets on the same uvicorn, so the ratio to it is the cost of everything Routilux adds.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

JOB = {
    "job_id": "6f1c2d3e4a5b46c7889900aabbccddee",
    "flow_id": "bench_post",
    "runtime_id": "default",
    "status": "idle",
    "created_at": "2025-01-01T12:00:00.123456Z",
    "started_at": "2025-01-01T12:00:00.123789Z",
    "completed_at": None,
    "error": None,
    "timeout": None,
    "complete_when_idle": False,
}


async def job(request: Request) -> Response:
    return JSONResponse(JOB)


app = Starlette(routes=[Route("/job", job, methods=["GET"])])

"""Discovery: what exists outside the API's own records, and bringing it in.

- flows: the files of ``ROUTILUX_FLOWS_DIR`` — which load, which are loaded and in sync; sync
  creates and updates flows from them.
- jobs: the jobs the engine is running right now; sync writes their current records to the
  store at once (normally that happens on each status change).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from routilux.api.errors import APIError
from routilux.api.responses import json_response
from routilux.api.services import services
from routilux.server.flow_files import describe, scan, sync_flows
from routilux.server.job_views import job_view
from routilux.server.jobs import job_record


def _directory(request: Request):  # type: ignore[no-untyped-def]
    directory = services(request).settings.flows_dir
    if directory is None:
        raise APIError(
            409, "no_flows_dir", "no flows directory is configured; set ROUTILUX_FLOWS_DIR to use flow discovery"
        )
    return directory


async def discover_flows(request: Request) -> Response:
    svc = services(request)
    directory = _directory(request)
    items = [describe(item, svc.catalog) for item in await scan(directory)]
    return json_response({"directory": str(directory), "flows": items, "total": len(items)})


async def sync_discovered_flows(request: Request) -> Response:
    svc = services(request)
    directory = _directory(request)
    result = await sync_flows(svc.catalog, directory)
    loaded = [*result["created"], *result["updated"], *result["unchanged"]]
    return json_response({"directory": str(directory), **result, "flows": [{"flow_id": f} for f in loaded]})


async def discover_jobs(request: Request) -> Response:
    live = [job_view(job) for job in await services(request).jobs.all_live()]
    return json_response({"jobs": live, "total": len(live)})


async def sync_discovered_jobs(request: Request) -> Response:
    svc = services(request)
    jobs = list(svc.engine.jobs.values())
    for job in jobs:
        await svc.store.put_job(job_record(job, with_state=job.is_terminal))
    return json_response({"synced": len(jobs), "jobs": [job_view(job) for job in jobs]})


routes = [
    Route("/api/discovery/flows", discover_flows, methods=["GET"]),
    Route("/api/discovery/flows/sync", sync_discovered_flows, methods=["POST"]),
    Route("/api/discovery/jobs", discover_jobs, methods=["GET"]),
    Route("/api/discovery/jobs/sync", sync_discovered_jobs, methods=["POST"]),
]

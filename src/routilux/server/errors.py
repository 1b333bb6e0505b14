"""What the control plane refuses, as domain errors that know nothing of HTTP.

The server layer (catalogue, jobs, runtimes, cluster node) says *what* went wrong — this does not
exist, this conflicts with what is there, this cannot be served right now — and the API edge
(:mod:`routilux.api.errors`) alone decides which status each kind means. So the same refusal
reads the same whether it came from a route, a start-up load or a forwarded request, and a
start-up path never raises an HTTP exception.

Each error carries the stable ``code`` and the context fields an API body shows, exactly as
:class:`~routilux.errors.RoutiluxError` does.
"""

from __future__ import annotations

from typing import Any

from routilux.errors import RoutiluxError


class ControlError(RoutiluxError):
    """A refusal of the control plane, with its own ``code`` (one class per kind of answer)."""

    def __init__(self, code: str, message: str, /, **context: Any) -> None:
        super().__init__(message, **context)
        self.code = code


class NotFound(ControlError):
    """An id names nothing: ``<kind>_not_found`` with ``<kind>_id`` in the context."""

    def __init__(self, kind: str, ident: str, hint: str = "") -> None:
        name = kind.replace(" ", "_")
        message = f"{kind} '{ident}' not found" + (f"; {hint}" if hint else "")
        super().__init__(f"{name}_not_found", message, **{f"{name}_id": ident})


class Conflict(ControlError):
    """The request conflicts with the current state: a duplicate, a stale revision, a finished job."""


class Invalid(ControlError):
    """The request is well-formed but names something that cannot be used as asked."""


class Unprocessable(ControlError):
    """A field of the request has a value outside what it may be (the context names the field)."""


class Unavailable(ControlError):
    """It cannot be served now, but may be shortly: ``retry_after`` seconds is the advice."""

    def __init__(self, code: str, message: str, /, *, retry_after: int = 1, **context: Any) -> None:
        super().__init__(code, message, **context)
        self.retry_after = retry_after


def flow_not_found(flow_id: str) -> NotFound:
    return NotFound("flow", flow_id, "GET /api/flows lists the flows")


def job_not_found(job_id: str) -> NotFound:
    return NotFound("job", job_id, "GET /api/jobs lists the jobs")


def runtime_not_found(runtime_id: str) -> NotFound:
    return NotFound("runtime", runtime_id, "GET /api/runtimes lists the runtimes")

"""Check real HTTP exchanges against the hand-written OpenAPI document (``openapi/openapi.yaml``).

The API tests install :func:`httpx_event_hook` on their client, so every response a test receives
is validated, whatever the test itself asserts::

    httpx.AsyncClient(base_url=..., event_hooks={"response": [httpx_event_hook]})

What is checked, by :func:`check_response`:

- the response: its status must be documented for the operation (an undocumented status, a 500
  for instance, is a failure), its body must match the documented schema, and documented headers
  (``ETag``, ``Location``, ``Retry-After``) must be present and well-formed. Response objects may
  not carry properties the spec does not list (openapi-core's ``forbid`` policy: a schema that
  says nothing about ``additionalProperties`` is closed), so a field added to a handler without
  the spec is caught; free-form objects say ``additionalProperties: true`` in the spec;
- the request, when the server accepted it (2xx): what the server accepts the spec must allow
  (parameters, headers and body). Rejected requests are not checked: tests send bad ones on
  purpose;
- the socket layer's answers (408, 414, 431, and 503 ``too_many_connections``: the spec's "Limits at
  the socket") are accepted for any path, in the documented error shape;
- a request to a path or method the spec does not have may only get the router's own answers
  (404/405, or 401/403/429 from the middleware, or a trailing-slash redirect), with the
  documented error body. Paths are matched percent-decoded, as the server routes them (an
  encoded ``/`` separates segments there, and a path ending in ``/`` gets the router's redirect);
- an id of ``.`` or ``..`` (hostile-input tests send them raw): openapi-core resolves such dot
  segments away and would look up another path, so the answer is only checked for a documented,
  non-2xx status and the Error shape.

The docs routes (``/openapi.json``, ``/docs``, ``/docs/assets/...``, ``/redoc``) are not part of
the spec and are skipped, as are ``HEAD`` and ``OPTIONS`` (CORS preflight) requests.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import httpx
from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.templating.paths.exceptions import OperationNotFound, PathNotFound
from openapi_core.templating.responses.exceptions import ResponseNotFound
from openapi_schema_validator import OAS30Validator
from werkzeug.datastructures import Headers, ImmutableMultiDict

from routilux.api.routes import docs

__all__ = ["check_response", "find_operation", "httpx_event_hook", "httpx_sync_event_hook", "load_spec"]

#: Paths served by the app but not described by the spec (the spec and its viewers).
SKIPPED_PATHS = ("/openapi.json", "/docs", "/redoc")
#: Methods answered by Starlette or middleware for every route, never operations of their own.
SKIPPED_METHODS = frozenset({"HEAD", "OPTIONS"})
#: What a path or method the spec does not have may get: the router's and middleware's answers.
UNDOCUMENTED_ROUTE_STATUSES = frozenset({401, 403, 404, 405, 429})
REDIRECT_STATUSES = frozenset({307, 308})
#: What the socket layer may answer any request with, before the app sees it (status -> code).
SOCKET_ANSWERS = {408: "request_timeout", 414: "request_line_too_long", 431: "headers_too_large",
                  503: "too_many_connections"}

_MAX_SHOWN = 600


def load_spec() -> dict[str, Any]:
    """The OpenAPI document as the server serves it (``routilux.api.routes.docs.load_spec``)."""
    return docs.load_spec()


@functools.cache
def _openapi() -> OpenAPI:
    return OpenAPI.from_dict(load_spec(), config=Config(additional_properties_default_policy="forbid"))


@functools.cache
def _error_validator() -> OAS30Validator:
    spec = load_spec()
    return OAS30Validator({**spec["components"]["schemas"]["ErrorResponse"], "components": spec["components"]})


def _skipped(method: str, path: str) -> bool:
    if method in SKIPPED_METHODS:
        return True
    return any(path == p or path.startswith(p + "/") for p in SKIPPED_PATHS)


@dataclass(frozen=True)
class Operation:
    path: str  # the spec's template, e.g. /api/flows/{flow_id}
    method: str  # upper case
    operation_id: str
    statuses: tuple[str, ...]


def _template_matches(template: str, path: str) -> bool:
    t_parts, p_parts = template.strip("/").split("/"), path.strip("/").split("/")
    if len(t_parts) != len(p_parts):
        return False
    return all(
        (t.startswith("{") and t.endswith("}") and p != "") or t == p for t, p in zip(t_parts, p_parts, strict=True)
    )


def find_operation(method: str, path: str) -> Operation | None | bool:
    """The spec's operation for ``method path``; ``None`` if no path matches, ``False`` if a
    path matches but has no such method. Literal segments win over templated ones, as in the
    router (``/api/jobs/cleanup`` before ``/api/jobs/{job_id}``)."""
    paths = load_spec()["paths"]
    candidates = [t for t in paths if _template_matches(t, path)]
    if not candidates:
        return None
    candidates.sort(key=lambda t: [seg.startswith("{") for seg in t.strip("/").split("/")])
    for template in candidates:
        op = paths[template].get(method.lower())
        if op is not None:
            return Operation(template, method.upper(), op.get("operationId", "?"), tuple(op.get("responses", {})))
    return False


# -- openapi-core request/response adapters (openapi_core.protocols.Request / Response) ------------
@dataclass
class _Request:
    host_url: str
    path: str
    method: str  # lower case, as openapi-core expects
    body: bytes | None
    content_type: str
    parameters: RequestParameters = field(default_factory=RequestParameters)


@dataclass
class _Response:
    status_code: int
    data: bytes | None
    headers: Headers
    content_type: str


def _headers(raw: Any) -> Headers:
    if raw is None:
        return Headers()
    if isinstance(raw, Headers):
        return raw
    items: Iterable[tuple[str, str]]
    if isinstance(raw, Mapping) or hasattr(raw, "items"):
        items = raw.items()
    else:
        items = raw
    return Headers([(str(k), str(v)) for k, v in items])


def _shorten(text: str, limit: int = _MAX_SHOWN) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def _show_body(body: bytes | None) -> str:
    if not body:
        return "<empty>"
    try:
        return _shorten(json.dumps(json.loads(body), ensure_ascii=False))
    except ValueError:
        return _shorten(repr(body))


def _describe(exc: BaseException) -> list[str]:
    """Readable lines for one openapi-core error: the error, then each schema violation."""
    lines = [f"{type(exc).__name__}: {_shorten(str(exc), 200)}"]
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for err in getattr(current, "schema_errors", None) or ():
            where = "/".join(str(p) for p in getattr(err, "absolute_path", ())) or "<root>"
            lines.append(f"  at {where}: {_shorten(getattr(err, 'message', str(err)))}")
            for sub in getattr(err, "context", None) or ():
                sub_where = "/".join(str(p) for p in getattr(sub, "absolute_path", ())) or "<root>"
                lines.append(f"    (option) at {sub_where}: {_shorten(sub.message)}")
        current = current.__cause__ or current.__context__
    if len(lines) > 1:  # the violations say it better than the message, which repeats the value
        lines[0] = f"{type(exc).__name__}:"
    return lines


def _socket_answer(status: int, body: bytes | None) -> bool:
    """An answer of the server's socket layer (``routilux.api.transport``), which the spec
    describes once for every operation rather than in each."""
    if status not in SOCKET_ANSWERS:
        return False
    try:
        return bool(json.loads(body or b"")["detail"]["error"] == SOCKET_ANSWERS[status])
    except (ValueError, KeyError, TypeError):
        return False


def _check_undocumented_route(
    what: str, found: None | bool, status: int, headers: Headers, body: bytes | None
) -> None:
    reason = "no path of the spec matches it" if found is None else "its path has no such method in the spec"
    if status in REDIRECT_STATUSES and "location" in headers:
        return
    if status not in UNDOCUMENTED_ROUTE_STATUSES:
        raise AssertionError(
            f"{what} -> {status}: {reason}, so only the router's {sorted(UNDOCUMENTED_ROUTE_STATUSES)} "
            f"error answers are expected. Body: {_show_body(body)}"
        )
    _check_error_body(what, status, body)


def _check_error_body(what: str, status: int, body: bytes | None) -> None:
    try:
        document = json.loads(body or b"")
    except ValueError:
        raise AssertionError(f"{what} -> {status}: the error body is not JSON: {_show_body(body)}") from None
    problems = [f"  at {'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                for e in _error_validator().iter_errors(document)]
    if problems:
        raise AssertionError(
            f"{what} -> {status}: the error body does not match the spec's Error schema:\n"
            + "\n".join(problems) + f"\nBody: {_show_body(body)}"
        )


def _check_dot_segment_answer(what: str, found: Operation, status: int, body: bytes | None) -> None:
    if str(status) not in found.statuses:
        raise AssertionError(
            f"{what} ({found.operation_id}) -> {status}: status {status} is not documented "
            f"(documented: {', '.join(found.statuses)}). Body: {_show_body(body)}"
        )
    if 200 <= status < 300:
        raise AssertionError(f"{what} ({found.operation_id}) -> {status}: an id of '.' or '..' was accepted")
    _check_error_body(what, status, body)


def check_response(
    method: str,
    url: str | httpx.URL,
    status: int,
    headers: Any,
    body_bytes: bytes | None,
    request_body: bytes | None = None,
    request_headers: Any = None,
) -> None:
    """Validate one exchange against the spec; AssertionError says what does not match.

    ``url`` may be absolute or just a path (with its query string). ``headers`` and
    ``request_headers`` may be any mapping or list of pairs (httpx, Starlette, dict).
    """
    method = method.upper()
    parts = urlsplit(str(url))
    path = parts.path or "/"
    if _skipped(method, path):
        return
    what = f"{method} {path}" + (f"?{parts.query}" if parts.query else "")
    response_headers = _headers(headers)
    if _socket_answer(status, body_bytes):
        _check_error_body(what, status, body_bytes)  # any path: the spec's "Limits at the socket"
        return
    # The server routes on the percent-decoded path, where an encoded "/" separates segments.
    routed = unquote(path)
    if routed.endswith("/") and routed != "/" and status in REDIRECT_STATUSES:
        _check_undocumented_route(what, None, status, response_headers, body_bytes)  # the router's redirect
        return
    found = find_operation(method, routed)
    if not isinstance(found, Operation):
        _check_undocumented_route(what, found, status, response_headers, body_bytes)
        return
    if any(segment in (".", "..") for segment in routed.split("/")):
        # An id of "." or ".." (sent raw or percent-encoded): openapi-core resolves dot segments
        # away (RFC 3986) and would look up another path, so check what holds without it.
        _check_dot_segment_answer(what, found, status, body_bytes)
        return

    spec = load_spec()
    host_url = spec["servers"][0]["url"].rstrip("/")
    req_headers = _headers(request_headers)
    body = request_body or None
    request = _Request(
        host_url=host_url,
        path=path,
        method=method.lower(),
        body=body,
        # The server reads JSON whatever the Content-Type says; only a declared one is checked.
        content_type=(req_headers.get("content-type") or "application/json").lower(),
        parameters=RequestParameters(
            query=ImmutableMultiDict(parse_qsl(parts.query, keep_blank_values=True)),
            header=req_headers,
            cookie=ImmutableMultiDict(),
        ),
    )
    response = _Response(
        status_code=status,
        data=body_bytes or None,
        headers=response_headers,
        content_type=(response_headers.get("content-type") or "").lower(),
    )
    label = f"{what} ({found.operation_id}) -> {status}"

    errors = list(_openapi().iter_response_errors(request, response))
    if any(isinstance(error, ResponseNotFound) for error in errors):
        raise AssertionError(
            f"{label}: status {status} is not documented for {found.operation_id} "
            f"(documented: {', '.join(found.statuses)}). Body: {_show_body(body_bytes)}"
        )
    lost = [error for error in errors if isinstance(error, (PathNotFound, OperationNotFound))]
    if lost:  # find_operation found it, so the two disagree on how paths match
        raise AssertionError(f"{label}: openapi-core cannot find the operation: {lost[0]}")
    if status == 204 and body_bytes:
        errors.append(AssertionError(f"a 204 response must have no body, got {_show_body(body_bytes)}"))
    if errors:
        lines = [line for error in errors for line in _describe(error)]
        raise AssertionError(
            f"{label}: the response does not match the spec:\n" + "\n".join(lines)
            + f"\nBody: {_show_body(body_bytes)}"
        )

    if 200 <= status < 300:
        request_errors = list(_openapi().iter_request_errors(request))
        if request_errors:
            lines = [line for error in request_errors for line in _describe(error)]
            raise AssertionError(
                f"{label}: the server accepted a request the spec does not allow:\n" + "\n".join(lines)
                + f"\nRequest body: {_show_body(body)}"
            )


def _request_content(request: httpx.Request) -> bytes | None:
    try:
        return request.content
    except httpx.RequestNotRead:  # a streamed body: nothing to check it against
        return None


async def httpx_event_hook(response: httpx.Response) -> None:
    """An httpx ``AsyncClient`` response hook that validates every exchange against the spec."""
    await response.aread()
    request = response.request
    check_response(
        request.method,
        str(request.url),
        response.status_code,
        response.headers,
        response.content,
        _request_content(request),
        request.headers,
    )


def httpx_sync_event_hook(response: httpx.Response) -> None:
    """The same for a synchronous ``httpx.Client``."""
    response.read()
    request = response.request
    check_response(
        request.method,
        str(request.url),
        response.status_code,
        response.headers,
        response.content,
        _request_content(request),
        request.headers,
    )

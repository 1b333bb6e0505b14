"""Reading requests: bodies with a size cap, decoded into Structs; ids and query parameters.

A body larger than the limit is refused with 413 from its ``Content-Length`` alone, or as soon as
a streamed body passes it — never after reading it whole. Malformed JSON (or invalid UTF-8) is
400; JSON of the wrong shape is 422 with the path of the offending field
(``body.entry.routine_id``). A body must be sent as ``Content-Type: application/json``, else
400 ``unsupported_media_type``: a browser sends ``text/plain``, form and
type-less bodies cross-site without asking CORS first, so accepting JSON under those types would
let any web page its user visits drive a server that has no API key (CSRF). Query integers are
plain ASCII digits: ``int()`` alone would also take ``" 5"``, ``"5_0"`` and ``"١٢"``.
"""

from __future__ import annotations

import re
from typing import Final, TypeVar

import msgspec
from starlette.requests import Request

from routilux.api.errors import APIError
from routilux.engine.flow import is_valid_id, is_valid_routine_id
from routilux.engine.validation import validation_problem

T = TypeVar("T")

#: A query integer: ASCII digits, optionally signed, at most 19 of them (anything longer is out of
#: every range anyway, and int() of a huge digit string costs quadratic time).
_INTEGER: Final = re.compile(r"[-+]?[0-9]{1,19}")

#: The largest ``seq`` (and ``since``) the API takes: 2**53 - 1, the largest integer a JavaScript
#: number holds exactly, so a browser or a generated client never rounds one.
MAX_SEQ: Final = 2**53 - 1


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise APIError(400, "invalid_content_length", "Content-Length must be a whole number") from None
        if size > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    body = request._body = b"".join(chunks)  # Starlette's own cache: request.body() works afterwards
    return body


def _too_large(limit: int) -> APIError:
    return APIError(413, "payload_too_large", f"the request body is larger than {limit} bytes", limit=limit)


def decode(body: bytes, type_: type[T], *, required: bool = True) -> T:
    """Decode ``body`` as ``type_``; an empty body is ``{}`` unless a body is required.

    Not JSON at all is 400 ``invalid_json``, JSON of the wrong shape 422 with the field. msgspec
    validates while it parses and stops at the first problem, so a truncated body whose first
    key is unknown would come out as 422; before saying 422 the body is therefore parsed once
    more without a type (only on that error path) to make sure it is JSON.
    """
    if not body.strip():
        if required:
            raise APIError(400, "invalid_json", "the request body is empty; a JSON object is expected")
        body = b"{}"
    try:
        return msgspec.json.decode(body, type=type_)
    except msgspec.ValidationError as exc:
        invalid = exc
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise _not_json(exc) from None
    try:
        msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise _not_json(exc) from None
    problem = validation_problem(invalid, "body", type_)
    raise APIError(422, "validation_error", f"{problem.location}: {problem.message}", field=problem.location)


def _not_json(exc: Exception) -> APIError:
    if isinstance(exc, UnicodeDecodeError):  # msgspec raises it for invalid UTF-8 inside a string
        message = "the request body is not valid UTF-8, which JSON must be"
    elif isinstance(exc, RecursionError):  # msgspec recurses, up to the interpreter's limit (~1000)
        message = "the request body is nested too deeply to be decoded"
    else:
        message = f"the request body is not valid JSON: {exc}"
    return APIError(400, "invalid_json", message)


def _is_json_media_type(content_type: str | None) -> bool:
    """``application/json``, in any case, with any parameters (``; charset=utf-8``)."""
    return (content_type or "").split(";", 1)[0].strip().lower() == "application/json"


async def read_json(request: Request, type_: type[T], *, required: bool = True) -> T:
    settings = request.app.state.settings
    body = await read_body(request, settings.max_body_bytes)
    content_type = request.headers.get("content-type")
    if body.strip() and not _is_json_media_type(content_type):
        got = (content_type or "none")[:100]
        raise APIError(
            400,
            "unsupported_media_type",
            f"the request body must be JSON sent with Content-Type: application/json (got {got!r})",
            field="header.Content-Type",
        )
    return decode(body, type_, required=required)


def path_id(request: Request, name: str, *, routine: bool = False) -> str:
    """A path parameter that must be a valid id: ``^[A-Za-z0-9_.-]{1,128}$`` but not ``.`` or ``..``
    (dot segments: a client would resolve them away), or without the
    dot for a routine id (``routine.event`` splits on it)."""
    value: str = request.path_params[name]
    if routine:
        valid, allowed = is_valid_routine_id(value), "'_', '-'"
    else:
        valid, allowed = is_valid_id(value), "'_', '.', '-' (not '.' or '..')"
    if not valid:
        raise APIError(
            422,
            "invalid_id",
            f"path.{name}: must be 1-128 of letters, digits, {allowed}",
            field=f"path.{name}",
        )
    return value


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not _INTEGER.fullmatch(raw):
        raise APIError(422, "validation_error", f"query.{name}: expected a whole number", field=f"query.{name}")
    value = int(raw)
    if not low <= value <= high:
        raise APIError(
            422, "validation_error", f"query.{name}: must be from {low} to {high}", field=f"query.{name}"
        )
    return value


def query_choice(request: Request, name: str, choices: tuple[str, ...], default: str | None = None) -> str | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if raw not in choices:
        raise APIError(
            422,
            "validation_error",
            f"query.{name}: must be one of {', '.join(choices)}",
            field=f"query.{name}",
        )
    return raw


def query_id(request: Request, name: str) -> str | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if not is_valid_id(raw):
        raise APIError(
            422,
            "validation_error",
            f"query.{name}: must be 1-128 of letters, digits, '_', '.', '-' (not '.' or '..')",
            field=f"query.{name}",
        )
    return raw




def query_number(request: Request, name: str, low: float, high: float) -> float | None:
    """A number query parameter from ``low`` to ``high``; None when absent."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw) if len(raw) <= 32 else float("nan")
    except ValueError:
        value = float("nan")
    if not low <= value <= high:  # also NaN
        raise APIError(422, "validation_error", f"query.{name}: expected a number from {low:g} to {high:g}",
                       field=f"query.{name}")
    return value


def query_choices(request: Request, name: str, choices: tuple[str, ...]) -> list[str] | None:
    """A repeatable query parameter (``?status=a&status=b``), each value one of ``choices``;
    None when absent."""
    raw = [value for value in request.query_params.getlist(name) if value != ""]
    if not raw:
        return None
    for value in raw:
        if value not in choices:
            raise APIError(422, "validation_error", f"query.{name}: each must be one of {', '.join(choices)}",
                           field=f"query.{name}")
    return raw

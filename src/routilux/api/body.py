"""Reading requests: bodies with a size cap, decoded into Structs; ids and query parameters.

A body larger than the limit is refused with 413 from its ``Content-Length`` alone, or as soon as
a streamed body passes it — never after reading it whole. Malformed JSON is 400; JSON of the
wrong shape is 422 with the path of the offending field (``body.entry.routine_id``).
"""

from __future__ import annotations

from typing import TypeVar

import msgspec
from starlette.requests import Request

from routilux.api.errors import APIError
from routilux.engine.flow import is_valid_id, is_valid_routine_id
from routilux.engine.validation import validation_problem

T = TypeVar("T")


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
    return b"".join(chunks)


def _too_large(limit: int) -> APIError:
    return APIError(413, "payload_too_large", f"the request body is larger than {limit} bytes", limit=limit)


def decode(body: bytes, type_: type[T], *, required: bool = True) -> T:
    """Decode ``body`` as ``type_``; an empty body is ``{}`` unless a body is required."""
    if not body.strip():
        if required:
            raise APIError(400, "invalid_json", "the request body is empty; a JSON object is expected")
        body = b"{}"
    try:
        return msgspec.json.decode(body, type=type_)
    except msgspec.ValidationError as exc:
        problem = validation_problem(exc, "body", type_)
        raise APIError(
            422, "validation_error", f"{problem.location}: {problem.message}", field=problem.location
        ) from None
    except msgspec.DecodeError as exc:
        raise APIError(400, "invalid_json", f"the request body is not valid JSON: {exc}") from None


async def read_json(request: Request, type_: type[T], *, required: bool = True) -> T:
    settings = request.app.state.settings
    return decode(await read_body(request, settings.max_body_bytes), type_, required=required)


def path_id(request: Request, name: str, *, routine: bool = False) -> str:
    """A path parameter that must be a valid id: ``^[A-Za-z0-9_.-]{1,128}$``, or without the
    dot for a routine id (``routine.event`` splits on it)."""
    value: str = request.path_params[name]
    valid, allowed = (is_valid_routine_id(value), "'_', '-'") if routine else (is_valid_id(value), "'_', '.', '-'")
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
    try:
        value = int(raw)
    except ValueError:
        raise APIError(422, "validation_error", f"query.{name}: expected a whole number", field=f"query.{name}") from None
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
            422, "validation_error", f"query.{name}: must be 1-128 of letters, digits, '_', '.', '-'", field=f"query.{name}"
        )
    return raw



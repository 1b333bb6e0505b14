"""JSON responses encoded by msgspec (Structs, datetimes with ``Z``, and pre-encoded Raw)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from starlette.responses import Response

_encoder = msgspec.json.Encoder(enc_hook=repr)


def encode(content: Any) -> bytes:
    return _encoder.encode(content)


def json_response(content: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """A JSON response whose body is encoded once, by msgspec."""
    return Response(encode(content), status_code=status, headers=headers, media_type="application/json")

"""The root of every error Routilux raises on purpose.

Every package (engine, store, cluster, server, api) may import this module and nothing else of
its own to raise errors: it sits below every layer, so an error type never drags a layer in.
``code`` is the stable snake_case name an API body carries; ``context`` the details a caller needs
to explain the error without parsing its message.
"""

from __future__ import annotations

from typing import Any


class RoutiluxError(Exception):
    """Base of all Routilux errors. ``code`` is the stable snake_case name used in API bodies."""

    code = "routilux_error"

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context = context

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.context}

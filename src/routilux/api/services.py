"""How the edge reaches the control plane: the :class:`~routilux.server.services.Services` the
lifespan built, kept on the application's state."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from routilux.server.services import Services


def services(connection: HTTPConnection) -> Services:
    """The services of the application serving ``connection`` (a request or a WebSocket)."""
    found: Services = connection.app.state.services
    return found

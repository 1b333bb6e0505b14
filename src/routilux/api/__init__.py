"""The HTTP API (Starlette): ``create_app(settings)`` builds it."""

from routilux.api.app import create_app
from routilux.server.settings import Settings, SettingsError

__all__ = ["Settings", "SettingsError", "create_app"]

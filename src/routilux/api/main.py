"""Run the server: ``python -m routilux.api.main``; ``routilux.api.main:app`` for gunicorn/uvicorn.

Settings come from the environment (see :mod:`routilux.api.settings`); a bad value stops the
process with a message naming the variable before anything starts.
"""

from __future__ import annotations

import logging
import sys

import uvicorn
from starlette.applications import Starlette

from routilux.api.app import create_app
from routilux.api.settings import Settings, SettingsError


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        sys.exit(f"routilux: bad configuration: {exc}")


def _app() -> Starlette:
    return create_app(_settings())


app = _app()


def main() -> None:
    settings = _settings()
    logging.basicConfig(level=settings.log_level.upper() if settings.log_level != "trace" else "DEBUG")
    uvicorn.run(
        "routilux.api.main:app" if settings.reload else app,
        host=settings.host,
        port=settings.port,
        reload=settings.reload,
        log_level=settings.log_level,
        lifespan="on",
    )


if __name__ == "__main__":
    main()

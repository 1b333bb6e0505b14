"""Run the server: ``python -m routilux.api.main``; ``routilux.api.main:app`` for gunicorn/uvicorn.

Settings come from the environment (see :mod:`routilux.server.settings`); a bad value stops the
process with a message naming the variable before anything starts.
"""

from __future__ import annotations

import logging
import math
import socket
import sys
import time
from typing import Final

import anyio
import uvicorn
from starlette.applications import Starlette

from routilux.api.app import create_app
from routilux.api.transport import uvicorn_options
from routilux.server.settings import Settings, SettingsError

#: How long a server whose application lost a part goes on answering (``/api/health/live``: 503)
#: before it stops and exits with status 1.
DEAD_PART_GRACE_SECONDS: Final = 1.0


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        sys.exit(f"routilux: bad configuration: {exc}")


def _app() -> Starlette:
    return create_app(_settings())


app = _app()
#: The HTTP protocol with this process's socket limits, named by its import path for uvicorn's
#: reloader: its child process imports this module (and so the settings) again, where a class made
#: for the settings could not be sent to it.
HTTPProtocol = uvicorn_options(app.state.settings)["http"]


class Server(uvicorn.Server):
    """uvicorn's server, telling the application first that it stops (no new job; every ``/wait``
    answers at once, so no long poll holds the stop up), then closing every WebSocket with 1001
    (going away) before it shuts down. Requests still in flight after ``ROUTILUX_SHUTDOWN_SECONDS``
    (``--graceful-timeout`` under gunicorn) are cut off.

    Left alone, uvicorn closes open sockets with 1012 (service restart) before the application
    hears of the shutdown; dashboards should be told the server is going away instead.
    """

    _exit_at: float | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's start-up; then the application may ask this server to stop (a part of it
        died: :func:`routilux.api.app.part_died`)."""
        await super().startup(sockets)
        state = getattr(self._served_app(), "state", None)
        if state is not None:
            state.request_exit = self.request_exit

    def request_exit(self) -> None:
        """Stop serving, as on SIGTERM (graceful: requests in flight finish), after
        ``DEAD_PART_GRACE_SECONDS``: the application already answers ``/api/health/live`` with
        503, and a load balancer probing it should get to see that before the port closes."""
        self._exit_at = time.monotonic() + DEAD_PART_GRACE_SECONDS

    async def on_tick(self, counter: int) -> bool:
        """uvicorn's tick (every 0.1 s), which also stops the server once :meth:`request_exit`'s
        grace has passed."""
        if self._exit_at is not None and time.monotonic() >= self._exit_at:
            return True
        return await super().on_tick(counter)

    @property
    def failed(self) -> bool:
        """Whether the application stopped because a part of it died (exit with status 1)."""
        return bool(getattr(getattr(self._served_app(), "state", None), "failed", False))

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Accept nothing more first: under gunicorn the workers share one listening socket, so
        # new connections go to the workers that stay, rather than to this one's "shutting down".
        for server in self.servers:
            server.close()
        state = getattr(self._served_app(), "state", None)
        services = getattr(state, "services", None)
        if services is not None:  # no new job, and long polls answer now, before connections drain
            services.stop_taking_work()
        sessions = getattr(state, "sessions", None)
        if sessions is not None:
            with anyio.move_on_after(5):
                await sessions.close_all()
        await super().shutdown(sockets)

    def _served_app(self) -> object:
        """The application this server runs (any Routilux app, not only this module's), found
        under the ASGI wrappers uvicorn may have put around it."""
        served = self.config.loaded_app if self.config.loaded else self.config.app
        for _ in range(10):
            if hasattr(served, "state") or not hasattr(served, "app"):
                break
            served = served.app
        return served


def main() -> None:
    settings = _settings()
    logging.basicConfig(level=settings.log_level.upper() if settings.log_level != "trace" else "DEBUG")
    if settings.reload:  # development: uvicorn's reloader runs the app in a child process
        options = {**uvicorn_options(settings), "http": "routilux.api.main:HTTPProtocol"}
        uvicorn.run("routilux.api.main:app", host=settings.host, port=settings.port, reload=True,
                    log_level=settings.log_level, lifespan="on", **options)
        return
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level, lifespan="on",
                            timeout_graceful_shutdown=math.ceil(settings.shutdown_seconds),
                            **uvicorn_options(settings))  # the socket limits, WebSocket protocol, no proxy trust
    server = Server(config)
    server.run()
    if server.failed:
        sys.exit(1)


if __name__ == "__main__":
    main()

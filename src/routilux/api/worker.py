"""The gunicorn worker for production: ``gunicorn -w 1 -k routilux.api.worker.UvicornWorker
routilux.api.main:app``.

uvicorn's stock worker serves the app the way ``python -m routilux.api.main`` does not, in four
ways that matter; this subclass puts them back:

* The limits at the socket (:mod:`routilux.api.transport`): head size and time, body rate, the
  connection cap, and the WebSocket message size (``ws_max_size``), from the settings of the app
  the worker loaded. gunicorn's own ``--limit-request-*`` options do not apply to uvicorn workers;
  the ``ROUTILUX_*`` settings do.
* WebSockets use :class:`~routilux.api.ws.protocol.BatchingWebSocketProtocol`, which writes a
  socket's queued frames with one system call (the stock worker picks uvicorn's default protocol,
  and the app falls back to one ASGI message per frame — correct, but much slower when one job
  fans out to many sockets).
* ``proxy_headers=False``. uvicorn otherwise believes ``X-Forwarded-For`` from the addresses in
  gunicorn's ``forwarded_allow_ips`` (127.0.0.1 by default), so any local process — or a proxy
  that merely appends to a header its client sent — could choose the client IP that rate
  limiting counts. The app decides itself, trusting only ``ROUTILUX_TRUSTED_PROXIES``.
* A worker whose application lost a part (:func:`routilux.api.app.part_died`) stops and exits
  with status 1, and the arbiter starts a new one, instead of serving on half-dead.
* Shutdown closes every WebSocket with 1001 (going away), as the API promises, through
  :class:`routilux.api.main.Server`; the stock server closes them with 1012 before the app hears
  of the shutdown.
* Requests still in flight when the worker stops are cut off after ``ROUTILUX_SHUTDOWN_SECONDS``
  (uvicorn's ``timeout_graceful_shutdown``), as under ``python -m routilux.api.main``. The stock
  worker sets none, so uvicorn waits for them without end, the app's lifespan (where a cluster
  node drains its jobs) starts only after them, and on ``kill -TTOU``/``-HUP`` nothing but
  gunicorn's ``timeout`` would end the wait (see ``deploy/gunicorn.conf.py``).

``-w 1``: one process per store (see :mod:`routilux.store.single_process`); a second worker
refuses to start, and gunicorn then stops with that worker's message rather than serving wrong
answers.

``uvicorn.workers`` is deprecated in favour of the ``uvicorn-worker`` package; it still ships
with uvicorn, and this class only depends on its ``config`` (loaded only when the server starts,
so options set on it before then win over gunicorn's settings) and its ``_serve`` method.
"""

from __future__ import annotations

import math
import sys
import warnings

from gunicorn.arbiter import Arbiter

from routilux.api.transport import uvicorn_options
from routilux.server.settings import Settings

with warnings.catch_warnings():  # the deprecation is about the module's future home, noted above
    warnings.simplefilter("ignore", DeprecationWarning)
    from uvicorn.workers import UvicornWorker as _StockWorker


class UvicornWorker(_StockWorker):
    """uvicorn's gunicorn worker with Routilux's limits at the socket, WebSocket protocol, no
    proxy-header trust and 1001 on shutdown (see the module docstring)."""

    def use_routilux_options(self) -> None:
        """Set :func:`~routilux.api.transport.uvicorn_options` for the served app's settings on
        the uvicorn config, which loads them when the server starts."""
        settings = _served_settings(self.wsgi)
        options = {**uvicorn_options(settings), "timeout_graceful_shutdown": math.ceil(settings.shutdown_seconds)}
        for name, value in options.items():
            if not hasattr(self.config, name):  # a uvicorn that renamed it would silently drop a limit
                raise RuntimeError(f"uvicorn.Config has no option {name!r}")
            setattr(self.config, name, value)

    async def _serve(self) -> None:
        # The stock method with Routilux's options and routilux.api.main.Server in place of
        # uvicorn's. Imported here, in the worker: the worker has loaded the app (and so that
        # module) already, and importing it in the arbiter would build an app there for nothing.
        from routilux.api.main import Server

        self.use_routilux_options()
        self.config.app = self.wsgi
        server = Server(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
        if server.failed:  # a part of the app died: the arbiter starts a new worker
            sys.exit(1)


def _served_settings(app: object) -> Settings:
    """The settings of the Routilux app the worker serves (``routilux.api.main:app`` read them from
    the environment), or the environment's for any other app."""
    settings = getattr(getattr(app, "state", None), "settings", None)
    return settings if isinstance(settings, Settings) else Settings.from_env()

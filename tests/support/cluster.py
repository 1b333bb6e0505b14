"""The "cluster" test deployment: several server processes acting as one, as issue 9 promises.

    client --HTTP/WS--> nginx (deploy/nginx.conf) --> gunicorn -w 4 -k routilux.api.worker.UvicornWorker
                                                          every worker: ROUTILUX_REDIS_URL --> redis-server

- ``redis-server``: fresh, loopback, no persistence (``tests/support/redis_server.py``'s ``RedisServer``).
- ``gunicorn -w 4 -k routilux.api.worker.UvicornWorker --reuse-port`` on a loopback port, every
  worker a cluster node on that Redis (shared store, event relay, job ownership, forwarding),
  trusting nginx (``ROUTILUX_TRUSTED_PROXIES=127.0.0.1``), with the environment the API tests'
  own server gets. ``--reuse-port``: each worker listens on its own ``SO_REUSEPORT`` socket and
  the kernel spreads new connections over them by address hash. Without it the workers share
  one socket, and whichever worker is awake accepts a whole burst (measured: 12 sockets opened
  at once, all on one worker), so which paths a test exercises would depend on timing.
- a real nginx running ``deploy/nginx.conf``, rendered by :func:`tests.support.nginx.render` with
  ``tls=False`` (the proxied server block listens on a plain-HTTP loopback port, because the API
  tests' clients speak ``http://`` and ``ws://``) and ``upstream_keepalive=False``; every proxy and
  WebSocket directive is the file's.

Without nginx's pool of idle upstream connections every request is a new connection, and with
``--reuse-port`` each new connection goes to one of the four workers at random: a job's owner
answers about one request in four, so the suites exercise what a cluster must get right: the
shared store, forwarding to a job's owner, the event relay. (With the pool, a client's sequential
requests keep reusing one upstream connection, i.e. one worker — see ``render``.)

:class:`ClusterDeployment` offers what the tests use of :class:`tests.support.servers.ServerProcess` (``url``,
``port``, ``api_key``, ``process``, ``log_path``, ``output()``, ``start()``, ``stop()``).
``tests/support/servers.py``'s :func:`start_deployment` picks it when ``ROUTILUX_TEST_DEPLOYMENT=cluster``.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any, Final

import httpx

from tests.support.nginx import Nginx, self_signed_cert, tool
from tests.support.redis_server import RedisServer
from tests.support.servers import ServerProcess, gunicorn_argv, stop_all

WORKERS: Final = 4
WORKER_CLASS: Final = "routilux.api.worker.UvicornWorker"


class ClusterDeployment:
    """redis-server + ``gunicorn -w 4`` (cluster nodes on it) + nginx in front, in ``directory``.

    ``env`` goes to every worker, as :class:`ServerProcess` passes it to its process.
    """

    def __init__(self, directory: Path, *, api_key: str | None = None, workers: int = WORKERS, **env: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.api_key = api_key
        self.redis = RedisServer(self._mkdir("redis"))
        self.app = ServerProcess(
            directory / "routilux.db",  # unused by the workers (their store is Redis); keeps the log beside it
            api_key=api_key,
            argv=gunicorn_argv(workers, WORKER_CLASS, "--reuse-port"),
            ROUTILUX_TRUSTED_PROXIES="127.0.0.1",
            **env,
            ROUTILUX_REDIS_URL=self.redis.url,
        )
        self.nginx = Nginx(tool("nginx", "nginx"), directory / "nginx", self.app.port,
                           self_signed_cert(self._mkdir("tls")), tls=False, upstream_keepalive=False)
        self.url = self.nginx.url  # http://127.0.0.1:<nginx's port>
        self.port = self.nginx.https_port

    def _mkdir(self, name: str) -> Path:
        path = self.directory / name
        path.mkdir(exist_ok=True)
        return path

    # -- what tests use of ServerProcess --------------------------------------------------------
    @property
    def process(self) -> Any:
        """gunicorn's arbiter (``poll()`` is None while the deployment serves)."""
        return self.app.process

    @property
    def log_path(self) -> Path | None:
        return self.app.log_path

    def output(self) -> str:
        """gunicorn's output: the arbiter's and every worker's log lines."""
        return self.app.output()

    def start(self, timeout: float = 60.0) -> ClusterDeployment:
        try:
            self.redis.start()
            self.app.start(timeout=timeout)
            self.nginx.start()
            self._wait_through_nginx(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_through_nginx(self, timeout: float) -> None:
        headers = {"X-API-Key": self.api_key} if self.api_key else {}
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                last = httpx.get(self.url + "/api/health", headers=headers, timeout=2)
                if last.status_code == 200:
                    return
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(0.05)
        raise RuntimeError(f"the deployment did not answer through nginx within {timeout}s ({last!r}):\n"
                           f"{self.nginx.errors()}\n{self.output()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Stop nginx, gunicorn (any worker left behind is killed) and redis-server; gunicorn's
        exit code."""
        try:
            self.nginx.stop()
        finally:
            try:
                code = stop_all(self.app, sig, timeout)
            finally:
                self.redis.stop()
        return code

"""gunicorn settings for a Routilux cluster: several workers, each a cluster node on one Redis.

    ROUTILUX_REDIS_URL=redis://127.0.0.1:6379/0 \\
    gunicorn -c deploy/gunicorn.conf.py --bind 127.0.0.1:20555 routilux.api.main:app

Only for a cluster (``ROUTILUX_REDIS_URL``): on SQLite run one worker (``-w 1``, the Dockerfile's
command). Options given on the command line win over these. ``tests/deploy/test_rolling_deploy.py``
runs this very file, behind ``deploy/nginx.conf``, through the rolling restart the README describes.

Why each setting:

* ``workers`` — ``WEB_CONCURRENCY`` (gunicorn's own variable), 4 by default.
* no ``reuse_port`` — the workers share the master's listening socket, so a connection waiting in
  its accept queue is taken by whichever worker is left. With ``SO_REUSEPORT`` every worker has its
  own queue, and the connections queued at a worker that stops are reset: errors during a rolling
  restart.
* ``graceful_timeout`` — what a stopping worker gets, from the master, before SIGKILL (on a
  master's SIGTERM or SIGINT, and as uvicorn's ``timeout_graceful_shutdown``: requests still in
  flight after it are cut). A worker stops in two steps: it lets its requests in flight finish
  (no new job; every ``/wait`` long poll answers at once), then its lifespan shuts down, where it
  drains: checkpoints its live jobs and hands them to the other workers, within
  ``ROUTILUX_SHUTDOWN_SECONDS``. So it is that plus room for the requests: 20 s more.
* ``timeout`` — the master kills a worker whose heartbeat is older than this. A uvicorn worker
  beats every ``timeout / 2`` while it serves and not at all once it stops, so a stopping worker
  has at least ``timeout / 2`` before the master kills it (on ``kill -TTOU``, ``kill -HUP`` and
  ``max_requests``, which stop a worker without the master's own ``graceful_timeout`` deadline);
  twice the whole stop keeps a drain from being killed halfway. The price: a worker whose event
  loop hangs is killed only after ``timeout``.
"""

from __future__ import annotations

import math
import os

_shutdown_seconds = float(os.environ.get("ROUTILUX_SHUTDOWN_SECONDS", "10"))

worker_class = "routilux.api.worker.UvicornWorker"
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))
reuse_port = False
graceful_timeout = math.ceil(_shutdown_seconds) + 20
timeout = 2 * (graceful_timeout + math.ceil(_shutdown_seconds))
# Deployments running side by side on one machine must not share gunicorn >= 24's control socket.
control_socket_disable = True
errorlog = "-"

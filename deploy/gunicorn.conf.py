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
* ``graceful_timeout`` — what a stopping worker gets from the master before SIGKILL when the
  master itself stops (SIGTERM, SIGINT). A worker stops in two steps, each bounded by
  ``ROUTILUX_SHUTDOWN_SECONDS`` (S): its requests in flight finish or are cut off (no new job;
  every ``/wait`` long poll answers at once), then its lifespan shuts down, where a cluster node
  drains — checkpoints its live jobs and hands them to the other nodes. So: 2 S and 10 s to spare.
* ``timeout`` — the master kills a worker whose heartbeat is older than this. A uvicorn worker
  beats every ``timeout / 2`` while it serves and not at all once it stops, and ``kill -TTOU``,
  ``kill -HUP`` and ``max_requests`` stop a worker with no deadline but this one: so a stopping
  worker has at least ``timeout / 2``, which must hold its whole stop: twice ``graceful_timeout``.
  The price: a worker whose event loop hangs is killed only after ``timeout``.
"""

from __future__ import annotations

import math
import os

_shutdown_seconds = float(os.environ.get("ROUTILUX_SHUTDOWN_SECONDS", "10"))

worker_class = "routilux.api.worker.UvicornWorker"
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))
reuse_port = False
graceful_timeout = 2 * math.ceil(_shutdown_seconds) + 10
timeout = 2 * graceful_timeout
# Deployments running side by side on one machine must not share gunicorn >= 24's control socket.
control_socket_disable = True
errorlog = "-"

"""What the tests are written with (fixtures stay in the conftest.py files, which import these):

- ``processes``: child processes: free port, wait until ready, stop (and kill what they spawned),
  CPU and RSS; also used by ``bench/`` (see its docstring for the direction of that dependency).
- ``servers``: a real Routilux server process for the API suites, or the cluster deployment.
- ``cluster``: the cluster deployment: redis-server + ``gunicorn -w 4`` + nginx in front.
- ``nginx``: a real nginx running ``deploy/nginx.conf``, and a self-signed certificate.
- ``redis_server``: a real ``redis-server`` on a free loopback port.
- ``rest``: small REST builders of the API tests (flows, jobs, errors, polling).
- ``ws``: WebSocket clients with deadlines, frames, and jobs driven over REST.
- ``spec_check``: every HTTP exchange checked against ``openapi/openapi.yaml``.
- ``routines``: small engine routines (the servers load them: ``tests.support.routines``).
- ``ws_routines``: routines only the WebSocket tests need (``Firehose``).
- ``batch_routines``: a routine that sets its policy from its config.
- ``builtin_flows``: terse flows of builtin routines, run as real jobs.
- ``stores``: every store kind, held open in one owner task, and record builders.
"""

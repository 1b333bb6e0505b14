"""The control plane: everything the server is, without the web.

Settings, the flow catalogue, jobs (found wherever they are), runtimes, the event log, metrics
wiring, retention and the cluster node — composed by :func:`~.lifespan.open_services`. Nothing
here imports starlette, uvicorn or gunicorn (an import contract in ``make test`` checks it): the
HTTP and WebSocket edge is :mod:`routilux.api`, which only translates requests into calls on
these services and their answers and errors into responses.
"""

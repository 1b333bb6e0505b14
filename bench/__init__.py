"""Routilux's benchmarks, one subpackage (or module) per subject, each run from the repository root
with ``python -m`` (``make bench`` runs them all at full size):

    python -m bench.engine          engine throughput and idle jobs (bench/engine/)
    python -m bench.debug_overhead  the debugger's cost with no breakpoint armed (bench/debug_overhead/)
    python -m bench.api             the HTTP API against a bare Starlette app (bench/api/)
    python -m bench.ws              WebSocket fan-out against a bare Starlette app (bench/ws/)
    python -m bench.cluster         1 vs 2 gunicorn workers on Redis, the Redis hop (bench/cluster/)
    python -m bench.soak            10 minutes at 300 jobs/s: latency, memory and the database steady

Shared by all: :mod:`bench.report` (the failure they raise, the one table renderer, the machine's
figures), :mod:`bench.server` (a server under measurement) and, below both, the process helpers
of the test suite, :mod:`tests.support.processes` (free port, waiting for a child, stopping it,
its CPU and RSS). ``bench`` imports ``tests.support``, never the other way round: the tests only
run the benches (``tests/bench``), and the benches always run where ``tests`` is importable.
Children that import bench modules by name (client processes, ``ROUTILUX_ROUTINE_MODULES=
bench.ws_routines``) get the repository root as their ``PYTHONPATH``.
"""

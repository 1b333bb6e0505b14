"""HTTP API benchmark against real uvicorn processes (``make bench``; a bounded run is in ``make test``).

    python -m bench.api [--quick] [--check] [--json FILE] [--profile]
                          [--jobs N] [--duration S] [--list-duration S] [--connections N]
                          [--rounds N] [--quiet-wait S] [--routilux-http PROTOCOL]

Two servers (three for row 4) run side by side on 127.0.0.1, each one uvicorn process with one worker, started as
``python -m uvicorn APP --http HTTP --loop uvloop --log-level warning --no-access-log``:

- the baseline, ``bench.bare_app:app``: one Starlette route answering a constant dict shaped like
  a job view with ``JSONResponse`` (no middleware, no lookups), on ``--http httptools``;
- Routilux, ``routilux.api.main:app``, on a fresh SQLite file in a temporary folder, on its own
  protocol with the limits at the socket (``routilux.api.transport``: httptools plus head-size,
  timeout and connection checks), as ``python -m routilux.api.main`` serves it;
  ``--routilux-http httptools`` measures it on plain httptools instead.

The load generator (the same for both) runs in this process: an asyncio client on uvloop that
opens N keep-alive HTTP/1.1 connections (default 32), each sending one request, waiting for the
whole response and sending the next (no pipelining), for a fixed time or a fixed request count.
It records each request's latency (send to last byte) and status. Any non-2xx answer or broken
connection makes the run fail loudly (:class:`BenchFailure`). The table also shows the CPU each
side used, as a fraction of one core: the machine has 2 cores shared by server and client, and
a server at ~100% while the client is well below it means the server is the bottleneck.

Rows, in order (``×bare`` is the row's req/s divided by the bare endpoint's, same run; see
rows 1-3 for how):

1. ``bare Starlette GET /job``: the baseline.
2. ``GET /api/jobs/{id} (live job)``: a job held in memory (idle, started without
   ``complete_when_idle``). Target: >= 50% of the baseline's req/s.
3. ``GET /api/flows``: 10 stored flows (9 of five routines, the posted one of two); informational.
4. ``GET /api/jobs/{id} (live job), API key + rate limit on``: the same request to a third server,
   Routilux with ``ROUTILUX_API_KEY_ENABLED=true`` and ``ROUTILUX_RATE_LIMIT_ENABLED=true`` (limit
   1,000,000 a minute, so nothing is refused but every request is counted), sending the key.
   Target: >= 70% of row 2's req/s (its ``×open`` column; ``×bare`` as for the others).
   Rows 1-4 are measured ``--rounds`` times (default 5, 3 s each), interleaved; each row shows its
   median round, and its ratios are the medians of the per-round ratios (measured back to back),
   which cancels the slow drifts in speed a shared VM has.
5. ``POST /api/jobs``: ``--jobs`` jobs (default 10,000) of a two-routine flow (Mapper -> DataSink)
   with ``complete_when_idle: true`` and one entry item, so each job runs, goes idle and
   completes. Target: >= 1,000 jobs/s (201 responses per second).
6. ``POST /api/jobs, completed + history written``: informational — jobs/s from the first POST
   until the store lists every one of them as completed *and* has written all their events (the
   jobs finish and their history is written after the 201, so this is the sustained rate; the
   JSON has the time to "all completed" too). No job may fail or be cancelled.
7. ``GET /api/jobs?limit=100``: with every posted job stored (>= 10,000), one connection sending
   requests back to back for 10 s: the latency a client sees. Target: p99 <= 20 ms.
8. ``GET /api/jobs/{id} (stored job)``: informational — 500 of the oldest posted jobs, cycled;
   they left memory (the recorder keeps the last 1,000 finished jobs) and are read from SQLite.

The machine may be shared (other people's tests and benchmarks): before each measurement the
bench waits up to ``--quiet-wait`` seconds (default 30) for an idle machine, and measures again, up
to 3 times, when other processes took more than 15% of a core meanwhile (a repeated POST row posts
``--jobs`` more jobs, so the list row then has more stored jobs than asked). The ``other CPU``
column shows what was left; ``--quick`` turns this off.

``--check`` makes a missed target exit 1. ``--profile`` (automatic when a target is missed)
also runs the GET-job and POST scenarios against a server under cProfile and prints the top
functions of its event-loop thread.
"""


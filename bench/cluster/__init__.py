"""Cluster benchmark: several Routilux processes on one Redis (``ROUTILUX_REDIS_URL``) against one
plain server, on this machine (``make bench``; a bounded run is in ``make test``).

    python -m bench.cluster [--quick] [--check] [--json FILE] [--only post,fanout,hop]
                            [--jobs N] [--connections N] [--clients N] [--rate R] [--seconds S]
                            [--capacity-rate R] [--capacity-seconds S] [--hop-rate R] [--hop-seconds S]
                            [--hop-capacity-rate R] [--hop-capacity-seconds S] [--client-procs K]
                            [--quiet-wait S]

What the issue asks: "job-start throughput and event fan-out with 1 vs 2 workers on this 2-core
machine, and the cost of the Redis hop per event (latency added, measured in the same run)".

One ``redis-server`` (``/usr/bin/redis-server --save "" --appendonly no`` on a free loopback
port) serves every scenario, each on a database of its own emptied (FLUSHDB) before its servers
start; it is stopped at the end. The Routilux servers under test, each on a free loopback port:

- *plain*: ``python -m uvicorn routilux.api.main:app`` with ``python -m bench.api``'s flags (httptools,
  uvloop, no access log), one process on a fresh SQLite file, no Redis: the baseline;
- *gunicorn -w N*: ``python -m gunicorn -w N -k routilux.api.worker.UvicornWorker --bind
  127.0.0.1:PORT routilux.api.main:app`` (``--no-control-socket`` on gunicorn >= 24) with
  ``ROUTILUX_REDIS_URL``: every worker is a cluster node (shared store in Redis, job events in one
  Redis stream per job, jobs owned by the worker that started them, requests about a job
  forwarded to its owner over Pub/Sub). The workers share gunicorn's listening socket, so the
  kernel/event loops decide which worker accepts a connection: the table shows where the
  connections landed (``placement``). Ready once every worker has joined the cluster (its node in
  Redis) and logged its start-up;
- *A* and *B*: two ``python -m routilux.api.main`` processes with ``ROUTILUX_REDIS_URL`` on one
  Redis database (the hop scenario).

Every server loads ``bench/ws_routines.py`` (``ROUTILUX_ROUTINE_MODULES=bench.ws_routines``). Any
non-2xx answer, broken connection, lost, duplicated or reordered event, failed job, dead worker
or ``Traceback``/``ERROR``/``CRITICAL`` line in a server's log fails the run
(:class:`BenchFailure`). CPU columns are fractions of one core over the measurement: the servers
(gunicorn's arbiter and workers), ``redis-server``, the client processes, and everything else on
the machine (``other``; the 2 cores are shared). Before each measurement the bench waits up to
``--quiet-wait`` s (default 30) for an idle machine and measures again (up to 3 times) when other
work took more than 15% of a core meanwhile (``--quick`` turns this off).

Rows, table 1 — job-start throughput (``POST /api/jobs``, ``bench.api``'s load generator and
request: 32 keep-alive connections, one request in flight on each, ``--jobs`` (10,000) jobs of the
two-routine flow ``bench_post`` with ``complete_when_idle: true`` and one entry item; every
server seeded alike with ``bench.api``'s ten flows and one idle job):

1. ``plain``: the single SQLite process. The baseline of ``×plain``.
2. ``gunicorn -w 1 + Redis``: the same load on one cluster node.
3. ``gunicorn -w 2 + Redis``: on two. ``×plain`` = jobs/s (201 answers per second) / row 1's.
   The workers race for each new connection on gunicorn's shared socket and the split is often
   lopsided (anything from 16/16 to 31/1, now and then 0/32): unless each worker holds at least 8,
   the bench closes the connections and opens them again (up to 10 times) before posting, so that
   the row measures both workers (``placement``; the JSON says how often it reopened).
   ``completed`` is the sustained rate: jobs / time from the first POST until ``GET
   /api/jobs?status=completed`` counts them all (through the server's port, i.e. any worker; then
   confirmed by 8 fresh connections and, in the cluster, by the Redis index itself). No job may
   fail or be cancelled. Informational: there is no target.

Table 2 — event fan-out: ``--clients`` (50) WebSocket clients on ``/api/ws/jobs/{id}/monitor`` of
one job whose ``WsTicker`` (``bench/ws_routines.py``) publishes ``log`` events at a steady pace,
through gunicorn's port, with ``bench.ws``'s client (its own RFC 6455 client, in a separate
process; connections opened 5 at a time so that both workers get some). The job runs on the worker
that took its ``POST``; the clients on the other worker get its events through Redis (``owner/other``
column: the clients each worker holds). Per client: every event once, in order (seq holes and
``gap`` frames are loss), publish -> receipt latency (``time.time()`` in the event vs at receipt,
same machine); deliveries/s = events received by all clients / (first publish -> last receipt).
*Loss must be 0* in every row, or the run fails (after all rows are measured; the message
carries the table). Each row on a fresh gunicorn and Redis database.

4. ``R ev/s x K, gunicorn -w 1``: ``--rate`` (1,000) events/s for ``--seconds`` (10): the baseline
   of ``×1w``.
5. the same, ``gunicorn -w 2``: ``×1w p99`` = p99 / row 4's, ``×1w deliv/s`` = deliveries/s / row
   4's (about 1.00 while both keep up with the pace). Informational.
6. ``capacity: R ev/s offered x K, gunicorn -w 1`` (full runs): ``--capacity-rate`` (4,000) events/s
   for ``--capacity-seconds`` (4), more than one process delivers: deliveries/s is what the
   server achieves (latency grows with the backlog).
7. the same, ``gunicorn -w 2``: ``×1w deliv/s`` is the capacity gained by the second worker.

Table 3 — the Redis hop: processes A and B on one Redis (fresh for each row); a job on A
publishing paced events; one WebSocket client on A (local delivery: A's bus to the socket) and
one on B (A's store appends each event to the job's Redis stream, B's bridge reads it with XREAD
and publishes it on B's bus), both in this process on one event loop. For every event both must
see, with the same seq, the bench takes its arrival time on each (``perf_counter``, same process)
and reports B - A: the latency the hop adds (p50, p99, max); B's received events/s (first to last
arrival); each side's publish -> receipt p50; and the CPU per event of A (the owner: ticker, bus,
Redis writes), B (the relay) and redis-server (``µs/ev``: CPU during the stream / events; at low
rates each event pays for its own wake-ups, so it falls as the rate rises).

After the stream, while the job still runs, 300 ``GET /api/jobs/{id}`` go alternately to A (the
owner answers) and to B (which forwards the request to A over Redis Pub/Sub and relays A's
answer), one request at a time: ``GET job A/B->A`` is their p50, the cost of job ownership's
forwarding round trip.

8. ``R ev/s x S s, A and B``: ``--hop-rate`` (500) events/s for ``--hop-seconds`` (5).
   Informational; the figure to watch is the p50 added latency.
9. the same at ``--hop-capacity-rate`` (5,000) for ``--hop-capacity-seconds`` (3) (full runs):
   the relay under load, and Redis' CPU per event, which bounds how many events one Redis serves.

``--check`` makes a missed target exit 1 (the rows here are informational: only a failed
correctness check, which raises anyway, makes one).
"""


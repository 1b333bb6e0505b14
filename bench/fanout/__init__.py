"""Fan-out bench: one burst to many WebSocket subscribers, half of which never read (``make bench``;
a bounded version is ``tests/api/ws/test_ws_fanout.py``).

    python -m bench.fanout [--quick] [--check] [--json FILE] [--readers N] [--sleepers N]
                           [--events N] [--only burst,sleepers]

One Routilux server (``python -m routilux.api.main``, uvicorn, uvloop) on 127.0.0.1 with the
``WsTicker`` routine of ``bench/ws_routines.py``; clients in two child processes
(:mod:`bench.fanout.client`, a minimal RFC 6455 client), all on ``/api/ws/jobs/{id}/monitor``.

Rows:

1. ``burst``: ``--readers`` (500) sockets that read all along and ``--sleepers`` (500) that stop
   reading once they have their snapshot; then the job publishes ``--events`` (10,000) ``log``
   events as fast as it can (one activation, no pause). Meanwhile the parent sends ``GET
   /api/health`` and ``GET /api/health/live`` one after another (a 10 ms pause between rounds)
   and samples the server's RSS. Health reads the store (a worker thread, which needs the GIL
   from a busy event loop); live answers from the loop alone, and is shown beside it.
   The job is completed once it is idle; the readers stop at its ``job_end``; the sleepers read
   again when the readers are done or 5 s after the job is (uvicorn's own keepalive would close
   them otherwise), to their ``job_end`` or to the server's close. Targets:

   - ``GET /api/health`` p99 <= 250 ms from the trigger until every reader has its ``job_end``;
   - the job is idle again (all 10,000 events published) <= 1 s after the trigger;
   - server RSS grows <= 200 MB (peak during the run minus before the sockets were opened);
   - every socket's stream is consistent (:mod:`bench.fanout.client`): each event once, in order,
     every missing seq named by one gap frame in its place; and every socket reaches ``job_end``
     (or is closed by the server with 1013, which is reported).

2. ``sleepers``: ``--sleepers`` never-reading sockets alone, on a fresh server that has already
   run the same burst once with no socket (so what the job itself costs — its events in memory,
   the store's buffers — is not counted per socket), and the same burst: the server's RSS growth
   per socket, from before they were opened until the burst is over (the socket, its tasks and
   buffers, and its share of the job's feed). Target <= 100 KB per socket.

``--check`` makes a missed target exit 1.
"""

"""WebSocket fan-out benchmark against real uvicorn processes (``make bench``; a bounded run is
in ``make test``).

    python -m bench.ws [--quick] [--check] [--json FILE] [--profile] [--only paced,target,capacity,idle]
                       [--clients N] [--rate R] [--seconds S] [--capacity-rate R]
                       [--capacity-seconds S] [--idle N] [--client-procs K] [--client raw|websockets]

Two servers run side by side on 127.0.0.1, each one uvicorn process (uvloop, httptools):

- Routilux, ``python -m routilux.api.main``, on a fresh SQLite file, with the paced source
  routine of ``bench/ws_routines.py`` loaded (``ROUTILUX_ROUTINE_MODULES=bench.ws_routines``); as
  shipped, that runs uvicorn with ``routilux.api.ws.protocol.BatchingWebSocketProtocol``, which
  writes all the frames a socket has queued with one system call;
- the baseline, a bare Starlette app on uvicorn's stock ``websockets-sansio`` protocol, one ASGI
  message and one system call per frame (``python -m bench.ws --serve-bare``, :mod:`bench.ws.bare`): one
  ``/ws`` route whose connections each get an unbounded queue and a sender task, and a ``POST
  /start`` that runs the same paced loop as the routine, encoding each frame once (same JSON shape
  and size as a Routilux ``log`` event) and queueing it on every connection. Nothing else: no
  bus, no bounded queues, no gap bookkeeping, no store. The ratio to it is Routilux's overhead.

The source publishes ``log`` events (exactly one bus event each) at a fixed rate; every event
carries its publish time (``time.time()``) and index in ``data.fields``. Clients run in separate
processes (``--client-procs``), are all connected and have their ``snapshot`` before the source
starts, and record for every event the publish -> receipt latency (same machine, same clock),
the ``seq`` continuity (a hole is a lost event; ``gap`` frames name losses too) and the order of
the source's indexes. *Loss* is the number of source events a client never received, summed over
clients. A client stops at the source's last event; or, once the source should be done, after 5 s
without a frame; or 2 x duration + 10 s after the start (the bare baseline's queues are unbounded,
so its "loss" is what was still queued then). A *delivery* is one source event received by one
client. ``srv µs/deliv`` is the server's CPU time (all threads, source included) per delivery,
which time spent waiting for a core on a shared machine does not inflate, unlike latency. The
details under the table also give the longest silence any one socket saw while streaming.

The client is a minimal asyncio WebSocket client (RFC 6455 handshake and framing, no
extensions) parsing frames in ``data_received`` and decoding each with msgspec: about 4 µs of
Python per frame (about 12 µs with the socket reads and the loop when few frames come per read),
where the ``websockets`` library client costs about 30 µs (measured on this machine), which would
make one client process, not the server, the bottleneck at 100,000 frames/s. ``--client
websockets`` uses the library instead (``compression=None``, to match).

Rows (``×bare`` divides the row's figure by the bare baseline's figure of the same kind, same run):

1. ``paced``: ``--clients`` (100) clients on one job publishing ``--rate`` (1,000) events/s for
   ``--seconds`` (10). Target: p99 <= 100 ms and zero loss. ``×bare`` = p99 / bare p99.
2. ``paced at the capacity target`` (full runs): the same at 20,000 deliveries/s in all (200
   events/s to 100 clients); informational.
3. ``fan-out capacity``: the same clients, the source at ``--capacity-rate`` (5,000) events/s for
   ``--capacity-seconds`` (5): deliveries/s actually achieved, from the first publish to the last
   receipt (loss allowed and reported). Target >= 20,000 deliveries/s. ``×bare`` = ratio of rates.
4. ``idle connections``: server RSS growth for ``--idle`` (1,000) open, quiet connections (the
   generic ``/api/ws`` with no subscription; informational: job monitor sockets on an idle job),
   after a warm-up of 20 connections opened and closed. Clients send ``{"type": "ping"}`` every
   10 s and the server runs with ``ROUTILUX_WS_IDLE_TIMEOUT=600``. Target <= 100 KB per connection.

The table also shows the CPU each side used during a stream as a fraction of one core: the
machine has 2 cores shared by server, clients and anything else running (``other``).

``--check`` makes a missed target exit 1. ``--profile`` (automatic when a streamed target is
missed, except with ``--quick``) runs the paced scenario (and the capacity one if it missed) once
more while ``py-spy`` samples the Routilux server (when py-spy is installed; else cProfile), and
prints its top functions by self and inclusive samples.
"""


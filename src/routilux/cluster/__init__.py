"""Running several Routilux servers as one (``ROUTILUX_REDIS_URL``).

- :mod:`routilux.cluster.redis_events`: every server's job events, shared through Redis Streams
  (live relay to WebSocket sessions and metrics, replay by seq, gaps when a reader fell behind).
- Rate limits shared through ``limits``' Redis storage live with the limiter
  (:class:`routilux.api.ratelimit.SharedRateLimiter`).

Not here yet (issue 9): job ownership with a renewed lease (a dead server's jobs failed with
``interrupted: worker lost``), control requests forwarded to a job's owner, and flows, job
records, runtimes and breakpoints in a shared store. Each should be a module of its own here,
next to the event bridge, and reuse its Redis connection.

Without ``ROUTILUX_REDIS_URL`` nothing here is imported and a server is the single process it
always was.
"""

"""Running several Routilux servers as one (``ROUTILUX_REDIS_URL``): gunicorn workers, machines.

- :mod:`routilux.cluster.redis_events`: every other server's job events, read from the job
  streams the shared store writes, relayed to the local bus (WebSocket sessions, metrics), with
  replay by seq and gaps when a reader fell behind.
- :mod:`routilux.cluster.nodes`: each server's lease, which server owns which job (with an epoch
  that fences off a server that lost it), and the reaper that hands a lost server's durable jobs
  to live servers (:mod:`routilux.server.adoption` resumes them) and fails the others with
  ``interrupted: worker lost``.
- :mod:`routilux.cluster.channel`: requests forwarded to a job's owner and their answers, and
  change notices (flows, runtimes), over Redis Pub/Sub.
- The state itself is in :class:`routilux.store.redis.RedisStore`, every Redis key name in
  :mod:`routilux.store.redis.keys`; rate limits shared through ``limits``' Redis storage live with
  the limiter (:class:`routilux.api.middleware.ratelimit.SharedRateLimiter`).

This package knows nothing of HTTP: :mod:`routilux.server.cluster_node` ties it to the server.
Without ``ROUTILUX_REDIS_URL`` nothing here is imported and a server is the single process it
always was.
"""

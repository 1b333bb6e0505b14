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

**Redis outages** (killed, restarted, frozen, unreachable) are survived, not fatal. Every part
that talks to Redis retries with a capped, jittered backoff (:mod:`routilux.store.backoff`): the
channel subscribes again and resyncs its caches, the bridge resumes each stream from the last id
it read, the lease is renewed (and the node listed again) as soon as Redis answers, and the
reaper waits one lease after Redis' return before judging anyone. The store's writer keeps
records (bounded) and writes them once Redis is back. Meanwhile requests that need Redis answer
503 ``cluster_unavailable`` within 2 s (the clients' timeouts, :mod:`routilux.store.redis.connection`,
found once per outage and then shared: :mod:`routilux.store.redis.reachability`) and jobs running
here go on. What fails for any other reason is restarted
(:mod:`routilux.cluster.supervise`); a part of the server that still dies makes
``/api/health/live`` answer 503 and the process exit with status 1.

This package knows nothing of HTTP: :mod:`routilux.server.cluster_node` ties it to the server.
Without ``ROUTILUX_REDIS_URL`` nothing here is imported and a server is the single process it
always was.
"""

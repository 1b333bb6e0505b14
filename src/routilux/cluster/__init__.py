"""Running several Routilux servers as one (``ROUTILUX_REDIS_URL``).

- :mod:`routilux.cluster.redis_events`: every server's job events, shared through Redis Streams.

Without ``ROUTILUX_REDIS_URL`` nothing here is imported and a server is the single process it
always was.
"""

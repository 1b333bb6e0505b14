"""Connecting to Redis, and naming the server in messages without its password.

Every Routilux client of Redis (the shared store's, a cluster node's) is made here, with
timeouts: a Redis that hangs fails a call instead of holding it (and a store's final flush)
forever. The cluster imports these too (cluster sits above store, never the reverse).
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis

#: Timeouts (seconds) of every client made from a URL. A blocking XREAD blocks for well under
#: the socket timeout.
CONNECT_TIMEOUT: Final = 5.0
SOCKET_TIMEOUT: Final = 30.0
#: How often (seconds) a cluster node's client checks a pooled connection before using it.
HEALTH_CHECK_INTERVAL: Final = 30


def new_client(url: str, **options: Any) -> aioredis.Redis:
    """A client for ``url`` with Routilux's timeouts (not connected yet); ``options`` are
    passed on to ``redis.asyncio.Redis.from_url``."""
    return aioredis.Redis.from_url(
        url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=SOCKET_TIMEOUT, **options
    )


async def connect(url: str) -> aioredis.Redis:
    """A cluster node's client for ``url`` (``redis://host:port/db``), checked with PING so a
    wrong URL fails at start-up rather than on the first event. The health check finds dead
    pooled connections."""
    client = new_client(url, health_check_interval=HEALTH_CHECK_INTERVAL)
    try:
        await client.ping()
    except BaseException:
        await client.aclose()
        raise
    return client


def shown_url(url: str) -> str:
    """``url`` fit for a log line: any password in its authority replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def redacted_url(url: str) -> str:
    """``url`` without its password (in the authority or a ``password=`` query parameter): the
    store's ``location``, in every error it raises."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}@{hostport}" if user else hostport
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k.lower() != "password"])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def client_location(client: aioredis.Redis) -> str:
    """A readable name for the server ``client`` talks to (no password)."""
    kwargs = client.connection_pool.connection_kwargs
    db = kwargs.get("db", 0)
    if "path" in kwargs:
        return f"unix://{kwargs['path']}?db={db}"
    scheme = "rediss" if "ssl" in client.connection_pool.connection_class.__name__.lower() else "redis"
    return f"{scheme}://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{db}"


def client_password(client: aioredis.Redis) -> str | None:
    """The password ``client`` authenticates with, to scrub it from error messages."""
    password = client.connection_pool.connection_kwargs.get("password")
    return None if password is None else str(password)


def decodes_responses(client: aioredis.Redis) -> bool:
    """Whether ``client`` turns replies into ``str`` (the store needs bytes: payloads, blobs)."""
    return bool(client.connection_pool.connection_kwargs.get("decode_responses", False))

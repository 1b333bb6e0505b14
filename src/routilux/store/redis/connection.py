"""Connecting to Redis, and naming the server in messages without its password.

Every Routilux client of Redis (the shared store's, a cluster node's) is made here, with
timeouts: a Redis that hangs fails a call instead of holding it (and a store's final flush)
forever. The cluster imports these too (cluster sits above store, never the reverse).

Why the timeouts are short and the retries few: while Redis is down (killed, restarting, loading
its AOF), a request that needs it must answer 503 ``cluster_unavailable`` within 2 s rather than
hang. redis-py's default retries a failed command 10 times with a backoff of up to a second each
(several seconds per call against a stopped server), and a command against a frozen server
waits for the socket timeout (not retried). One quick retry of a failed connection is kept:
after Redis restarted, every pooled connection is dead, and the retry reconnects instead of
failing the first command on each. The parts that loop (channel, event bridge, lease, store
writer) retry with their own backoff.

Why not shorter still: a legitimately slow reply on a busy machine must not be cut. A frozen
Redis costs a timeout once per outage, not once per call: every client made here reports to its
server's latch (:mod:`routilux.store.redis.reachability`), and once one call finds Redis silent,
the calls of requests fail at once (those waiting, at that moment) instead of each waiting for
its own timeout.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from routilux.store.errors import StoreUnreachable
from routilux.store.redis.reachability import ReachabilityRetry, server_of_url

#: Timeouts (seconds) of every client made from a URL: together with the retry below, a command
#: against an unreachable or frozen Redis fails in under 2 s. A blocking XREAD blocks for well
#: under the socket timeout; no Routilux script or pipeline runs anywhere near it.
CONNECT_TIMEOUT: Final = 0.5
SOCKET_TIMEOUT: Final = 1.2
#: Retries of a command that failed for its connection (see the module docstring).
COMMAND_RETRIES: Final = 1
#: How often (seconds) a cluster node's client checks a pooled connection before using it.
HEALTH_CHECK_INTERVAL: Final = 30


def new_client(url: str, **options: Any) -> aioredis.Redis:
    """A client for ``url`` with Routilux's timeouts (not connected yet); ``options`` are
    passed on to ``redis.asyncio.Redis.from_url``."""
    options.setdefault("retry", command_retry(url))
    return aioredis.Redis.from_url(
        url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=SOCKET_TIMEOUT, **options
    )


def command_retry(url: str, *, timeout: float = SOCKET_TIMEOUT) -> Retry:
    """How a client of ``url`` whose socket timeout is ``timeout`` retries a command whose
    connection failed: once, after at most 50 ms. A timeout is not retried (it already took that
    long). Every outcome is told to the server's latch (see
    :class:`~routilux.store.redis.reachability.ReachabilityRetry`)."""
    return ReachabilityRetry(ExponentialWithJitterBackoff(base=0.01, cap=0.05), COMMAND_RETRIES,
                             (redis.exceptions.ConnectionError,), server=server_of_url(url), timeout=timeout,
                             silence=SOCKET_TIMEOUT)


#: What a lost or unreachable Redis raises (``BusyLoadingError``, Redis still loading its data
#: after a restart, is a ``ConnectionError``). Anything else is a bug or a refused command.
CONNECTION_ERRORS: Final = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` means "Redis cannot be reached now" (retry later) rather than "Redis
    refused this" (retrying changes nothing): redis-py's or the socket's error, or the store's
    :class:`~routilux.store.errors.StoreUnreachable` made of one. An exception group (a task
    group's) is one if all its exceptions are."""
    if isinstance(exc, BaseExceptionGroup):
        return all(is_connection_error(e) for e in exc.exceptions)
    return isinstance(exc, (*CONNECTION_ERRORS, StoreUnreachable))


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

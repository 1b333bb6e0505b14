"""Whether this process's Redis answers: one latch per Redis server, shared by every Routilux
client of it (the shared store's, the cluster node's, the shared rate limiter's).

Why a latch: while Redis is down a request that needs it must answer 503 ``cluster_unavailable``
within 2 s. A killed Redis refuses connections at once, but a frozen one (SIGSTOP, a stalled VM, a
network that drops packets) keeps its connections open and answers nothing, so each call waits for
its own socket timeout (:data:`~routilux.store.redis.connection.SOCKET_TIMEOUT`, 1.2 s). Left to
themselves, the calls of one process find out one by one: every request in the first seconds of
an outage waits a full timeout, one queued behind another's call (a flow catalogue's lock, say)
waits two, and one that began as Redis froze also pays the shared rate limiter's wait: up to
2.7 s. Lowering the timeout is no cure: a legitimate slow reply on a busy machine must not be
cut. So the first call to time out (or whose connection fails) tells all the others:

- Redis is then **marked unreachable** (:meth:`Reachability.failed`). Calls made on behalf of a
  request (:func:`serving_a_request`) fail at once with :class:`RedisUnreachable` (a redis-py
  ``ConnectionError``: every layer already answers it with 503 ``cluster_unavailable``), and
  those already waiting — for a reply, for the store's writer (:func:`submit`), for a forwarded
  request's answer — are released at that moment (:meth:`Reachability.released`): a request
  answers at most one timeout after the freeze, whatever it was doing.
- Everything else (the store's writer, lease renewal, reaper, channel, event bridge) **keeps
  really trying**, each with its own backoff. The mark clears as soon as a call asked after it
  gets an answer (:meth:`Reachability.answered`); so that this comes within moments of Redis'
  return rather than at the next retry of some loop (their backoffs reach a second), each cluster
  node runs :func:`watch`, which PINGs while, and only while, Redis is marked unreachable.

The evidence is the same as before — a command that got no reply within the socket timeout, or a
connection that could not be made — only shared. Outcomes older than the last change are ignored
(a reply buffered before a freeze and read after the mark proves nothing about now, nor does a
failure of a call asked before Redis answered again), and so is a timeout noticed well after it
fell due (:data:`STALL_SECONDS`): then this process, not Redis, stood still, and asyncio lets a
timer that fell due meanwhile beat a reply that came meanwhile. The shared rate limiter asks
first, with a shorter timeout of its own (:mod:`routilux.api.middleware.ratelimit`): its timeout
proves nothing by itself, so it is only a suspicion (:meth:`Reachability.suspect`), confirmed if
Redis then says nothing to anyone in this process for a whole socket timeout since the limiter
asked — the verdict the limiter's question would have met had it waited as long. Without this a
request that began as Redis froze would wait the limiter's timeout and then its own call's whole
timeout.

How calls are observed: every client made by :func:`~routilux.store.redis.connection.new_client`
retries through :class:`ReachabilityRetry`: redis-py runs each command, pipeline, connection and
Pub/Sub read through its client's retry object (the ``retry`` option), so this sees them all. A
request is known by its task (a context variable holding the task serving it), so the tasks it
starts (a job's, a relay's) are not requests.

Limits: one latch per server address in this process; a cut-off write may still have reached
Redis (it is applied when Redis resumes), exactly as after a timeout — a 503 acknowledges nothing,
a 2xx still means written.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import anyio
import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import AbstractBackoff

from routilux.store.errors import StoreError, StoreUnreachable

log = logging.getLogger("routilux.store")

T = TypeVar("T")

#: What a call that got no answer raises (redis-py's, and the socket's): evidence of an outage.
_NO_ANSWER: Final = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)

#: The task serving a request, in that task's context (and copied, inert, to the tasks it starts:
#: only the very task counts). A weak reference: an id could be a later task's once it is freed.
_request_task: ContextVar[weakref.ref[asyncio.Task[Any]] | None] = ContextVar("routilux_redis_request_task",
                                                                              default=None)


class RedisUnreachable(redis.exceptions.ConnectionError):
    """Redis did not answer a moment ago, so a call on behalf of a request was not made (or was
    given up): the request answers 503 ``cluster_unavailable`` now rather than wait for a timeout
    of its own. A ``ConnectionError``, so every layer treats it as Redis lost."""


@contextmanager
def serving_a_request() -> Iterator[None]:
    """Within this block the current task serves a request: its calls to Redis fail at once
    while Redis is marked unreachable, and are released when it becomes so."""
    task = asyncio.current_task()  # redis-py's asyncio client: the server runs on asyncio
    previous = _request_task.get()
    _request_task.set(None if task is None else weakref.ref(task))
    try:
        yield
    finally:  # not reset(token): a coroutine closed by the garbage collector ends in another context
        _request_task.set(previous)


def on_behalf_of_a_request() -> bool:
    """Whether the current task is serving a request (see :func:`serving_a_request`)."""
    ref = _request_task.get()
    return ref is not None and (task := asyncio.current_task()) is not None and ref() is task


class Reachability:
    """What this process last saw of one Redis server (see the module docstring)."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.unreachable = False
        self.reason = ""
        #: ``time.monotonic()`` of the last change (mark or clear); outcomes of calls asked
        #: before it are out of date.
        self.changed_at = -math.inf
        self.outages = 0  # times marked unreachable so far
        self._last_answer = -math.inf  # time.monotonic() of the last answer
        #: A question no answer has followed (one whose client gave up sooner than the others: the
        #: rate limiter's): when it was asked, and how long Redis may then stay silent.
        self._silent_since: float | None = None
        self._silence = math.inf
        self._waiting: dict[anyio.CancelScope, int] = {}  # requests' waits, and their threads
        self._watchers: dict[anyio.Event, int] = {}  # watch() loops waiting for a mark, and their threads

    def __repr__(self) -> str:
        return f"Reachability({self.server!r}, unreachable={self.unreachable})"

    def failed(self, asked_at: float, exc: BaseException) -> None:
        """A call asked at ``asked_at`` got no answer (``exc``): mark Redis unreachable and
        release the requests waiting for it."""
        if self.unreachable or asked_at < self.changed_at:
            return
        self.unreachable = True
        self.changed_at = time.monotonic()
        self.outages += 1
        self.reason = f"{type(exc).__name__}: {exc}"
        self._silent_since = None
        log.warning("Redis at %s does not answer (%s): requests that need it answer 503 at once until it "
                    "answers again", self.server, self.reason)
        me = threading.get_ident()
        for scope, thread in list(self._waiting.items()):
            if thread == me:  # a scope is cancelled (an event set) from its own event loop only
                scope.cancel()
        for event, thread in list(self._watchers.items()):
            if thread == me:
                del self._watchers[event]
                event.set()

    def suspect(self, asked_at: float, silence: float) -> None:
        """A call asked at ``asked_at`` gave up waiting sooner than the others do (a timeout that
        proves nothing by itself): if Redis then says nothing at all for ``silence`` seconds since
        ``asked_at`` — as much as a call's own timeout would have waited — it is unreachable. The
        requests waiting at that moment find out (:meth:`released`); any answer first clears it."""
        if self.unreachable or self._silent_since is not None or asked_at < max(self.changed_at, self._last_answer):
            return
        self._silent_since, self._silence = asked_at, silence
        self._set_deadlines(self._deadline())

    def answered(self, asked_at: float) -> None:
        """A call asked at ``asked_at`` got an answer: clear the mark if it was asked after it."""
        now = self._last_answer = time.monotonic()
        if self._silent_since is not None:
            self._silent_since = None
            self._set_deadlines(math.inf)
        if not self.unreachable or asked_at < self.changed_at:
            return
        log.warning("Redis at %s answers again (after %.1fs)", self.server, now - self.changed_at)
        self.unreachable = False
        self.changed_at = now
        self.reason = ""

    async def marked(self) -> None:
        """Return once Redis is marked unreachable (at once if it is)."""
        if self.unreachable:
            return
        event = anyio.Event()
        self._watchers[event] = threading.get_ident()
        try:
            await event.wait()
        finally:
            self._watchers.pop(event, None)

    def check(self) -> None:
        """Raise :class:`RedisUnreachable` if Redis is marked unreachable and the current task
        serves a request."""
        if self.unreachable and on_behalf_of_a_request():
            raise self._error()

    @contextmanager
    def released(self) -> Iterator[None]:
        """For a request's task: :meth:`check`, then give up the block (raising
        :class:`RedisUnreachable`) if Redis is marked unreachable while it runs, or found silent
        (:meth:`suspect`). Other tasks run the block as it is."""
        if not on_behalf_of_a_request():
            yield
            return
        self.check()
        scope = anyio.CancelScope(deadline=self._deadline())
        self._waiting[scope] = threading.get_ident()
        try:
            with scope:
                yield
        finally:
            del self._waiting[scope]
        if scope.cancelled_caught:
            since = self._silent_since
            if not self.unreachable and since is not None:  # silent for too long, unless this process stood still
                if time.monotonic() - since - self._silence < STALL_SECONDS:
                    self.failed(since, RedisUnreachable(f"no answer to anything for {self._silence}s"))
                else:
                    self._silent_since = None
            raise self._error()

    def _deadline(self) -> float:
        """When a request's wait ends for the silence :meth:`suspect` noted (anyio's clock). A
        suspicion whose time has passed with no request waiting to confirm it proves nothing now
        (nobody asked Redis anything meanwhile): it lapses."""
        if self._silent_since is None:
            return math.inf
        left = self._silent_since + self._silence - time.monotonic()
        if left <= 0:
            self._silent_since = None
            return math.inf
        return anyio.current_time() + left

    def _set_deadlines(self, deadline: float) -> None:
        me = threading.get_ident()
        for scope, thread in self._waiting.items():
            if thread == me:
                scope.deadline = deadline

    def _error(self) -> RedisUnreachable:
        return RedisUnreachable(f"Redis at {self.server} did not answer a moment ago ({self.reason or 'silent'}); "
                                "not asked again for a request until it answers")


_latches: dict[str, Reachability] = {}


def reachability(server: str) -> Reachability:
    """The latch of ``server`` (``host:port``, or ``unix:<path>``) in this process."""
    latch = _latches.get(server)
    if latch is None:
        latch = _latches[server] = Reachability(server)
    return latch


def server_of_url(url: str) -> str:
    """The server a ``redis://``, ``rediss://`` or ``unix://`` URL names, as :func:`reachability`
    keys it."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix:{parts.path}"
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"


def reachability_of(client: aioredis.Redis) -> Reachability:
    """The latch of the server ``client`` talks to."""
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return reachability(f"unix:{kwargs['path']}")
    return reachability(f"{kwargs.get('host') or 'localhost'}:{kwargs.get('port') or 6379}")


#: How often :func:`watch` asks a Redis that refuses connections (one that does not answer is
#: asked again as soon as its PING times out).
PROBE_SECONDS: Final = 0.1
#: A timeout noticed this much later than it was due is no evidence: this process stood still
#: meanwhile (a stalled event loop, a busy machine), and asyncio then lets a timer that fell due
#: beat a reply that had arrived; believing it would turn a stall into a burst of 503s.
STALL_SECONDS: Final = 0.15


async def watch(client: aioredis.Redis) -> None:
    """While Redis is marked unreachable, PING it (``client``'s retry reports the outcome), so
    the mark clears as soon as Redis answers again: a frozen Redis answers the PING waiting for
    it the moment it resumes, a restarted one the next PING. Idle otherwise; runs until
    cancelled (a cluster node's task group owns it). A mark made wrongly (a call that timed out
    while this process, not Redis, stood still, yet within :data:`STALL_SECONDS`) is cleared by
    the first PING."""
    latch = reachability_of(client)
    while True:
        await latch.marked()
        while latch.unreachable:
            try:
                await client.ping()
            except _NO_ANSWER:
                await anyio.sleep(PROBE_SECONDS)
            except Exception:  # noqa: BLE001 - this loop must go on; the error is worth a look
                log.exception("PING of Redis at %s failed unexpectedly", latch.server)
                await anyio.sleep(PROBE_SECONDS)


class ReachabilityRetry(Retry):
    """redis-py's retry of a failed connection, which also reports every call's outcome to the
    latch of ``server``, refuses a request's call while Redis is marked unreachable, and releases
    it when Redis becomes so (see the module docstring). redis-py deep-copies a client's retry into
    each connection: this holds the server's name, and finds the one latch by it.

    ``timeout`` is the client's own socket timeout, ``silence`` the cluster's: a client that gives
    up sooner (the shared rate limiter's) reports its failures as mere suspicions
    (:meth:`Reachability.suspect`)."""

    def __init__(self, backoff: AbstractBackoff, retries: int, supported_errors: tuple[type[Exception], ...], *,
                 server: str, timeout: float, silence: float) -> None:
        super().__init__(backoff, retries, supported_errors)
        self.server = server
        self.timeout = timeout
        self.silence = silence

    async def call_with_retry(
        self,
        do: Callable[[], Awaitable[T]],
        fail: Callable[[Exception], Any] | Callable[[Exception, int], Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        latch = reachability(self.server)
        if not on_behalf_of_a_request():
            return await self._observed(latch, do, fail, is_retryable, with_failure_count)
        with latch.released():
            return await self._observed(latch, do, fail, is_retryable, with_failure_count)

    async def _observed(
        self,
        latch: Reachability,
        do: Callable[[], Awaitable[T]],
        fail: Callable[[Exception], Any] | Callable[[Exception, int], Any],
        is_retryable: Callable[[Exception], bool] | None,
        with_failure_count: bool,
    ) -> T:
        """redis-py's retry, its outcome told to ``latch``."""
        asked_at = time.monotonic()
        try:
            result = await super().call_with_retry(do, fail, is_retryable, with_failure_count)
        except RedisUnreachable:
            raise  # refused or released here: no news about Redis
        except redis.exceptions.ResponseError:
            latch.answered(asked_at)  # an error reply is a reply
            raise
        except _NO_ANSWER as exc:
            self._no_answer(latch, asked_at, exc)
            raise
        # None is what a connection made, or a Pub/Sub read that timed out, returns: no reply.
        # (A reply of nil is None too, and is not counted: other replies soon are.)
        if result is not None:
            latch.answered(asked_at)
        return result

    def _no_answer(self, latch: Reachability, asked_at: float, exc: Exception) -> None:
        late = time.monotonic() - asked_at > self.timeout + STALL_SECONDS
        if late and isinstance(exc, redis.exceptions.TimeoutError):
            return  # noticed late: this process stood still, and a timeout then beats a reply that came meanwhile
        if self.timeout < self.silence:
            latch.suspect(asked_at, self.silence)
        else:
            latch.failed(asked_at, exc)


async def waited_for(client: Callable[[], aioredis.Redis], wait: Callable[[], Awaitable[T]],
                     give_up: Callable[[], None], *, location: str) -> T:
    """``await wait()`` (a write queued in the writer of the store at ``location``, whose client is
    ``client()``): for a request's task, refused while Redis is marked unreachable and given up
    when it becomes so — then ``give_up()`` tells the write (the writer leaves it out if it has
    not got to it yet) and :class:`~routilux.store.errors.StoreUnreachable` is raised, as from
    any failed write."""
    if not on_behalf_of_a_request():
        return await wait()
    try:
        with reachability_of(client()).released():
            return await wait()
    except RedisUnreachable as exc:
        give_up()
        raise StoreUnreachable(f"a write failed at {location}: {exc}", location=location,
                               redis_error=type(exc).__name__) from None


async def submit(
    client: Callable[[], aioredis.Redis], enqueue: Callable[..., Awaitable[Any]], fn: Callable[..., Awaitable[Any]],
    *args: Any, location: str,
) -> Any:
    """``enqueue(fn, *args)`` (the writer runs ``fn`` behind what is queued), as
    :func:`waited_for`; the writer then runs ``fn`` as the request's (so its calls are released
    too), and not at all if the request gave up before the writer reached it."""
    if not on_behalf_of_a_request():
        return await enqueue(fn, *args)
    given_up = False

    async def for_the_request(*fn_args: Any) -> Any:
        if given_up:  # a plain StoreError: the writer goes on with what is queued behind
            raise StoreError("not written: the request gave up waiting (Redis unreachable)", location=location)
        with serving_a_request():
            return await fn(*fn_args)

    def give_up() -> None:
        nonlocal given_up
        given_up = True

    return await waited_for(client, lambda: enqueue(for_the_request, *args), give_up, location=location)

"""Messages between nodes: requests forwarded to a job's owner, their answers, and change notices.

Each node subscribes (Redis Pub/Sub, one connection) to its own channel ``<prefix>:node:<id>`` and
to the broadcast channel ``<prefix>:changes``:

- **Requests.** A node that receives an HTTP request for a job another node runs publishes the
  request (method, path, query, headers, body) on the owner's channel and waits for the answer on
  its own. ``PUBLISH`` returns how many subscribers got the message, so a request to a node that
  is gone fails at once (0 receivers) instead of waiting. While waiting, the requester checks the
  owner's lease every ``check_interval``: an owner that dies mid-request ends the wait within
  about a second, and every wait has a deadline. So a request is never left hanging.
- **Answers** are published on the requester's channel; an answer larger than
  ``INLINE_ANSWER_BYTES`` goes into a short-lived key instead, and the message only names it,
  because Redis disconnects a Pub/Sub client that falls more than a few MB behind.
- **Notices** (``notify``) are broadcast to every node: "flow X changed", "runtimes changed", so
  that caches elsewhere reload from the shared store.

Why Pub/Sub here when events use Streams: a control request is only worth delivering *now* — a
pause replayed a minute late, after the requester gave up, would be wrong. Pub/Sub delivers now
or never, and says how many received it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Final

import anyio
import anyio.abc
import msgspec
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from routilux.store.backoff import Backoff
from routilux.store.redis.connection import is_connection_error
from routilux.store.redis.keys import Keys
from routilux.store.redis.reachability import RedisUnreachable, reachability_of

log = logging.getLogger("routilux.cluster")

INLINE_ANSWER_BYTES: Final = 256 * 1024
ANSWER_KEY_TTL_MS: Final = 60_000
MAX_CONCURRENT_REQUESTS: Final = 256
#: How long a waiting request gives Redis to say whether the owner's lease is still there.
ALIVE_CHECK_SECONDS: Final = 0.5
#: The notice a node gets after its subscription was re-established: reload all shared state.
RESYNC: Final = "- resync"


def _first_error(exc: BaseException) -> BaseException:
    """The first leaf of an exception group (the one worth a log line), or ``exc`` itself."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


class ForwardedRequest(msgspec.Struct, tag="request", frozen=True):
    id: str
    reply_to: str
    deadline: float  # time.time() after which the requester no longer waits
    method: str
    path: str
    query: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    client: tuple[str, int] | None = None


class ForwardedResponse(msgspec.Struct, tag="response", frozen=True):
    id: str
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    body_key: str | None = None  # the body is in this key (a large answer)


Message = ForwardedRequest | ForwardedResponse
_encode = msgspec.msgpack.encode
_decode = msgspec.msgpack.Decoder(Message).decode


class OwnerUnavailable(Exception):
    """The node that owns a job did not answer: it is gone, or did not answer in time."""

    def __init__(self, node: str, why: str) -> None:
        super().__init__(f"node {node} {why}")
        self.node = node
        self.why = why


class ChannelInterrupted(OwnerUnavailable):
    """This node's own subscription was down (Redis lost) while it waited for an answer: the
    answer may have been published meanwhile and missed (Pub/Sub delivers now or never), so
    waiting on would only run into the deadline. Whether the owner did the request is unknown."""

    def __init__(self, node: str) -> None:
        super().__init__(node, "could not be heard from: this node's cluster channel was interrupted "
                               "(Redis unreachable); the request may or may not have been done")


class _Waiter:
    __slots__ = ("done", "response")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.response: ForwardedResponse | None = None


RequestHandler = Callable[[ForwardedRequest], Awaitable[ForwardedResponse]]


class NodeChannel:
    """This node's end of the request/answer/notice traffic (see the module docstring)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        node_id: str,
        prefix: str,
        handle: RequestHandler,
        is_alive: Callable[[str], Awaitable[bool]],
        on_notice: Callable[[str], Awaitable[None]] | None = None,
        check_interval: float = 1.0,
    ) -> None:
        self.client = client
        self.node_id = node_id
        self.prefix = prefix
        self.handle = handle
        self.is_alive = is_alive
        self.on_notice = on_notice
        self.check_interval = check_interval
        self.keys = Keys(prefix)
        self.changes = self.keys.changes
        self.forwarded = 0  # requests this node sent to owners
        self.served = 0  # requests this node answered for others
        self.connected = False  # subscribed now (health reports it)
        self.losses = 0  # subscriptions lost so far
        self._resync_due = False  # a notice could not be handled (Redis lost): reload everything
        self._pending: dict[str, _Waiter] = {}
        self._limiter = anyio.CapacityLimiter(MAX_CONCURRENT_REQUESTS)

    def channel(self, node: str) -> str:
        return self.keys.node_channel(node)

    # -- receiving ----------------------------------------------------------------------------
    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Subscribe, then serve until cancelled. ``task_status`` is set once subscribed, so no
        answer to this node's first request can be missed.

        Supervised in itself: whatever ends a subscription — Redis lost (killed, restarted,
        unreachable), or anything unexpected — is logged, and the channel subscribes again after a
        capped, jittered backoff, then tells ``on_notice`` to resync (notices may have been missed
        meanwhile). ``except Exception`` and not a list of Redis errors: the messages are served
        inside a task group, whose failures arrive as an ``ExceptionGroup`` (which a clause naming
        ``RedisError`` never matched: that error used to end the server's task group)."""
        started = False
        backoff = Backoff(cap=1.0)  # forwarding waits on it: notice Redis' return within a second
        while True:
            pubsub = self.client.pubsub()
            try:
                await pubsub.subscribe(self.channel(self.node_id), self.changes)
                self.connected = True
                if started:
                    log.warning("the cluster channel is subscribed again")
                    await self._resync()
                else:
                    task_status.started()
                    started = True
                backoff.reset()
                await self._serve_messages(pubsub)
            except Exception as exc:  # noqa: BLE001 - see the docstring: the channel must go on
                self.connected = False
                self.losses += 1
                delay = backoff.next()
                if is_connection_error(exc):  # logged once per outage
                    log.log(logging.ERROR if backoff.failures == 1 else logging.DEBUG,
                            "lost the cluster channel (Redis unreachable: %s); subscribing again in %.2fs",
                            _first_error(exc), delay)
                else:
                    log.exception("the cluster channel failed unexpectedly; subscribing again in %.2fs", delay)
                await anyio.sleep(delay)
            finally:
                with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                    try:
                        await pubsub.aclose()
                    except Exception:  # noqa: BLE001 - closing a dead connection
                        log.debug("closing the cluster channel's connection failed", exc_info=True)

    async def _serve_messages(self, pubsub: PubSub) -> None:
        """Serve the subscription's messages until it fails (never returns otherwise)."""
        async with anyio.create_task_group() as tg:
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None:
                    await self._received(tg, message)
                elif self._resync_due:
                    await self._resync()

    async def _resync(self) -> None:
        """Reload all shared state (``on_notice(RESYNC)``); if Redis is unreachable again, try
        again later (``_resync_due``)."""
        self._resync_due = False
        if self.on_notice is None:
            return
        try:
            await self.on_notice(RESYNC)
        except Exception as exc:  # noqa: BLE001 - a resync failing must not stop the channel
            if is_connection_error(exc):
                log.error("resyncing failed (Redis unreachable: %s); trying again", exc)
                self._resync_due = True
            else:
                log.exception("resyncing after the channel came back failed; the next notices will")

    async def _received(self, tg: anyio.abc.TaskGroup, message: dict[str, object]) -> None:
        channel = message["channel"]
        data = message["data"]
        assert isinstance(data, bytes)
        if (channel.decode() if isinstance(channel, bytes) else channel) == self.changes:
            if self.on_notice is not None:
                try:
                    await self.on_notice(data.decode())
                except Exception as exc:  # noqa: BLE001 - a notice must never stop the channel
                    if is_connection_error(exc):  # the cache it meant to refresh is refreshed whole later
                        log.error("handling the change notice %r failed (Redis unreachable: %s); resyncing "
                                  "once it is back", data[:200], exc)
                        self._resync_due = True
                    else:
                        log.exception("handling the change notice %r failed", data[:200])
            return
        try:
            item = _decode(data)
        except msgspec.DecodeError:
            log.error("ignored a malformed cluster message (%d bytes)", len(data))
            return
        if isinstance(item, ForwardedResponse):
            waiter = self._pending.get(item.id)
            if waiter is not None:
                waiter.response = item
                waiter.done.set()
        elif item.deadline > time.time():
            tg.start_soon(self._serve, item)

    async def _serve(self, request: ForwardedRequest) -> None:
        """Answer one forwarded request. Never raises: a failure here (Redis lost while
        answering) must not end the subscription that serves every other request; the requester
        stops waiting at its deadline."""
        async with self._limiter:
            try:
                response = await self.handle(request)
                self.served += 1
                if len(response.body) > INLINE_ANSWER_BYTES:
                    key = self.keys.answer(request.id)
                    await self.client.set(key, response.body, px=ANSWER_KEY_TTL_MS)
                    response = msgspec.structs.replace(response, body=b"", body_key=key)
                await self.client.publish(self.channel(request.reply_to), _encode(response))
            except Exception as exc:  # noqa: BLE001 - see the docstring
                if is_connection_error(exc):
                    log.error("could not answer a forwarded %s %s: %s", request.method, request.path, exc)
                else:
                    log.exception("answering a forwarded %s %s failed", request.method, request.path)

    # -- sending ------------------------------------------------------------------------------
    def new_request(
        self, *, method: str, path: str, query: bytes, headers: list[tuple[bytes, bytes]], body: bytes,
        client: tuple[str, int] | None, timeout: float,
    ) -> ForwardedRequest:
        return ForwardedRequest(uuid.uuid4().hex, self.node_id, time.time() + timeout, method, path, query,
                                headers, body, client)

    async def request(self, node: str, request: ForwardedRequest) -> ForwardedResponse:
        """Send ``request`` to ``node`` and return its answer; :class:`OwnerUnavailable` if the
        node is gone or lets the request's deadline pass, :class:`ChannelInterrupted` if this
        node's subscription is (or was, while waiting) down, or this node found Redis silent
        meanwhile (a request's wait only)."""
        if not self.connected:  # no answer could reach this node
            raise ChannelInterrupted(node)
        losses = self.losses
        waiter = self._pending[request.id] = _Waiter()
        try:
            receivers = await self.client.publish(self.channel(node), _encode(request))
            self.forwarded += 1
            if receivers == 0:
                raise OwnerUnavailable(node, "is not connected to the cluster")
            # A request waiting here gives up as soon as another call of this node finds Redis
            # silent (a frozen Redis keeps this subscription open and quiet; the answer could
            # not come through it anyway): see routilux.store.redis.reachability.
            try:
                with reachability_of(self.client).released():
                    await self._answered(node, request, waiter, losses)
            except RedisUnreachable:
                raise ChannelInterrupted(node) from None
            response = waiter.response
            assert response is not None
        finally:
            del self._pending[request.id]
        if response.body_key is not None:
            body = await self.client.getdel(response.body_key)
            if body is None:
                raise OwnerUnavailable(node, "answered, but its answer expired before it was read")
            response = msgspec.structs.replace(response, body=body, body_key=None)
        return response

    async def _answered(self, node: str, request: ForwardedRequest, waiter: _Waiter, losses: int) -> None:
        """Wait for ``waiter``'s answer; :class:`OwnerUnavailable` (or :class:`ChannelInterrupted`)
        if it cannot come (see :meth:`request`)."""
        while waiter.response is None:
            remaining = request.deadline - time.time()
            if remaining <= 0:
                raise OwnerUnavailable(node, "did not answer in time")
            with anyio.move_on_after(min(self.check_interval, remaining)):
                await waiter.done.wait()
            if waiter.response is None and (self.losses != losses or not self.connected):
                raise ChannelInterrupted(node)
            if waiter.response is None and not await self._owner_alive(node):
                raise OwnerUnavailable(node, "stopped renewing its lease")

    async def _owner_alive(self, node: str) -> bool:
        """``is_alive(node)``, given ``ALIVE_CHECK_SECONDS``: a Redis that does not answer that
        quickly (frozen, overloaded) is as good as lost for a request someone waits on, which
        then fails with :class:`ChannelInterrupted` well within the 2 s of a 503."""
        with anyio.move_on_after(ALIVE_CHECK_SECONDS):
            return await self.is_alive(node)
        raise ChannelInterrupted(node)

    async def notify(self, notice: str) -> None:
        """Tell every node (this one included) that ``notice`` happened."""
        await self.client.publish(self.changes, notice.encode())

"""A WebSocket session: the tasks that serve one client, and the registry of open sessions.

Each session owns its tasks in one task group — the sender (the session's feeds and queued
frames → socket, with heartbeat pings), the watchdog and the receiver (client messages, pongs,
subscribe/unsubscribe) — so closing the session, for whatever reason, stops all of them. Its live
events come from the bus's shared job feeds, read by the sender when the fan-out gives it a turn
(:mod:`routilux.api.ws.fanout`).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketDisconnected

from routilux.api.ws import frames
from routilux.api.ws.fanout import Fanout
from routilux.api.ws.protocol import SEND_FRAMES
from routilux.api.ws.stream import BATCH_BYTES, OutgoingStream
from routilux.bus import TERMINAL_STATUSES
from routilux.bus.feed import BLOCKED_GRACE, FeedReader
from routilux.engine import Job
from routilux.server.jobs import snapshot_state_of
from routilux.server.services import Services
from routilux.store.base import JobRecord

if TYPE_CHECKING:
    from routilux.cluster.redis_events import RemoteJob
    from routilux.server.cluster_node import ClusterNode

log = logging.getLogger("routilux.api")

HEARTBEAT_TIMEOUT_CODE = 4408
GOING_AWAY = 1001
MESSAGE_TOO_BIG = 1009  # RFC 6455 7.4.1: a message too big to process
REQUEUE_AFTER = 0.002  # seconds a turn may wait for its socket before it must queue again


class MetricsFrames:
    """The last ``metrics`` frame of each watched job, by the job's metrics version: a thousand
    sockets on one job compute and encode it once per version, not a thousand times."""

    LIMIT = 1024

    def __init__(self) -> None:
        self._frames: dict[str, tuple[int, bytes | None]] = {}

    def get(self, job_id: str) -> tuple[int, bytes | None] | None:
        return self._frames.get(job_id)

    def put(self, job_id: str, version: int, frame: bytes | None) -> None:
        self._frames.pop(job_id, None)
        self._frames[job_id] = (version, frame)
        if len(self._frames) > self.LIMIT:
            del self._frames[next(iter(self._frames))]


class Sessions:
    """Every open session, so a clean shutdown can close them all with 1001, and the fan-out
    that serves them."""

    def __init__(self, fanout: Fanout) -> None:
        self._open: set[Session] = set()
        self.fanout = fanout
        self.metrics_frames = MetricsFrames()
        fanout.serve(lambda: list(self._open))

    def __len__(self) -> int:
        return len(self._open)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._open))

    def add(self, session: Session) -> None:
        self._open.add(session)

    def discard(self, session: Session) -> None:
        self._open.discard(session)

    async def close_all(self, code: int = GOING_AWAY, reason: str = "server shutting down") -> None:
        """Close every session at once; a client that stopped reading cannot hold up the rest."""
        async with anyio.create_task_group() as tg:
            for session in list(self._open):
                tg.start_soon(session.close, code, reason)


class Session:
    def __init__(
        self, websocket: WebSocket, services: Services, sessions: Sessions, reader: FeedReader
    ) -> None:
        self.ws = websocket
        self.services = services
        self.sessions = sessions
        self.settings = services.settings
        self.reader = reader
        reader.owner = self
        self.fanout = sessions.fanout
        self.stream = OutgoingStream(services.settings.ws_send_queue, self.fanout.queued, self._frame_queued)
        self._scope: anyio.CancelScope | None = None
        self._last_heard = anyio.current_time()
        self._last_sent = anyio.current_time()
        self._closing = False
        self.on_message: Callable[[dict[str, Any]], Awaitable[None]] | None = None
        self.close_when_job_ends = False
        self._close_at: float | None = None
        self._watch = anyio.Event()
        self.before_streaming: Callable[[], Awaitable[None]] | None = None
        self.metrics_job_id: str | None = None  # a job monitor socket also gets `metrics` frames
        self._turn = False  # the fan-out granted a turn the sender has not used yet
        self._allowance = BATCH_BYTES  # bytes of live events the turn allows
        self._asked = False  # queued for a turn
        self._slow = False  # the client took more than BLOCKED_GRACE to take the last batch
        # The last write had to wait for the socket: on the next turn, wait until it takes more
        # before choosing what to send (a client that stopped reading then holds no batch here).
        self._pressed = False
        self._overflow: tuple[int, str] | None = None
        self._granted = anyio.Event()  # set by grant(): the sender waits for nothing else
        self._idle = False  # the sender waits with nothing to send

    # -- lifetime ----------------------------------------------------------------------------
    async def run(self) -> None:
        """Serve until the client leaves, the session is closed, or the server shuts down."""
        sessions = self.sessions
        sessions.add(self)
        try:
            async with anyio.create_task_group() as tg:
                self._scope = tg.cancel_scope
                tg.start_soon(self._send)
                tg.start_soon(self._watchdog)
                if self.metrics_job_id is not None and self.settings.ws_metrics_interval > 0:
                    tg.start_soon(self._metrics_frames, self.metrics_job_id)
                if self.before_streaming is not None:
                    await self.before_streaming()  # e.g. replay, while the sender already sends
                await self._receive()
                tg.cancel_scope.cancel()
        finally:
            sessions.discard(self)
            self.reader.close()
            self.stream.discard()

    async def close(self, code: int, reason: str) -> None:
        if self._closing:
            return
        self._closing = True
        with anyio.move_on_after(2):  # a client that stopped reading may never take the frame
            try:
                await self.ws.close(code, reason)
            except Exception:  # the client is already gone
                pass
        if self._scope is not None:
            self._scope.cancel()

    # -- the fan-out's side ---------------------------------------------------------------------
    @property
    def queued_bytes(self) -> int:
        return self.stream.queued_bytes

    def ask_for_turn(self) -> None:
        """Events wait in this session's feeds: queue for a turn to read them."""
        if not self._asked and not self._closing:
            self._asked = True
            self.fanout.request(self)

    def grant(self, allowance: int) -> None:
        """A turn: the sender may move ``allowance`` bytes of live events to the socket."""
        self._asked = False
        self._turn = True
        self._allowance = allowance
        self._granted.set()

    def _frame_queued(self) -> None:
        """A reply, snapshot, replay or metrics frame was queued: an idle sender needs a turn
        (it is not woken for it: the turn wakes it)."""
        if self._idle:
            self.ask_for_turn()

    def overflow(self, code: int, reason: str) -> None:
        """Close this socket (the server holds too much for its sockets): let go of its feeds
        and queue at once, and have the watchdog send the close."""
        if self._overflow is None and not self._closing:
            self._overflow = (code, reason)
            self.reader.close()
            self.stream.discard()
            self._watch.set()

    # -- tasks -------------------------------------------------------------------------------
    def linger(self) -> None:
        """The watched job ended: close after ``ws_linger_seconds`` if one is configured."""
        linger = self.settings.ws_linger_seconds
        if linger is not None and self._close_at is None:
            self._close_at = anyio.current_time() + linger
            self._watch.set()

    async def _send(self) -> None:
        """On each turn the fan-out grants, send what is queued (replies, snapshots, replay) and
        then the next live events: all at once where the server supports it (see
        :mod:`routilux.api.ws.protocol`), one ASGI message per frame where it does not. Between
        turns, wait for the next: asked for at once when there is more to send, else when a frame
        is queued or the feeds get events."""
        ws = self.ws
        batched = SEND_FRAMES in ws.scope.get("extensions", {})
        stream = self.stream
        reader = self.reader
        held = stream.replaying
        try:
            while True:
                if self._turn:
                    self._turn = False
                    if batched and self._pressed and await self._write([], batched) > REQUEUE_AFTER:
                        # The socket was full and the client has just read: many may wake at once
                        # like this (clients that paused together), so queue again for a turn.
                        self.ask_for_turn()
                        continue
                    batch = stream.take()
                    if not stream.has_frames():  # live events come after what is queued
                        if self._slow:  # the client is not reading: only its newest events are kept
                            self._slow = False
                            reader.skip_to_newest(held)
                        reader.take(batch, stream.sent, self._allowance, held)
                        if reader.ended:
                            reader.ended.clear()
                            if self.close_when_job_ends:
                                self.linger()
                    if stream.has_frames() or reader.has_unread(held):
                        self.ask_for_turn()  # queue for the next turn while this batch is sent
                    if batch:
                        await self._write(batch, batched)
                    continue
                if stream.has_frames() or reader.has_unread(held):
                    self.ask_for_turn()
                else:
                    reader.park()  # the fan-out asks for a turn when its feeds get events
                self._idle = not self._asked
                self._granted = anyio.Event()
                await self._granted.wait()
                self._idle = False
        except WebSocketDisconnect:
            return  # the client is gone; the receiver hears it and ends the session
        except WebSocketDisconnected:
            return  # this side closed it (close() sent 1001 while a turn was being sent): the session ends

    async def _write(self, batch: list[bytes], batched: bool) -> float:
        """Hand ``batch`` to the socket (an empty one: wait until it takes more); a client that
        kept it waiting longer than :data:`~routilux.bus.feed.BLOCKED_GRACE` is slow. Returns
        how long that took."""
        started = time.monotonic()
        self.reader.blocked_since = started
        try:
            if batched:
                await self.ws.send({"type": "websocket.send", SEND_FRAMES: batch})
            else:
                for payload in batch:
                    await self.ws.send({"type": "websocket.send", "text": payload.decode()})
        finally:
            self.reader.blocked_since = None
        took = time.monotonic() - started
        self._pressed = took > REQUEUE_AFTER
        if took > BLOCKED_GRACE:
            self._slow = True
        if batch:
            self._last_sent = anyio.current_time()
        return took

    async def _metrics_frames(self, job_id: str) -> None:
        """Every ``ws_metrics_interval`` seconds, a ``{"type": "metrics", "job_id", "metrics"}``
        frame with the job's metrics (as ``GET /api/jobs/{id}/metrics``) if they changed since the
        last one; after the job ended, one last frame with its final figures, then no more."""
        node = self.services.cluster_node
        if node is not None and self.services.jobs.is_remote(job_id):
            await self._remote_metrics_frames(node, job_id)
            return
        aggregator = self.services.metrics
        interval = self.settings.ws_metrics_interval
        shared = self.sessions.metrics_frames
        sent: int | None = None
        # Sockets opened together would all wake together, each interval: start at a random
        # phase instead, so their frames spread over the interval.
        await anyio.sleep(interval * random.random())
        while True:
            await anyio.sleep(interval)
            version = aggregator.version(job_id)
            if version is not None and version == sent:
                continue
            cached = shared.get(job_id)
            if version is not None and cached is not None and cached[0] == version:
                frame: bytes | None = cached[1]
            else:  # the first of the job's sockets to ask this time: one frame for all of them
                metrics = aggregator.job(job_id)
                frame = None if metrics is None else frames.control("metrics", job_id=job_id, metrics=metrics)
                if version is not None:
                    shared.put(job_id, version, frame)
            if frame is not None:
                self.stream.control(frame)
            if version is None:
                return  # the job is over (or this server never saw it run): nothing will change
            sent = version

    async def _remote_metrics_frames(self, node: ClusterNode, job_id: str) -> None:
        """The same for a job another server runs: its figures are its owner's (this server may
        have begun following the job after its first events), asked for at each interval."""
        interval = self.settings.ws_metrics_interval
        sent: tuple[Any, Any] | None = None
        while True:
            await anyio.sleep(interval)
            metrics = await node.remote_metrics(job_id)
            if metrics is None:
                continue
            # What "changed" means, as for a local job: new events (a live job's duration grows by
            # itself), or a new status.
            version = (metrics.get("events_seen"), metrics.get("status"))
            if version == sent:
                continue
            self.stream.control(frames.control("metrics", job_id=job_id, metrics=metrics))
            sent = version
            if metrics.get("status") in TERMINAL_STATUSES:
                return

    async def _watchdog(self) -> None:
        """Ping after ``ws_ping_interval`` of silence; close after ``ws_idle_timeout`` without
        hearing from the client."""
        interval = self.settings.ws_ping_interval
        idle = self.settings.ws_idle_timeout
        while True:
            if self._overflow is not None:
                await self.close(*self._overflow)
                return
            now = anyio.current_time()
            if now - self._last_heard >= idle:
                await self.close(HEARTBEAT_TIMEOUT_CODE, f"no message from the client for {idle:g}s")
                return
            if self._close_at is not None and now >= self._close_at and not self.stream.pending():
                await self.close(1000, "the job has ended")
                return
            if now - self._last_sent >= interval and not self.stream.pending():
                self.stream.control(frames.control("ping"))
                self._last_sent = now
            wake = min(self._last_sent + interval, self._last_heard + idle, self._close_at or float("inf"))
            self._watch = anyio.Event()
            with anyio.move_on_after(max(0.01, wake - anyio.current_time())):
                await self._watch.wait()

    async def _receive(self) -> None:
        limit = self.settings.ws_max_message_bytes
        while True:
            try:
                message = await self.ws.receive()
            except (WebSocketDisconnect, RuntimeError):
                return
            if message["type"] == "websocket.disconnect":
                return
            self._last_heard = anyio.current_time()
            raw = message.get("text")
            if raw is None:
                data = message.get("bytes") or b""
            else:
                data = raw.encode()
            if len(data) > limit:
                # Routilux's servers refuse it in the protocol already, from the frame's header
                # (ws_max_size, routilux.api.transport); this is for any other ASGI server.
                await self.close(MESSAGE_TOO_BIG, f"messages are limited to {limit} bytes")
                return
            try:
                body = msgspec.json.decode(data)
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                # msgspec raises the last two for invalid UTF-8 in a string and for nesting past
                # the recursion limit; left uncaught they would drop the socket without a close.
                self.reply_error("invalid_json", "a message must be a JSON object")
                continue
            if not isinstance(body, dict) or not isinstance(body.get("type"), str):
                self.reply_error("invalid_message", "a message must be a JSON object with a 'type'")
                continue
            if body["type"] == "ping":
                self.stream.control(frames.control("pong"))
            elif body["type"] == "pong":
                pass
            elif self.on_message is not None:
                await self.on_message(body)
            else:
                self.reply_error("unknown_type", f"unknown message type '{body['type']}'; this socket accepts ping")

    def reply_error(self, code: str, message: str, **fields: Any) -> None:
        self.stream.control(frames.control("error", error=code, message=message, **fields))

    # -- replay ------------------------------------------------------------------------------
    async def replay(
        self, job_id: str, since: int, published_mark: int, types: frozenset[str] | None = None
    ) -> None:
        """Queue the events of ``job_id`` after ``since`` that happened before the subscription
        began (``published_mark``), from memory, the store or (another server's job) Redis, with
        a gap for what is gone. Live events overlap at worst; the stream drops what it sent."""
        stream = self.stream
        stream.begin_replay(job_id)
        found = await self.services.events.events_since(job_id, since, types=types, published_mark=published_mark)
        if found.gap is not None:
            stream.lost(job_id, *found.gap)
        await stream.end_replay(job_id, [(seq, payload) for seq, _type, payload in found.events], since)


async def snapshot_frame(found: Job | JobRecord | RemoteJob, services: Services) -> tuple[bytes, int | None]:
    """The job as it is now, sent before any event so a client never races a REST call; and
    its ``last_seq``. Another server's job is described by that server (the one that knows its
    routine states), or by what its events said if that server does not answer."""
    if isinstance(found, (Job, JobRecord)):
        state = snapshot_state_of(found)
    else:
        from routilux.cluster.redis_events import snapshot_state

        node = services.cluster_node
        state = (await node.remote_snapshot(found) if node is not None else None) or snapshot_state(found)
    return frames.control("snapshot", job_id=found.job_id, **state), state["last_seq"]

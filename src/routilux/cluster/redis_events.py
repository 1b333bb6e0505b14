"""Job events across processes, through Redis Streams.

Each server keeps its own :class:`~routilux.bus.EventBus`; this bridge makes every bus see every
job of the cluster.

- **Writing** is the shared store's job (:class:`~routilux.store.redis.RedisStore`, fed by the
  server's recorder like any store): it appends each event of a job to the job's own stream
  ``<prefix>:job:<job_id>`` with the entry id ``<seq>-0``, so Redis itself refuses an
  out-of-order or duplicate entry, and a reader asks for "everything after seq N" with the id
  ``N-0`` (XREAD, XRANGE) with no index of its own; and it announces each ``job_start`` on
  ``<prefix>:jobs``, so the others learn of new jobs without scanning keys. One writer, one copy:
  the replay of ``GET /api/jobs/{id}/events`` and the live relay read the same entries.
- **Consuming.** One task per server blocks on XREAD (with a timeout, so shutdown is prompt) over
  the announcement stream and the streams of the remote jobs it *follows*, and re-publishes their
  events on the local bus: WebSocket sessions see them as if the job ran here. Per-job order is
  the stream's order; a job is read from one cursor only, so nothing is delivered twice; a server
  never follows its own jobs, so it never re-consumes its own events. If the consumer fell so far
  behind that ``MAXLEN`` trimmed what it had not read, the next entry's seq jumps and the bus is
  told the exact lost range (a :class:`~routilux.bus.Gap`).
- **Following only what is watched.** A remote job is followed only while someone on this server
  asked for it by name (:meth:`EventBus.watches <routilux.bus.EventBus.watches>`: a socket on the
  job or its flow, a subscription naming it), so a server nobody watches reads no job stream at
  all, however busy the others are; cluster-wide figures come from the owners' stored aggregates
  (:mod:`routilux.cluster.figures`), not from relayed events. The bus tells the bridge when a job
  or flow gains its first watcher (``Feeds.on_interest``): a job looked up by the socket code
  (:meth:`lookup`, :meth:`follow`) is followed at once, a flow's running remote jobs from their
  newest event on (found among the jobs the cluster's owners record, ``p:owners``); and while
  any flow is watched here the announcements are read too, so a new job of a watched flow is
  followed from its first event. A job whose watchers left is dropped at the next read; following
  it again starts from its newest event (the socket's snapshot and replay cover the rest). With
  nothing watched the consumer does not read at all: it waits for a watcher.
- **Replay.** :meth:`RedisEventBridge.events_after` reads a remote job's stream by seq (XRANGE),
  for a WebSocket ``?since=`` on a server that never held that job's history.

Why Streams and not Pub/Sub: Pub/Sub forgets a message the moment it is sent, so a server that
reconnects, or a client that asks for replay, could not catch up. A stream keeps the last
``maxlen`` events of each job with their seq as the key — replay and gap detection for free.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict
from datetime import datetime
from typing import Any, Final

import anyio
import msgspec
import redis.asyncio as aioredis
from redis.typing import KeyT, StreamIdT

from routilux.bus import Event, EventBus, Gap
from routilux.engine.records import error_summary
from routilux.store.backoff import Backoff
from routilux.store.redis.connection import is_connection_error
from routilux.store.redis.keys import DEFAULT_PREFIX, Keys
from routilux.store.redis.replies import StreamEntry, stream_entries, stream_reads

log = logging.getLogger("routilux.cluster")

#: Jobs remembered as remote (for the WebSocket id check and snapshots), oldest forgotten first.
REMOTE_JOBS_KEPT: Final = 100_000
READ_COUNT: Final = 1000
#: A job looked up for a socket is followed this long even before the socket's feed (made right
#: after the look-up) says it is watched; then only while it is watched.
FOLLOW_GRACE_SECONDS: Final = 2.0
#: When a flow gains its first watcher, at most this many of its newest remote jobs are checked
#: for still running (one pipelined XREVRANGE each).
FLOW_CANDIDATES: Final = 10_000

_decode_event = msgspec.json.Decoder(Event).decode


class _Owner(msgspec.Struct):
    """The part of a job's owner record (``p:owners``, :class:`routilux.cluster.nodes.Owner`)
    the relay reads."""

    node: str
    flow_id: str
    created_at: datetime


_decode_owner = msgspec.json.Decoder(_Owner).decode


def _seq_of(entry_id: bytes) -> int:
    return int(entry_id.split(b"-", 1)[0])


class RemoteJob(msgspec.Struct, kw_only=True):
    """What this server knows of a job another server runs: enough to admit a WebSocket for it
    and send its ``snapshot`` frame. ``last_seq`` is the last seq delivered to the local bus (or,
    for a job not followed, the newest one a look-up found)."""

    job_id: str
    flow_id: str
    node: str
    last_seq: int = 0
    status: str = "running"
    error: dict[str, Any] | None = None  # as its job_end said
    followed: bool = False  # the consumer reads its stream (while it is watched, until its job_end)
    ended: bool = False  # its job_end was seen: nothing more to follow
    hold_until: float = 0.0  # followed until then even if unwatched (see FOLLOW_GRACE_SECONDS)


class RedisEventBridge:
    """Relays the other servers' job events from Redis to the local bus, for the jobs watched here.

    ``client`` serves the publisher and look-ups; the consumer opens its own connection from the
    same pool, since a blocking XREAD holds its connection for up to ``block_ms``.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        bus: EventBus,
        *,
        maxlen: int,
        node_id: str | None = None,
        prefix: str = DEFAULT_PREFIX,
        block_ms: int = 500,
    ) -> None:
        self.client = client
        self.bus = bus
        self.maxlen = maxlen
        self.node_id = node_id or uuid.uuid4().hex
        self.prefix = prefix
        self.keys = Keys(prefix)
        self.block_ms = block_ms
        self.announcements = self.keys.announcements
        self.remote: OrderedDict[str, RemoteJob] = OrderedDict()
        self.relayed = 0  # remote events re-published on the local bus
        self.gaps = 0  # remote events lost (trimmed before this server read them)
        self.read_errors = 0  # reads from Redis that failed (each retried)
        self._followed: dict[str, RemoteJob] = {}  # the remote jobs whose streams are read
        self._wanted_jobs: set[str] = set()  # gained a watcher: follow if remote, running, not followed
        #: Flows that gained a watcher (and when, by the clock): follow their running remote jobs.
        self._wanted_flows: dict[str, float] = {}
        self._read_scope: anyio.CancelScope | None = None  # the consumer's blocking read
        #: The announcements' cursor while a flow is watched here (None: they are not read).
        self._cursor: str | None = None
        bus.feeds.on_interest = self._interest

    # -- names --------------------------------------------------------------------------------
    def job_stream(self, job_id: str) -> str:
        return self.keys.stream(job_id)

    def is_remote(self, job_id: str) -> bool:
        """Whether ``job_id`` is known to run on another server (so its history is in Redis)."""
        return job_id in self.remote or job_id in self._followed

    @property
    def followed(self) -> int:
        """How many remote jobs' streams this server reads now."""
        return len(self._followed)

    # -- lifetime -----------------------------------------------------------------------------
    async def run(self) -> None:
        """Relay the watched remote jobs' events until cancelled. While Redis cannot be reached
        it retries with a capped, jittered backoff; each stream resumes from the last entry read."""
        await self._consume()

    async def _read_failed(self, exc: Exception, backoff: Backoff) -> None:
        """Log a failed read from Redis and wait before the next: a lost connection at ERROR
        once per outage, anything unexpected with its traceback (the relay goes on either way)."""
        self.read_errors += 1
        delay = backoff.next()
        if not is_connection_error(exc):
            log.exception("relaying events from Redis failed unexpectedly; retrying in %.2fs", delay)
        elif backoff.failures == 1:
            log.error("reading events from Redis failed: %s; retrying (backoff up to %.1fs)", exc, backoff.cap)
        await anyio.sleep(delay)

    async def _announcement_cursor(self) -> str:
        # Jobs announced before a flow was watched are found among the owners' records; from then
        # on every announcement is read.
        last = stream_entries(await self.client.xrevrange(self.announcements, count=1))
        return last[0][0].decode() if last else "0-0"

    # -- consuming ----------------------------------------------------------------------------
    async def _consume(self) -> None:
        backoff = Backoff()
        while True:
            reply = None
            try:
                streams = await self._streams()
                # A new watcher (or lookup()) cancels this read, so a job's events do not wait for
                # the timeout. Nothing is lost by it: a stream read moves no cursor but ours, and
                # redis-py drops the interrupted connection.
                with anyio.CancelScope() as self._read_scope:
                    if not streams:
                        await anyio.sleep_forever()  # nothing watched: until a watcher comes
                    reply = await self.client.xread(streams, count=READ_COUNT, block=self.block_ms)
            except Exception as exc:  # noqa: BLE001 - retried from the same cursors
                self._read_scope = None
                await self._read_failed(exc, backoff)
                continue
            finally:
                self._read_scope = None
            if backoff.failures:
                log.warning("reading events from Redis works again")
                backoff.reset()
            for key, entries in stream_reads(reply):
                name = key.decode()
                if name == self.announcements:
                    for entry_id, fields in entries:
                        self._cursor = entry_id.decode()
                        self._announced(fields)
                else:
                    job_id = self.keys.job_of_stream(name)
                    self._relay(job_id, entries)

    async def _streams(self) -> dict[KeyT, StreamIdT]:
        """What the next read covers: every followed job still watched, and the announcements
        while a flow is watched (jobs and flows that gained a watcher are looked up first)."""
        while self._wanted_jobs or self._wanted_flows:
            await self._follow_wanted()
        if self._cursor is not None and not self.bus.watches_any_flow():
            self._cursor = None
        streams: dict[KeyT, StreamIdT] = {}
        if self._cursor is not None:
            streams[self.announcements] = self._cursor
        now = time.monotonic()
        for job in list(self._followed.values()):
            if self._watched(job, now):
                streams[self.job_stream(job.job_id)] = f"{job.last_seq}-0"
            else:
                self._unfollow(job)
        return streams

    def _watched(self, job: RemoteJob, now: float) -> bool:
        return now < job.hold_until or self.bus.watches(job.job_id, job.flow_id)

    def _start_following(self, job: RemoteJob) -> None:
        job.followed = True
        self._followed[job.job_id] = job
        if self._read_scope is not None:
            self._read_scope.cancel()  # read again, this job's stream included

    def _unfollow(self, job: RemoteJob) -> None:
        job.followed = False
        self._followed.pop(job.job_id, None)

    def _interest(self, job_id: str | None, flow_id: str | None) -> None:
        """The bus: a job or a flow gained its first watcher here."""
        if job_id is not None:
            job = self.remote.get(job_id)
            if job is None or job.followed or job.ended:
                return  # not a remote job we know (lookup() finds those), or nothing to do
            self._wanted_jobs.add(job_id)
        elif flow_id is not None:
            self._wanted_flows.setdefault(flow_id, time.time())
        if self._read_scope is not None:
            self._read_scope.cancel()

    async def _follow_wanted(self) -> None:
        """Follow the remote jobs that gained a watcher, from their newest event on (a job not
        followed until now has an unknown cursor: the watcher's snapshot and replay say the rest)
        — except a job of a watched flow created after the flow gained its watcher: from its
        first event, as its announcement would have had it (it may have come before this read)."""
        jobs, flows = self._wanted_jobs, self._wanted_flows
        self._wanted_jobs, self._wanted_flows = set(), {}
        try:
            candidates = {j: self.remote[j] for j in jobs if j in self.remote}
            if flows:
                if self._cursor is None:  # first, so no job falls between the owners and the announcements
                    self._cursor = await self._announcement_cursor()
                for job in await self._running_in(flows, candidates):
                    if not job.followed:
                        job.last_seq, job.ended = 0, False
                        self._start_following(job)
            wanted = [j for j in candidates.values() if not j.followed and not j.ended]
            if not wanted:
                return
            async with self.client.pipeline(transaction=False) as pipe:
                for job in wanted:
                    pipe.xrevrange(self.job_stream(job.job_id), count=1)
                newest = await pipe.execute()
        except BaseException:
            self._wanted_jobs |= jobs
            for flow_id, since in flows.items():
                self._wanted_flows[flow_id] = min(since, self._wanted_flows.get(flow_id, since))
            raise
        now = time.monotonic()
        for job, reply in zip(wanted, newest, strict=True):
            entries = stream_entries(reply)
            if job.followed:
                continue  # lookup() got there while we awaited: keep its cursor
            if not entries:
                continue  # no event yet: its announcement (read while its flow is watched) starts it
            entry_id, fields = entries[0]
            job.last_seq = _seq_of(entry_id)
            self._observe(job, _decode_event(fields[b"event"]))
            if not job.ended and self._watched(job, now):
                self._start_following(job)

    async def _running_in(self, flows: dict[str, float], found: dict[str, RemoteJob]) -> list[RemoteJob]:
        """Add to ``found`` the other nodes' jobs of ``flows`` their owners record (running, or
        ended and not yet forgotten: the look-up that follows tells), at most
        :data:`FLOW_CANDIDATES`; return instead those created after their flow gained its
        watcher (``flows``: since when), to be read from their first event."""
        new: list[RemoteJob] = []
        async for job_id, raw in self.client.hscan_iter(self.keys.owners, count=1000):
            if len(found) + len(new) >= FLOW_CANDIDATES:
                break
            try:
                owner = _decode_owner(raw)
            except msgspec.MsgspecError:
                continue
            since = flows.get(owner.flow_id)
            if since is None or owner.node == self.node_id:
                continue
            key = job_id.decode()
            job = self.remote.get(key)
            if job is None:
                job = RemoteJob(job_id=key, flow_id=owner.flow_id, node=owner.node)
                self._remember(job)
            if owner.created_at.timestamp() >= since:
                new.append(job)
            else:
                found.setdefault(key, job)
        return new

    def _announced(self, fields: dict[bytes, bytes]) -> None:
        node = fields[b"node"].decode()
        if node == self.node_id:
            return
        job_id = fields[b"job_id"].decode()
        job = self.remote.get(job_id)
        if job is None:
            job = RemoteJob(job_id=job_id, flow_id=fields[b"flow_id"].decode(), node=node)
            self._remember(job)
        if not job.followed and not job.ended and job.last_seq == 0 and self.bus.watches_flow(job.flow_id):
            self._start_following(job)  # from its first event: a flow socket sees it all

    def _remember(self, job: RemoteJob) -> None:
        self.remote[job.job_id] = job
        while len(self.remote) > REMOTE_JOBS_KEPT:
            self.remote.popitem(last=False)  # a followed job stays followed (and remote) until it ends

    def _relay(self, job_id: str, entries: list[StreamEntry]) -> None:
        job = self._followed.get(job_id)
        if job is None:
            return
        if not self._watched(job, time.monotonic()):
            self._unfollow(job)  # its last watcher left while we read
            return
        for entry_id, fields in entries:
            seq = _seq_of(entry_id)
            if seq <= job.last_seq:  # cannot happen with XREAD from last_seq; belt and braces
                continue
            if seq > job.last_seq + 1:
                self.gaps += seq - job.last_seq - 1
                self.bus.publish_gap(Gap(job_id=job_id, from_seq=job.last_seq + 1, to_seq=seq - 1), job.flow_id)
            event = _decode_event(fields[b"event"])
            job.last_seq = seq
            self._observe(job, event)
            self.relayed += 1
            self.bus.publish(event)
            if job.ended:
                self._unfollow(job)
                break

    @staticmethod
    def _observe(job: RemoteJob, event: Event) -> None:
        if event.type == "job_end":
            job.status = str(event.data.get("status", "completed"))
            job.error = event.data.get("error")
            job.ended = True
        elif event.type in ("job_pause", "job_idle", "job_resume", "job_start"):
            job.status = {"job_pause": "paused", "job_idle": "idle"}.get(event.type, "running")

    # -- look-ups -----------------------------------------------------------------------------
    async def lookup(self, job_id: str) -> RemoteJob | None:
        """The remote job ``job_id``, asking Redis if this server does not follow it (it was
        announced before this server started, or nobody here watched it). A job found running
        is followed from its newest event on — for :data:`FOLLOW_GRACE_SECONDS`, then while it is
        watched; a replay fills in what came before."""
        job = self.remote.get(job_id) or self._followed.get(job_id)
        if job is not None and (job.followed or job.ended):
            job.hold_until = max(job.hold_until, time.monotonic() + FOLLOW_GRACE_SECONDS)
            return job
        last = stream_entries(await self.client.xrevrange(self.job_stream(job_id), count=1))
        if not last:
            return None
        entry_id, fields = last[0]
        raced = self.remote.get(job_id)
        if raced is not None and (raced.followed or raced.ended):
            # another look-up (or a watcher) got there while we awaited: keep its cursor, or the
            # consumer would relay some events twice
            raced.hold_until = max(raced.hold_until, time.monotonic() + FOLLOW_GRACE_SECONDS)
            return raced
        if fields[b"node"].decode() == self.node_id:
            return None  # ours, yet unknown to the engine and the store: treat as unknown
        event = _decode_event(fields[b"event"])
        if raced is None:
            raced = RemoteJob(job_id=job_id, flow_id=event.flow_id, node=fields[b"node"].decode())
            self._remember(raced)
        raced.last_seq = _seq_of(entry_id)
        self._observe(raced, event)
        if not raced.ended:
            raced.hold_until = time.monotonic() + FOLLOW_GRACE_SECONDS
            self._start_following(raced)
        return raced

    def follow(self, job_id: str, flow_id: str, node: str, *, after: int = 0) -> RemoteJob:
        """Relay ``job_id`` (which ``node`` runs) from its first event on (a job so new that its
        stream does not exist yet; sockets drop what their snapshot already covered), or after
        seq ``after`` (a job that moved from this server to ``node``)."""
        job = self.remote.get(job_id)
        if job is None:
            job = RemoteJob(job_id=job_id, flow_id=flow_id, node=node, last_seq=after)
            self._remember(job)
        job.hold_until = max(job.hold_until, time.monotonic() + FOLLOW_GRACE_SECONDS)
        if not job.followed and not job.ended:
            self._start_following(job)
        return job

    async def take_over(self, job_id: str) -> None:
        """``job_id`` moved to this server: relay what is left of its stream, then stop following
        it (its events are published here from now on, and recorded here)."""
        job = self._followed.get(job_id) or self.remote.get(job_id)
        if job is not None and job.followed:
            entries = stream_entries(
                await self.client.xrange(self.job_stream(job_id), min=f"{job.last_seq + 1}-0", max="+")
            )
            self._relay(job_id, entries)  # skips what the consumer relayed meanwhile
            self._unfollow(job)
        self.remote.pop(job_id, None)

    async def events_after(self, job_id: str, since: int, count: int = 1000) -> list[tuple[int, str, bytes]]:
        """Up to ``count`` events of ``job_id`` after seq ``since``, from its stream, as
        ``(seq, type, json)`` in order (what the replay of a local job reads from its store)."""
        entries = stream_entries(
            await self.client.xrange(self.job_stream(job_id), min=f"{since + 1}-0", max="+", count=count)
        )
        out: list[tuple[int, str, bytes]] = []
        for entry_id, fields in entries:
            payload = fields[b"event"]
            out.append((_seq_of(entry_id), _decode_event(payload).type, payload))
        return out


def snapshot_state(job: RemoteJob) -> dict[str, Any]:
    """The fields of a WebSocket ``snapshot`` frame for a remote job. Routine states live on
    the owner; until control forwarding exists this server can only say what its events said."""
    return {"status": job.status, "flow_id": job.flow_id, "last_seq": job.last_seq,
            "routine_states": {}, "error": error_summary(job.error), "error_detail": job.error}


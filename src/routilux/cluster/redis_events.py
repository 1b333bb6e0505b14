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
  the announcement stream and the streams of the remote jobs it follows, and re-publishes their
  events on the local bus: WebSocket sessions and the metrics aggregator see them as if the job
  ran here. Per-job order is the stream's order; a job is read from one cursor only, so nothing is
  delivered twice; a server never follows its own jobs, so it never re-consumes its own events. If
  the consumer fell so far behind that ``MAXLEN`` trimmed what it had not read, the next entry's
  seq jumps and the bus is told the exact lost range (a :class:`~routilux.bus.Gap`).
- **Replay.** :meth:`RedisEventBridge.events_after` reads a remote job's stream by seq (XRANGE),
  for a WebSocket ``?since=`` on a server that never held that job's history.

Why Streams and not Pub/Sub: Pub/Sub forgets a message the moment it is sent, so a server that
reconnects, or a client that asks for replay, could not catch up. A stream keeps the last
``maxlen`` events of each job with their seq as the key — replay and gap detection for free.
"""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict
from typing import Any, Final

import anyio
import msgspec
import redis.asyncio as aioredis
from redis.typing import KeyT, StreamIdT

from routilux.bus import Event, EventBus, Gap
from routilux.engine.records import error_summary
from routilux.store.redis.keys import DEFAULT_PREFIX, Keys
from routilux.store.redis.replies import StreamEntry, stream_entries, stream_reads

log = logging.getLogger("routilux.cluster")

#: Jobs remembered as remote (for the WebSocket id check and snapshots), oldest forgotten first.
REMOTE_JOBS_KEPT: Final = 100_000
READ_COUNT: Final = 1000

_decode_event = msgspec.json.Decoder(Event).decode


def _seq_of(entry_id: bytes) -> int:
    return int(entry_id.split(b"-", 1)[0])


class RemoteJob(msgspec.Struct, kw_only=True):
    """What this server knows of a job another server runs: enough to admit a WebSocket for it
    and send its ``snapshot`` frame. ``last_seq`` is the last seq delivered to the local bus."""

    job_id: str
    flow_id: str
    node: str
    last_seq: int = 0
    status: str = "running"
    error: dict[str, Any] | None = None  # as its job_end said
    followed: bool = False  # the consumer reads its stream (until its job_end)


class RedisEventBridge:
    """Relays the other servers' job events from Redis to the local bus.

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
        self._read_scope: anyio.CancelScope | None = None  # the consumer's blocking read

    # -- names --------------------------------------------------------------------------------
    def job_stream(self, job_id: str) -> str:
        return self.keys.stream(job_id)

    def is_remote(self, job_id: str) -> bool:
        """Whether ``job_id`` is known to run on another server (so its history is in Redis)."""
        return job_id in self.remote

    # -- lifetime -----------------------------------------------------------------------------
    async def run(self) -> None:
        """Relay the other servers' events until cancelled."""
        await self._consume(await self._announcement_cursor())

    async def _announcement_cursor(self) -> str:
        # Jobs announced before this server started are found on demand (lookup()); from now on
        # every announcement is read.
        last = stream_entries(await self.client.xrevrange(self.announcements, count=1))
        return last[0][0].decode() if last else "0-0"

    # -- consuming ----------------------------------------------------------------------------
    async def _consume(self, announcement_cursor: str) -> None:
        cursor = announcement_cursor
        while True:
            streams: dict[KeyT, StreamIdT] = {self.announcements: cursor}
            for job in self.remote.values():
                if job.followed:
                    streams[self.job_stream(job.job_id)] = f"{job.last_seq}-0"
            reply = None
            try:
                # lookup() cancels this read when it starts following a job, so the job's events
                # do not wait for the timeout. Nothing is lost by it: a stream read moves no
                # cursor but ours, and redis-py drops the interrupted connection.
                with anyio.CancelScope() as self._read_scope:
                    reply = await self.client.xread(streams, count=READ_COUNT, block=self.block_ms)
            except (aioredis.RedisError, OSError) as exc:
                log.error("reading events from Redis failed: %s; retrying", exc)
                await anyio.sleep(1)
                continue
            finally:
                self._read_scope = None
            for key, entries in stream_reads(reply):
                name = key.decode()
                if name == self.announcements:
                    for entry_id, fields in entries:
                        cursor = entry_id.decode()
                        self._announced(fields)
                else:
                    job_id = self.keys.job_of_stream(name)
                    self._relay(job_id, entries)

    def _announced(self, fields: dict[bytes, bytes]) -> None:
        node = fields[b"node"].decode()
        if node == self.node_id:
            return
        job_id = fields[b"job_id"].decode()
        if job_id not in self.remote:
            self._remember(RemoteJob(job_id=job_id, flow_id=fields[b"flow_id"].decode(), node=node, followed=True))

    def _remember(self, job: RemoteJob) -> None:
        self.remote[job.job_id] = job
        while len(self.remote) > REMOTE_JOBS_KEPT:
            self.remote.popitem(last=False)

    def _relay(self, job_id: str, entries: list[StreamEntry]) -> None:
        job = self.remote.get(job_id)
        if job is None or not job.followed:
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
            if event.type == "job_end":
                job.followed = False
                break

    @staticmethod
    def _observe(job: RemoteJob, event: Event) -> None:
        if event.type == "job_end":
            job.status = str(event.data.get("status", "completed"))
            job.error = event.data.get("error")
        elif event.type in ("job_pause", "job_idle", "job_resume", "job_start"):
            job.status = {"job_pause": "paused", "job_idle": "idle"}.get(event.type, "running")

    # -- look-ups -----------------------------------------------------------------------------
    async def lookup(self, job_id: str) -> RemoteJob | None:
        """The remote job ``job_id``, asking Redis if this server has not heard of it (it was
        announced before this server started). A job found this way and still running is
        followed from its newest event on; a replay fills in what came before."""
        job = self.remote.get(job_id)
        if job is not None:
            return job
        last = stream_entries(await self.client.xrevrange(self.job_stream(job_id), count=1))
        if not last:
            return None
        entry_id, fields = last[0]
        raced = self.remote.get(job_id)
        if raced is not None:  # another look-up (or an announcement) got there while we awaited:
            return raced  # keep its cursor, or the consumer would relay some events twice
        if fields[b"node"].decode() == self.node_id:
            return None  # ours, yet unknown to the engine and the store: treat as unknown
        event = _decode_event(fields[b"event"])
        job = RemoteJob(job_id=job_id, flow_id=event.flow_id, node=fields[b"node"].decode(),
                        last_seq=_seq_of(entry_id))
        self._observe(job, event)
        job.followed = event.type != "job_end"
        self._remember(job)
        if job.followed and self._read_scope is not None:
            self._read_scope.cancel()  # read again, this job's stream included
        return job

    def follow(self, job_id: str, flow_id: str, node: str, *, after: int = 0) -> RemoteJob:
        """Relay ``job_id`` (which ``node`` runs) from its first event on (a job so new that its
        stream does not exist yet; sockets drop what their snapshot already covered), or after
        seq ``after`` (a job that moved from this server to ``node``)."""
        job = self.remote.get(job_id)
        if job is None:
            job = RemoteJob(job_id=job_id, flow_id=flow_id, node=node, followed=True, last_seq=after)
            self._remember(job)
            if self._read_scope is not None:
                self._read_scope.cancel()  # read again, this job's stream included
        return job

    async def take_over(self, job_id: str) -> None:
        """``job_id`` moved to this server: relay what is left of its stream, then stop following
        it (its events are published here from now on, and recorded here)."""
        job = self.remote.get(job_id)
        if job is not None and job.followed:
            entries = stream_entries(
                await self.client.xrange(self.job_stream(job_id), min=f"{job.last_seq + 1}-0", max="+")
            )
            self._relay(job_id, entries)  # skips what the consumer relayed meanwhile
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


"""The Redis store: its connection, the batches it writes and the contract's methods.

Writes go through the store's :class:`~routilux.store.batch_writer.BatchWriter`: a batch is ONE
pipeline of script calls, in queue order — the records' (:mod:`~routilux.store.redis.batches`)
and the awaited operations' (a job's start with its owner entry, a post, a checkpoint). Each call
succeeds or is refused on its own, so one operation's failure never fails the records or the
operations beside it. The few operations of several dependent steps (prune, ``mark_interrupted``)
run alone. Reads go straight to Redis, one round trip each (a MULTI/EXEC pair or a Lua script),
and see what has been written.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Final, TypeVar, cast
from urllib.parse import urlsplit

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from routilux.store import _codec
from routilux.store.base import (
    PRUNE_BATCH,
    CheckpointRecord,
    FlowRecord,
    JobQuery,
    JobRecord,
    RuntimeRecord,
    StoreCounts,
    StoredEvent,
    StoredPost,
)
from routilux.store.batch_writer import Op, Written
from routilux.store.batched import BatchedStore
from routilux.store.errors import (
    FlowRevisionConflict,
    OwnershipLost,
    StoreClosedError,
    StoreError,
    StoreUnreachable,
    check_expected_revision,
)
from routilux.store.redis import records
from routilux.store.redis.batches import JOBS_PER_SCRIPT, BatchCalls, Call
from routilux.store.redis.connection import (
    client_location,
    client_password,
    decodes_responses,
    is_connection_error,
    new_client,
    redacted_url,
)
from routilux.store.redis.keys import DEFAULT_PREFIX, Keys, fence_token
from routilux.store.redis.pipeline import PipelinedWrite, call, pipelined, raise_first, run_calls, write_pipelined
from routilux.store.redis.reachability import submit, waited_for
from routilux.store.redis.scripts import (
    ACTIVE_JOBS,
    ALL_METRICS,
    CLAIM_JOB,
    DELETE_FLOW,
    DELETE_JOBS,
    LIST_JOBS,
    PRUNE_JOBS,
    PUT_FLOW,
    PUT_IF_LIVE,
    PUT_METRICS,
    READ_EVENTS,
    SCRIPTS,
    Script,
)
from routilux.store.segments import EventsBySeq

log = logging.getLogger("routilux.store")

T = TypeVar("T")

#: How often ``mark_interrupted`` re-reads jobs that changed under it before giving up.
_MARK_ROUNDS: Final = 10


class RedisStore(BatchedStore[EventsBySeq]):
    """The :class:`~routilux.store.base.Store` contract on Redis (see :mod:`routilux.store.redis`).

    ``client_or_url`` is a ``redis.asyncio.Redis`` client (shared with the rest of the server:
    the store never closes it) or a ``redis://``, ``rediss://`` or ``unix://`` URL (the store
    creates its client in :meth:`open` and closes it in :meth:`close`). ``prefix`` namespaces
    every key; ``node_id`` is written with each event (the event bridge uses it to tell its own
    jobs from the others'). ``batch_max`` bounds the records one pipeline carries;
    ``max_pending_events`` bounds the events waiting for the writer.
    """

    def __init__(
        self,
        client_or_url: aioredis.Redis | str,
        *,
        events_per_job: int = 10_000,
        prefix: str = DEFAULT_PREFIX,
        node_id: str = "",
        batch_max: int = 2_000,
        max_pending_events: int = 200_000,
        fence_writes: bool = False,
    ) -> None:
        if events_per_job < 1 or batch_max < 1 or max_pending_events < 1:
            raise ValueError("events_per_job, batch_max and max_pending_events must be >= 1")
        if not prefix:
            raise ValueError("a RedisStore needs a non-empty key prefix")
        self._url: str | None
        self._client: aioredis.Redis | None
        self._password: str | None
        if isinstance(client_or_url, str):
            self._url, self._client, self._owns_client = client_or_url, None, True
            location = redacted_url(client_or_url)
            self._password = urlsplit(client_or_url).password
        else:
            if decodes_responses(client_or_url):
                raise ValueError("RedisStore needs a client with decode_responses=False (payloads are bytes)")
            self._url, self._client, self._owns_client = None, client_or_url, False
            location = client_location(client_or_url)
            self._password = client_password(client_or_url)
        super().__init__(location, EventsBySeq, events_per_job=events_per_job, batch_max=batch_max,
                         max_pending_events=max_pending_events)
        self.prefix = prefix
        self.node_id = node_id
        self._keys = Keys(prefix)
        #: In a cluster (``fence_writes``): this node's fence token, checked against each job's owner
        #: entry in every write script (see ``_FENCE_LUA``); "" writes unchecked.
        self._token = fence_token(node_id) if fence_writes else ""
        #: Told the ids of jobs whose batched writes (records, events) were refused because another
        #: node owns them now: the server stops running them (set by the cluster node).
        self.on_fenced: Callable[[list[str]], object] | None = None
        self._calls = BatchCalls(self._keys, node_id=node_id, events_per_job=events_per_job, location=location,
                                 token=self._token, scrub=self._scrub)

    def __repr__(self) -> str:
        return f"RedisStore({self.location!r}, prefix={self.prefix!r})"

    # -- the connection --------------------------------------------------------------------
    async def _connect(self) -> None:
        """Create the client (from a URL), PING and load the scripts."""
        if self._client is None:
            assert self._url is not None
            try:
                self._client = new_client(self._url)
            except (ValueError, RedisError) as exc:
                raise StoreError(f"{self.location} is not a usable Redis URL: {self._scrub(exc)}",
                                 location=self.location) from None
        try:
            await self._greet()
        except BaseException:
            await self._disconnect()
            raise

    async def _greet(self) -> None:
        """PING, so a wrong URL or a stopped server fails at start-up with a clear message, and
        load the scripts (in the same round trip) so the first batch finds them."""
        pipe = self.client.pipeline(transaction=False)
        pipe.ping()
        for script in SCRIPTS:
            pipe.script_load(script.source)
        try:
            await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreError(
                f"cannot reach Redis at {self.location}: {self._scrub(exc)} (is the server running, "
                "and are the URL, password and TLS settings right?)",
                location=self.location,
            ) from None

    async def _disconnect(self) -> None:
        """Close the client if the store created it."""
        if self._owns_client and self._client is not None:
            client, self._client = self._client, None
            try:
                await client.aclose()
            except (RedisError, OSError):  # pragma: no cover - closing a broken connection
                log.warning("closing the Redis client of %s failed", self.location, exc_info=True)

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            raise StoreClosedError(f"the store at {self.location} has no connection", location=self.location)
        return self._client

    # -- errors ----------------------------------------------------------------------------
    def _scrub(self, exc: BaseException) -> str:
        text = str(exc) or type(exc).__name__
        return text.replace(self._password, "***") if self._password else text

    def _failed(self, what: str, exc: BaseException) -> StoreError:
        kind = StoreUnreachable if is_connection_error(exc) else StoreError
        return kind(f"{what} at {self.location}: {self._scrub(exc)}", location=self.location,
                    redis_error=type(exc).__name__)

    @contextmanager
    def _redis_errors(self, what: str) -> Iterator[None]:
        """Turn a Redis or socket failure, or a stored value this code cannot read, into a :class:`StoreError`
        naming the server (an API client sees a clear message, never a traceback)."""
        try:
            yield
        except (RedisError, OSError) as exc:
            raise self._failed(what, exc) from None
        except msgspec.DecodeError as exc:  # includes ValidationError
            raise StoreError(
                f"{what} at {self.location}: a stored value under the prefix {self.prefix!r} is not "
                f"what Routilux writes (written by another program or version?): {exc}",
                location=self.location,
            ) from None

    def _retryable(self, exc: Exception) -> bool:
        """Redis lost or loading its data: write the batch again later (writes are idempotent)."""
        return is_connection_error(exc)

    def _write_error(self, exc: Exception) -> StoreError:
        """Why a whole batch failed (the writer reports it with the batch's lost records)."""
        if isinstance(exc, (RedisError, OSError)):
            return self._failed("a write failed", exc)
        return StoreError(f"a write to {self.location} failed: {exc!r}", location=self.location)

    # -- scripts ---------------------------------------------------------------------------
    async def _eval(self, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run one script now (a read, or a step of an operation that runs alone)."""
        return raise_first(await run_calls(self.client, [call(script, keys, args)]))[0]

    # -- writing ---------------------------------------------------------------------------
    async def _submit(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Await ``fn(*args)`` in the writer, alone, behind everything queued (a request's: see
        :func:`~routilux.store.redis.reachability.submit`)."""
        return cast(T, await submit(lambda: self.client, self._enqueue_alone, fn, *args, location=self.location))

    async def _enqueue_alone(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        return await self._enqueue(fn, *args, alone=True)

    async def _write(self, calls: list[Call], finish: Callable[[list[Any]], T]) -> T:
        """An awaited write as script ``calls`` in the writer's next pipeline (with the records
        and operations beside it); ``finish(replies)`` makes its result of their replies, or
        raises (each reply is the script's result: an error reply fails the operation first).
        A request's write that Redis' silence made it give up is left out of the pipeline."""
        write = PipelinedWrite(calls)
        return cast(T, await waited_for(lambda: self.client, lambda: self._enqueue(finish, write), write.give_up,
                                        location=self.location))

    async def _write_batch(self, batch: list[EventsBySeq | Op]) -> Written:
        """Write a batch: one operation that runs alone, or everything in ONE pipeline."""
        if len(batch) == 1 and isinstance(batch[0], Op) and batch[0].alone:
            await self._run_op(batch[0])
            return Written(1, 0)
        written, fenced = await write_pipelined(self.client, batch, self._calls,
                                                lambda exc: self._failed("a write failed", exc))
        if fenced:
            self._fenced(fenced)
        return written

    async def _run_op(self, op: Op) -> None:
        if op.fn is None:
            return
        try:
            with self._redis_errors("a write failed"):
                op.result = await op.fn(*op.args)
        except StoreUnreachable:
            raise  # the batch fails here, the operations after this one at once (not one timeout each)
        except Exception as exc:  # noqa: BLE001 - the op's caller gets it (e.g. FlowRevisionConflict)
            op.error = exc
        op.committed = True

    def _fenced(self, job_ids: list[str]) -> None:
        """Writes for ``job_ids`` were refused: another node owns them now."""
        log.warning("%s: %d job(s) are owned by another node now; their writes from here were refused: %s",
                    self.location, len(job_ids), ", ".join(sorted(set(job_ids))[:10]))
        if self.on_fenced is not None:
            self.on_fenced(sorted(set(job_ids)))

    # -- flows -----------------------------------------------------------------------------
    async def put_flow(self, record: FlowRecord, *, expected_revision: int | None = None) -> None:
        """See :meth:`Store.put_flow`: the revision check and the write are one Lua script."""
        self._check_open()
        record = _codec.check_flow(record)
        check_expected_revision(expected_revision)
        expected = "" if expected_revision is None else str(expected_revision)
        args = [record.flow_id, expected, str(record.revision), records.encode(record)]
        await self._write([call(PUT_FLOW, self._keys.flow_keys, args)],
                          lambda replies: self._check_revision(record.flow_id, expected_revision, *replies[0]))

    def _check_revision(self, flow_id: str, expected: int | None, done: int, current: bytes | int) -> None:
        """Raise :class:`FlowRevisionConflict` if a flow script refused (``done`` 0): ``current``
        is then the stored revision, empty if the flow does not exist."""
        if not done:
            assert expected is not None
            raise FlowRevisionConflict(flow_id, expected_revision=expected,
                                       current_revision=int(current) if current else None, location=self.location)

    async def get_flow(self, flow_id: str) -> FlowRecord | None:
        self._check_open()
        with self._redis_errors("reading a flow failed"):
            data = await self.client.hget(self._keys.flows, flow_id)
            return None if data is None else records.decode_flow(data)

    async def list_flows(self) -> list[FlowRecord]:
        self._check_open()
        with self._redis_errors("listing flows failed"):
            stored = await self.client.hgetall(self._keys.flows)
            return [records.decode_flow(stored[k]) for k in sorted(stored)]  # bytes order is code point order

    async def delete_flow(self, flow_id: str, expected_revision: int | None = None) -> bool:
        """Forget a flow (its jobs stay); ``expected_revision`` as in :meth:`put_flow`."""
        self._check_open()
        check_expected_revision(expected_revision)
        expected = "" if expected_revision is None else str(expected_revision)

        def deleted(replies: list[Any]) -> bool:
            done, result = replies[0]
            self._check_revision(flow_id, expected_revision, done, result)
            return bool(result)

        return await self._write([call(DELETE_FLOW, self._keys.flow_keys, [flow_id, expected])], deleted)

    # -- jobs ------------------------------------------------------------------------------
    async def put_job(self, record: JobRecord, *, checkpoint: CheckpointRecord | None = None) -> None:
        """The record (and the checkpoint) in the writer's next pipeline."""
        self._check_open()
        record = _codec.check_job(record)
        stored = None if checkpoint is None else _codec.check_checkpoint(checkpoint)
        await self._write(self._job_calls(record, stored),
                          lambda replies: self._check_job_written(record.job_id, replies))

    async def claim_job(self, job_id: str, owner: bytes) -> None:
        """A cluster node is about to start ``job_id``: its owner entry (``p:owners`` and this
        node's job set), in the writer's next pipeline (shared with the writes beside it) and so
        before any event of the job: a server that finds the job's announcement finds its owner."""
        self._check_open()
        claim = call(CLAIM_JOB, (self._keys.owners, self._keys.node_jobs(self.node_id)), (job_id, owner))
        await self._write([claim], lambda replies: None)

    def _job_calls(self, record: JobRecord, checkpoint: CheckpointRecord | None) -> list[Call]:
        """The upsert of ``record``, then the write of ``checkpoint`` (refused if the job ended)."""
        calls = self._calls.upserts([records.job_args(record)])
        if checkpoint is not None:
            calls.append(self._put_if_live_call(self._keys.checkpoints, record.job_id, record.job_id,
                                                records.encode(checkpoint)))
        return calls

    def _put_if_live_call(self, key: str, job_id: str, field: str | int, value: bytes) -> Call:
        return call(PUT_IF_LIVE, (self._keys.finished, key, self._keys.owners), (job_id, field, value, self._token))

    def _check_job_written(self, job_id: str, replies: list[Any]) -> None:
        """:class:`OwnershipLost` if a write of ``job_id`` was refused because another node owns
        it now (an upsert's ``[skipped, fenced]`` names it, a PUT_IF_LIVE answers -1)."""
        if any(reply == -1 or (isinstance(reply, list) and reply[1]) for reply in replies):
            self._refused([job_id])

    def _refused(self, job_ids: list[str]) -> None:
        """Writes for ``job_ids`` were fenced off: :class:`OwnershipLost`."""
        self._fenced(job_ids)
        raise OwnershipLost(f"job {job_ids[0]} is owned by another server now: this one no longer writes for it",
                            location=self.location, job_id=job_ids[0])

    async def _put_if_live(self, key: str, job_id: str, field: str | int, value: bytes) -> None:
        """PUT_IF_LIVE in the writer's next pipeline; :class:`OwnershipLost` if fenced off."""
        await self._write([self._put_if_live_call(key, job_id, field, value)],
                          lambda replies: self._check_job_written(job_id, replies))

    async def _put_jobs_if(self, jobs: list[JobRecord], cas: list[bytes]) -> list[str]:
        """Upsert ``jobs``, each only if its stored record is still ``cas[i]`` (the state left
        alone); returns the ids skipped by their ``cas``. :class:`OwnershipLost` if another node
        owns one of them now (the others are written)."""
        encoded = [records.job_args(job, old, with_state=False) for job, old in zip(jobs, cas, strict=True)]
        results = raise_first(await run_calls(self.client, self._calls.upserts(encoded)))
        if fenced := [records.text(job_id) for _skipped, refused in results for job_id in refused]:
            self._refused(fenced)
        return [records.text(job_id) for skipped, _refused in results for job_id in skipped]

    async def get_job(self, job_id: str) -> JobRecord | None:
        """One round trip: the record and its state in one MULTI/EXEC (a consistent pair)."""
        self._check_open()
        with self._redis_errors("reading a job failed"):
            pipe = self.client.pipeline(transaction=True)
            pipe.hget(self._keys.records, job_id)
            pipe.hget(self._keys.states, job_id)
            record, state = await pipe.execute()
            if record is None:
                return None
            return records.decode_job(record if state is None else records.with_state(record, state))

    async def list_jobs(self, query: JobQuery) -> tuple[list[JobRecord], int]:
        """One Lua script: pick the index (or intersect several), count, page, fetch records."""
        self._check_open()
        query = _codec.check_query(query)
        keys = [self._keys.records, self._keys.states, self._keys.scratch, *self._keys.indexes(query)]
        args = [query.offset, query.limit, "1" if query.with_state else "0", *sorted(query.exclude)]
        with self._redis_errors("listing jobs failed"):
            total, page = await self._eval(LIST_JOBS, keys, args)
            return records.decode_jobs(page), int(total)

    async def delete_jobs(self, job_ids: Sequence[str]) -> int:
        self._check_open()
        ids = sorted(set(job_ids))
        if not ids:
            return await self._submit(_zero)
        return await self._submit(self._delete_jobs, ids)

    async def _delete_jobs(self, ids: list[str]) -> int:
        chunks = [ids[i : i + JOBS_PER_SCRIPT] for i in range(0, len(ids), JOBS_PER_SCRIPT)]
        calls = [call(DELETE_JOBS, (), [self.prefix, *chunk]) for chunk in chunks]
        counts = raise_first(await run_calls(self.client, calls))
        return sum(int(n) for n in counts)

    async def prune_jobs(
        self, *, keep: int | None = None, ended_before: datetime | None = None, limit: int = PRUNE_BATCH
    ) -> list[str]:
        """See :meth:`Store.prune_jobs`: one script reads ``p:idx:finished`` (ZCARD, ZCOUNT,
        ZRANGE of what goes) and deletes those jobs, atomically."""
        self._check_open()
        ended_before = _codec.check_prune(keep, ended_before, limit)
        cutoff = "" if ended_before is None else str(_codec.to_us(ended_before))
        args = [self.prefix, "" if keep is None else str(keep), cutoff, limit]
        ids: list[bytes] = await self._write([call(PRUNE_JOBS, (), args)], lambda replies: replies[0])
        return [records.text(job_id) for job_id in ids]

    async def mark_interrupted(self, reason: str, *, keep: Collection[str] = ()) -> list[str]:
        """See :meth:`Store.mark_interrupted`. Reads only ``p:idx:active``; each job is rewritten
        only if its record is still what was read (compare-and-set in the upsert script, which
        also drops the checkpoints and posts of the jobs it ends), and the ones that changed
        meanwhile (another process wrote them) are read again."""
        self._check_open()
        return await self._submit(self._mark_interrupted, reason, datetime.now(UTC), frozenset(keep))

    async def _mark_interrupted(self, reason: str, now: datetime, keep: frozenset[str]) -> list[str]:
        error = {"type": "interrupted", "message": reason}
        marked: list[str] = []
        for _ in range(_MARK_ROUNDS):
            _ids, metas = await self._eval(ACTIVE_JOBS, (self._keys.active, self._keys.records), ())
            read = [(meta, job) for meta in metas if meta is not None
                    if (job := records.decode_job(meta)).job_id not in keep]
            if not read:
                return marked
            jobs = [msgspec.structs.replace(r, status="failed", error=error, completed_at=now) for _, r in read]
            skipped = set(await self._put_jobs_if(jobs, [meta for meta, _ in read]))
            marked.extend(r.job_id for r in jobs if r.job_id not in skipped)
            if not skipped:
                return marked
        raise StoreError(
            f"mark_interrupted at {self.location}: jobs kept changing while being marked "
            f"({_MARK_ROUNDS} rounds); is another server still running them?",
            location=self.location,
        )

    async def counts(self) -> StoreCounts:
        self._check_open()
        with self._redis_errors("counting failed"):
            pipe = self.client.pipeline(transaction=True)
            pipe.hlen(self._keys.flows)
            pipe.hlen(self._keys.records)
            flows, jobs = await pipe.execute()
        return StoreCounts(flow_count=int(flows), job_count=int(jobs))

    # -- runtimes --------------------------------------------------------------------------
    async def probe_writes(self) -> None:
        self._check_open()
        await self._submit(self.client.set, self._keys.write_probe, b"1")

    async def put_runtime(self, record: RuntimeRecord) -> None:
        self._check_open()
        record = _codec.check_runtime(record)
        await self._submit(self.client.hset, self._keys.runtimes, record.runtime_id, records.encode(record))

    async def list_runtimes(self) -> list[RuntimeRecord]:
        self._check_open()
        with self._redis_errors("listing runtimes failed"):
            runtimes = [records.decode_runtime(data) for data in await self.client.hvals(self._keys.runtimes)]
        runtimes.sort(key=lambda r: (r.created_at, r.runtime_id))
        return runtimes

    # -- events ----------------------------------------------------------------------------
    def _check_events(self, events: list[StoredEvent]) -> None:
        """Seqs start at 1 in a Redis store (a stream id is greater than ``0-0``)."""
        for event in events:
            if event.seq < 1:
                raise ValueError(f"StoredEvent.seq must be >= 1 in a Redis store (got {event.seq})")

    async def events_since(self, job_id: str, since: int = 0, limit: int = 1000) -> list[StoredEvent]:
        """XRANGE from ``(since+1)-0`` (the stream's ids are the seqs), packed by a script."""
        self._check_open()
        _codec.check_limit(limit)
        if limit == 0:
            return []
        start = f"{since + 1}-0" if since >= 0 else "-"
        with self._redis_errors("reading events failed"):
            blob = await self._eval(READ_EVENTS, [self._keys.stream(job_id)], [start, limit])
        return records.parse_events(job_id, blob)

    async def last_event_seqs(self, job_ids: Collection[str]) -> dict[str, int]:
        """``XREVRANGE <stream> + - COUNT 1`` per job (a stream's ids are the seqs), pipelined."""
        self._check_open()
        ids = list(job_ids)
        with self._redis_errors("reading the last events failed"):
            newest = await pipelined(self.client, ids, lambda pipe, j: pipe.xrevrange(self._keys.stream(j), count=1))
        return {
            job_id: records.stream_seq(entries[0][0]) for job_id, entries in zip(ids, newest, strict=True) if entries
        }

    # -- job metrics -----------------------------------------------------------------------
    async def put_job_metrics(self, items: Sequence[tuple[str, str, bytes]]) -> None:
        """Store blobs (the flow id is not kept: nothing reads metrics by flow)."""
        self._check_open()
        args: list[Any] = []
        for job_id, _flow_id, data in items:
            args.extend((job_id, bytes(data)))
        if args:
            await self._write([call(PUT_METRICS, self._keys.metrics_keys, args)], lambda replies: None)

    async def get_job_metrics(self, job_id: str) -> bytes | None:
        self._check_open()
        with self._redis_errors("reading job metrics failed"):
            data = await self.client.hget(self._keys.metrics, job_id)
        return None if data is None else bytes(cast(bytes, data))  # the client does not decode

    async def all_job_metrics(self) -> list[bytes]:
        self._check_open()
        with self._redis_errors("reading job metrics failed"):
            blobs = await self._eval(ALL_METRICS, self._keys.metrics_keys[:2], ())
        return [bytes(blob) for blob in blobs]

    # -- checkpoints and posts -------------------------------------------------------------
    # Writes: one PUT_IF_LIVE script each (refused for a finished job, whose upsert drops both).
    async def put_checkpoint(self, record: CheckpointRecord) -> None:
        self._check_open()
        record = _codec.check_checkpoint(record)
        await self._put_if_live(self._keys.checkpoints, record.job_id, record.job_id, records.encode(record))

    async def get_checkpoint(self, job_id: str) -> CheckpointRecord | None:
        self._check_open()
        with self._redis_errors("reading a checkpoint failed"):
            data = await self.client.hget(self._keys.checkpoints, job_id)
            return None if data is None else records.decode_checkpoint(data)

    async def list_checkpoints(self) -> list[CheckpointRecord]:
        """The checkpoints of ``p:idx:active`` (oldest job first), in one script."""
        self._check_open()
        with self._redis_errors("listing checkpoints failed"):
            _ids, blobs = await self._eval(ACTIVE_JOBS, (self._keys.active, self._keys.checkpoints), ())
            return [records.decode_checkpoint(blob) for blob in blobs if blob is not None]

    async def append_post(self, post: StoredPost) -> None:
        self._check_open()
        post = _codec.check_post(post)
        await self._put_if_live(self._keys.posts(post.job_id), post.job_id, post.n, post.data)

    async def posts_after(self, job_id: str, n: int) -> list[StoredPost]:
        self._check_open()
        with self._redis_errors("reading posts failed"):
            stored = await self.client.hgetall(self._keys.posts(job_id))
        return records.posts_after(job_id, cast(dict[bytes, bytes], stored), n)  # the client does not decode

    async def posts_after_many(self, after: Mapping[str, int]) -> dict[str, list[StoredPost]]:
        """``HGETALL`` of each job's posts, pipelined."""
        self._check_open()
        ids = list(after)
        with self._redis_errors("reading posts failed"):
            stored = await pipelined(self.client, ids, lambda pipe, job_id: pipe.hgetall(self._keys.posts(job_id)))
        found = {job_id: records.posts_after(job_id, hashed, after[job_id])
                 for job_id, hashed in zip(ids, stored, strict=True)}
        return {job_id: posts for job_id, posts in found.items() if posts}


async def _zero() -> int:
    return 0

"""A store in plain dicts: for unit tests and for embedding the engine without a database.

Every write applies at once (``flush`` has nothing to wait for), so ``record_job`` followed by
``get_job`` already sees the record. Records are kept as their JSON encoding and decoded on every
read, which gives the same value semantics as :class:`~routilux.store.sqlite.SQLiteStore`: what
you read back is a fresh copy, mutating it changes nothing stored, and a record that is not
JSON-serialisable fails here exactly as it would in SQLite (only sooner, in the caller).
"""

from __future__ import annotations

import bisect
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import NamedTuple

import msgspec

from routilux.bus.status import TERMINAL_STATUSES
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
    StoreLifetime,
)
from routilux.store.errors import (
    FlowRevisionConflict,
    StoreClosedError,
    StoreError,
    check_expected_revision,
)
from routilux.store.single_process import claim_store, release_store

_encode = msgspec.json.encode


class _Job(NamedTuple):
    created_at: datetime
    flow_id: str
    status: str
    runtime_id: str
    data: bytes
    ended_at: datetime  # completed_at, or created_at if the record has none (for pruning)


class MemoryStore(StoreLifetime):
    """The :class:`~routilux.store.base.Store` contract in memory; lost when the process ends."""

    def __init__(self, events_per_job: int = 10_000) -> None:
        if events_per_job < 1:
            raise ValueError("events_per_job must be at least 1")
        self.events_per_job = events_per_job
        self._state = "new"
        self._flows: dict[str, bytes] = {}
        self._jobs: dict[str, _Job] = {}
        self._runtimes: dict[str, bytes] = {}
        self._events: dict[str, list[StoredEvent]] = {}
        self._metrics: dict[str, bytes] = {}  # insertion order is storage order
        self._checkpoints: dict[str, CheckpointRecord] = {}
        self._posts: dict[str, dict[int, StoredPost]] = {}
        self._lock_fd: int | None = None

    def __repr__(self) -> str:
        return f"MemoryStore(events_per_job={self.events_per_job})"

    # -- life cycle ------------------------------------------------------------------------
    async def open(self) -> None:
        if self._state != "new":
            raise StoreError(f"{self!r} was already opened", location="memory://")
        self._lock_fd = claim_store("memory://", None)  # a server's second worker is refused
        self._state = "open"

    async def close(self) -> None:
        self._state = "closed"
        if self._lock_fd is not None:
            release_store(self._lock_fd)
            self._lock_fd = None

    def _check_open(self) -> None:
        if self._state != "open":
            what = "not open yet" if self._state == "new" else "closed"
            raise StoreClosedError(f"the memory store is {what}", location="memory://")

    async def flush(self) -> None:
        self._check_open()

    async def wait_for_room(self) -> None:
        """Nothing is ever pending here, so there is always room."""
        self._check_open()

    # -- flows -----------------------------------------------------------------------------
    async def put_flow(self, record: FlowRecord, *, expected_revision: int | None = None) -> None:
        self._check_open()
        record = _codec.check_flow(record)
        self._check_revision(record.flow_id, expected_revision)
        self._flows[record.flow_id] = _encode(record)

    def _check_revision(self, flow_id: str, expected_revision: int | None) -> None:
        """Raise :class:`FlowRevisionConflict` unless the stored flow matches ``expected_revision``."""
        check_expected_revision(expected_revision)
        if expected_revision is None:
            return
        data = self._flows.get(flow_id)
        current = None if data is None else msgspec.json.decode(data, type=FlowRecord).revision
        FlowRevisionConflict.check(flow_id, expected_revision, current, location="memory://")

    async def get_flow(self, flow_id: str) -> FlowRecord | None:
        self._check_open()
        data = self._flows.get(flow_id)
        return None if data is None else msgspec.json.decode(data, type=FlowRecord)

    async def list_flows(self) -> list[FlowRecord]:
        self._check_open()
        return [msgspec.json.decode(self._flows[k], type=FlowRecord) for k in sorted(self._flows)]

    async def delete_flow(self, flow_id: str, expected_revision: int | None = None) -> bool:
        self._check_open()
        self._check_revision(flow_id, expected_revision)
        return self._flows.pop(flow_id, None) is not None

    # -- jobs ------------------------------------------------------------------------------
    def record_job(self, record: JobRecord) -> None:
        self._check_open()
        self._put_job(_codec.check_job(record))

    async def put_job(self, record: JobRecord, *, checkpoint: CheckpointRecord | None = None) -> None:
        self.record_job(record)
        if checkpoint is not None:
            await self.put_checkpoint(checkpoint)

    def _put_job(self, record: JobRecord) -> None:
        if record.status in TERMINAL_STATUSES:  # a job that ends loses its checkpoint and posts
            self._forget_resumable(record.job_id)
        self._jobs[record.job_id] = _Job(
            record.created_at,
            record.flow_id,
            record.status,
            record.runtime_id,
            _encode(record),
            record.completed_at or record.created_at,
        )

    async def get_job(self, job_id: str) -> JobRecord | None:
        self._check_open()
        job = self._jobs.get(job_id)
        return None if job is None else msgspec.json.decode(job.data, type=JobRecord)

    async def list_jobs(self, query: JobQuery) -> tuple[list[JobRecord], int]:
        self._check_open()
        query = _codec.check_query(query)
        matches = [
            (job_id, job)
            for job_id, job in self._jobs.items()
            if (query.flow_id is None or job.flow_id == query.flow_id)
            and (query.status is None or job.status == query.status)
            and (query.runtime_id is None or job.runtime_id == query.runtime_id)
            and job_id not in query.exclude
        ]
        matches.sort(key=lambda item: item[0])  # job_id ascending breaks ties...
        matches.sort(key=lambda item: item[1].created_at, reverse=True)  # ...newest first (stable)
        page = matches[query.offset : query.offset + query.limit]
        records = [msgspec.json.decode(job.data, type=JobRecord) for _, job in page]
        if not query.with_state:
            records = [msgspec.structs.replace(record, state={}) for record in records]
        return records, len(matches)

    async def delete_jobs(self, job_ids: Sequence[str]) -> int:
        self._check_open()
        deleted = 0
        for job_id in set(job_ids):
            if self._jobs.pop(job_id, None) is not None:
                deleted += 1
            self._events.pop(job_id, None)
            self._metrics.pop(job_id, None)
            self._forget_resumable(job_id)
        return deleted

    async def prune_jobs(
        self, *, keep: int | None = None, ended_before: datetime | None = None, limit: int = PRUNE_BATCH
    ) -> list[str]:
        """See :meth:`Store.prune_jobs`. A sort of the finished jobs: fine for a store in dicts."""
        self._check_open()
        ended_before = _codec.check_prune(keep, ended_before, limit)
        finished = sorted(
            (job.ended_at, job_id) for job_id, job in self._jobs.items() if job.status in TERMINAL_STATUSES
        )
        over = len(finished) - keep if keep is not None else 0
        chosen = [
            job_id
            for i, (ended_at, job_id) in enumerate(finished)
            if i < over or (ended_before is not None and ended_at < ended_before)
        ][:limit]
        for job_id in chosen:
            del self._jobs[job_id]
            self._events.pop(job_id, None)
            self._metrics.pop(job_id, None)
            self._forget_resumable(job_id)
        return chosen

    async def mark_interrupted(self, reason: str, *, keep: Collection[str] = ()) -> list[str]:
        self._check_open()
        now = datetime.now(UTC)
        error = {"type": "interrupted", "message": reason}
        kept = set(keep)
        interrupted = sorted(
            (job for job in self._jobs.items() if job[1].status not in TERMINAL_STATUSES and job[0] not in kept),
            key=lambda item: (item[1].created_at, item[0]),
        )
        for _job_id, job in interrupted:
            record = msgspec.json.decode(job.data, type=JobRecord)
            self._put_job(msgspec.structs.replace(record, status="failed", error=error, completed_at=now))
        return [job_id for job_id, _ in interrupted]

    async def counts(self) -> StoreCounts:
        self._check_open()
        return StoreCounts(flow_count=len(self._flows), job_count=len(self._jobs))

    # -- runtimes --------------------------------------------------------------------------
    async def put_runtime(self, record: RuntimeRecord) -> None:
        self._check_open()
        record = _codec.check_runtime(record)
        self._runtimes[record.runtime_id] = _encode(record)

    async def list_runtimes(self) -> list[RuntimeRecord]:
        self._check_open()
        records = [msgspec.json.decode(data, type=RuntimeRecord) for data in self._runtimes.values()]
        records.sort(key=lambda r: (r.created_at, r.runtime_id))
        return records

    # -- events ----------------------------------------------------------------------------
    def record_events(self, events: Sequence[StoredEvent]) -> None:
        self._check_open()
        checked = [_codec.check_event(event) for event in events]
        touched: set[str] = set()
        for event in checked:
            kept = self._events.setdefault(event.job_id, [])
            touched.add(event.job_id)
            if not kept or event.seq > kept[-1].seq:
                kept.append(event)  # the usual case: seq only grows
                continue
            i = bisect.bisect_left(kept, event.seq, key=lambda e: e.seq)
            if i < len(kept) and kept[i].seq == event.seq:
                kept[i] = event  # a replayed event replaces the one with its seq
            else:
                kept.insert(i, event)
        for job_id in touched:
            kept = self._events[job_id]
            floor = kept[-1].seq - self.events_per_job  # keep seq > max_seq - events_per_job
            if kept[0].seq <= floor:
                del kept[: bisect.bisect_right(kept, floor, key=lambda e: e.seq)]

    async def events_since(self, job_id: str, since: int = 0, limit: int = 1000) -> list[StoredEvent]:
        self._check_open()
        _codec.check_limit(limit)
        kept = self._events.get(job_id, [])
        start = bisect.bisect_right(kept, since, key=lambda e: e.seq)
        return kept[start : start + limit]

    async def last_event_seqs(self, job_ids: Collection[str]) -> dict[str, int]:
        self._check_open()
        return {job_id: kept[-1].seq for job_id in job_ids if (kept := self._events.get(job_id))}

    # -- job metrics -----------------------------------------------------------------------
    async def put_job_metrics(self, items: Sequence[tuple[str, str, bytes]]) -> None:
        self._check_open()
        for job_id, _flow_id, data in items:
            self._metrics.pop(job_id, None)
            self._metrics[job_id] = bytes(data)

    async def get_job_metrics(self, job_id: str) -> bytes | None:
        self._check_open()
        return self._metrics.get(job_id)

    async def all_job_metrics(self) -> list[bytes]:
        self._check_open()
        return list(self._metrics.values())

    # -- checkpoints and posts -------------------------------------------------------------
    def _ended(self, job_id: str) -> bool:
        job = self._jobs.get(job_id)
        return job is not None and job.status in TERMINAL_STATUSES

    def _forget_resumable(self, job_id: str) -> None:
        self._checkpoints.pop(job_id, None)
        self._posts.pop(job_id, None)

    async def put_checkpoint(self, record: CheckpointRecord) -> None:
        self._check_open()
        record = _codec.check_checkpoint(record)
        if not self._ended(record.job_id):
            self._checkpoints[record.job_id] = record

    async def get_checkpoint(self, job_id: str) -> CheckpointRecord | None:
        self._check_open()
        return self._checkpoints.get(job_id)

    async def list_checkpoints(self) -> list[CheckpointRecord]:
        self._check_open()
        live = [
            (job.created_at, job_id)
            for job_id in self._checkpoints
            if (job := self._jobs.get(job_id)) is not None and job.status not in TERMINAL_STATUSES
        ]
        return [self._checkpoints[job_id] for _, job_id in sorted(live)]

    async def append_post(self, post: StoredPost) -> None:
        self._check_open()
        post = _codec.check_post(post)
        if not self._ended(post.job_id):
            self._posts.setdefault(post.job_id, {})[post.n] = post

    async def posts_after(self, job_id: str, n: int) -> list[StoredPost]:
        self._check_open()
        return self._posts_after(job_id, n)

    async def posts_after_many(self, after: Mapping[str, int]) -> dict[str, list[StoredPost]]:
        self._check_open()
        return {job_id: posts for job_id, n in after.items() if (posts := self._posts_after(job_id, n))}

    def _posts_after(self, job_id: str, n: int) -> list[StoredPost]:
        posts = self._posts.get(job_id, {})
        return [posts[k] for k in sorted(k for k in posts if k > n)]

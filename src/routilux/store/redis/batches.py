"""A batch of coalesced records as script calls: upserts of job records, appends of events.

A batch becomes ONE pipeline of a few script calls — an upsert per ``JOBS_PER_SCRIPT`` jobs, an
append per ``EVENTS_PER_SCRIPT`` events — so a batch costs one round trip, and no script holds
Redis for more than milliseconds. A record that cannot be encoded is logged and left out, so it
never spoils its batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, NamedTuple

import msgspec

from routilux.store.base import JobRecord, StoredEvent
from routilux.store.redis.keys import Keys
from routilux.store.redis.records import UPSERT_ARGS, decode_head, job_args, text
from routilux.store.redis.scripts import APPEND_EVENTS, UPSERT_JOBS, Script
from routilux.store.segments import EventsBySeq, newest

log = logging.getLogger("routilux.store")

#: Job records / events per script call: bound how long one script holds Redis (milliseconds).
JOBS_PER_SCRIPT: Final = 500
EVENTS_PER_SCRIPT: Final = 1000


class Call(NamedTuple):
    """One script call of a batch's pipeline, kept to make sense of its result."""

    script: Script
    keys: list[str]
    args: list[Any]
    records: int  # the records it carries (reported as lost if it fails)
    what: str  # "job records" or "events"


class BatchCalls:
    """Turns segments into script calls for one store (its keys, node and event bound)."""

    def __init__(self, keys: Keys, *, node_id: str, events_per_job: int, location: str, token: str = "",
                 scrub: Callable[[BaseException], str] = str) -> None:
        self.keys = keys
        self.node_id = node_id
        #: The fence token of this node ("" = writes are not fenced), see ``_FENCE_LUA``.
        self.token = token
        self.events_per_job = events_per_job
        self.location = location
        self._scrub = scrub  # an error's text fit for the log (no password)

    def of(self, segment: EventsBySeq) -> tuple[list[Call], int]:
        """The calls that write ``segment``, and how many of its records could not be encoded."""
        calls: list[Call] = []
        lost = self._job_calls(calls, segment.jobs.values())
        self._event_calls(calls, segment.events)
        return calls, lost

    def written(self, calls: Sequence[Call], replies: Sequence[Any]) -> tuple[int, list[str]]:
        """Make sense of the replies to a segment's ``calls``: how many records were lost (each
        refusal logged), and the ids of the jobs whose writes were fenced off."""
        failed = 0
        fenced: list[str] = []
        for call, reply in zip(calls, replies, strict=True):
            if isinstance(reply, Exception):
                failed += call.records
                log.error("%s: Redis refused %d %s: %s", self.location, call.records, call.what, self._scrub(reply))
                continue
            replayed, refused = reply
            fenced += [text(job_id) for job_id in refused]
            if call.script is APPEND_EVENTS and replayed:
                log.debug("%s: %d event(s) were already stored (replays): replaced", self.location, replayed)
        return failed, fenced

    def upserts(self, encoded: Iterable[Sequence[Any]]) -> list[Call]:
        """UPSERT_JOBS calls for job records encoded by ``job_args``, ``JOBS_PER_SCRIPT`` to a call."""
        head = [self.keys.prefix, self.token]
        calls: list[Call] = []
        args: list[Any] = list(head)
        for values in encoded:
            args.extend(values)
            if len(args) >= JOBS_PER_SCRIPT * UPSERT_ARGS + 2:
                calls.append(Call(UPSERT_JOBS, [], args, (len(args) - 2) // UPSERT_ARGS, "job records"))
                args = list(head)
        if len(args) > 2:
            calls.append(Call(UPSERT_JOBS, [], args, (len(args) - 2) // UPSERT_ARGS, "job records"))
        return calls

    def _job_calls(self, calls: list[Call], records: Iterable[JobRecord]) -> int:
        """Upsert calls for ``records``; returns how many could not be encoded (each logged: an
        unstorable record must not spoil its batch)."""
        encoded: list[Sequence[Any]] = []
        lost = 0
        for record in records:
            try:
                encoded.append(job_args(record))
            except (TypeError, ValueError, msgspec.EncodeError) as exc:
                lost += 1
                log.error("%s: job %s was not stored: %s", self.location, record.job_id, exc)
        calls += self.upserts(encoded)
        return lost

    def _event_calls(self, calls: list[Call], events: dict[str, dict[int, StoredEvent]]) -> None:
        """Append calls for each job's newest events (at most ``EVENTS_PER_SCRIPT`` each)."""
        head = [self.node_id, self.events_per_job, self.token]
        first = [self.keys.announcements, self.keys.owners]
        keys: list[str] = list(first)
        args: list[Any] = list(head)
        count = 0
        for job_id, kept in events.items():
            ordered = newest(kept, self.events_per_job)
            for start in range(0, len(ordered), EVENTS_PER_SCRIPT):
                chunk = ordered[start : start + EVENTS_PER_SCRIPT]
                if count and count + len(chunk) > EVENTS_PER_SCRIPT:
                    calls.append(Call(APPEND_EVENTS, keys, args, count, "events"))
                    keys, args, count = list(first), list(head), 0
                flows = [self._started_flow(e) for e in chunk if e.type == "job_start"]
                keys.append(self.keys.stream(job_id))
                args.extend((job_id, len(chunk), len(flows), *flows))
                for event in chunk:
                    args.extend((event.seq, event.payload))
                count += len(chunk)
        if count:
            calls.append(Call(APPEND_EVENTS, keys, args, count, "events"))

    def _started_flow(self, event: StoredEvent) -> str:
        """The flow_id a job_start announcement carries, from the event's JSON."""
        try:
            return decode_head(event.payload).flow_id
        except msgspec.DecodeError:
            log.warning("%s: job_start of %s is not JSON; announced without flow_id", self.location, event.job_id)
            return ""

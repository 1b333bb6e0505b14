"""Recent events of each job, in memory, for WebSocket replay without a database round trip.

Bounded twice: at most ``per_job`` events per job (the newest), and at most ``max_bytes`` in all —
past that, the jobs that have been quiet longest lose their history first. What is evicted here is
still in the store (its own per-job bound applies), so replay falls back to it; what is gone from
both is reported to the client as a gap.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Final

DEFAULT_PER_JOB: Final[int] = 1000
DEFAULT_MAX_BYTES: Final[int] = 64 * 1024 * 1024


class EventHistory:
    def __init__(self, per_job: int = DEFAULT_PER_JOB, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.per_job = per_job
        self.max_bytes = max_bytes
        self._jobs: OrderedDict[str, deque[tuple[int, str, bytes]]] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._jobs)

    def add(self, job_id: str, seq: int, type_: str, payload: bytes) -> None:
        events = self._jobs.get(job_id)
        if events is None:
            events = self._jobs[job_id] = deque()
        else:
            self._jobs.move_to_end(job_id)
        if len(events) >= self.per_job:
            self.bytes -= len(events.popleft()[2])
        events.append((seq, type_, payload))
        self.bytes += len(payload)
        while self.bytes > self.max_bytes and len(self._jobs) > 1:
            _, evicted = self._jobs.popitem(last=False)
            self.bytes -= sum(len(p) for _, _, p in evicted)

    def first_seq(self, job_id: str) -> int | None:
        """The oldest seq held for ``job_id`` (``None`` if nothing is held)."""
        events = self._jobs.get(job_id)
        return events[0][0] if events else None

    def last_seq(self, job_id: str) -> int | None:
        events = self._jobs.get(job_id)
        return events[-1][0] if events else None

    def since(self, job_id: str, seq: int) -> list[tuple[int, str, bytes]]:
        """Held events of ``job_id`` with a seq greater than ``seq``, oldest first."""
        events = self._jobs.get(job_id)
        if not events or events[-1][0] <= seq:
            return []
        if events[0][0] > seq:
            return list(events)
        return [e for e in events if e[0] > seq]

    def forget(self, job_id: str) -> None:
        events = self._jobs.pop(job_id, None)
        if events:
            self.bytes -= sum(len(p) for _, _, p in events)

"""What the monitoring endpoints return: msgspec Structs, the same in memory, over HTTP and in the
store (finished jobs' metrics are kept in this form)."""

from __future__ import annotations

from datetime import datetime

import msgspec


class RoutineMetrics(msgspec.Struct, kw_only=True):
    routine_id: str
    status: str  # pending, running, idle, paused, failed
    execution_count: int = 0
    error_count: int = 0
    retry_count: int = 0
    active: int = 0
    total_duration: float = 0.0
    avg_duration: float | None = None
    min_duration: float | None = None
    max_duration: float | None = None
    p95_duration: float | None = None
    last_execution: datetime | None = None


class SlotMetrics(msgspec.Struct, kw_only=True):
    routine_id: str
    slot: str
    unconsumed: int  # queue depth: items delivered and not yet taken by an activation
    capacity: int
    usage: float
    pressure: str  # low < 50% <= medium < 80% <= high < 95% <= critical
    received: int  # items delivered to the slot so far


class ErrorEntry(msgspec.Struct, kw_only=True):
    routine_id: str | None
    type: str
    message: str
    timestamp: datetime
    attempt: int | None = None
    status: str | None = None  # failed, retrying (the routine's error strategy decided)
    traceback: str | None = None  # only with ?include_traceback=true


class JobTotals(msgspec.Struct, kw_only=True):
    activations: int = 0
    retries: int = 0
    slot_calls: int = 0
    events_emitted: int = 0
    errors: int = 0


class JobMetrics(msgspec.Struct, kw_only=True):
    job_id: str
    flow_id: str
    runtime_id: str | None
    status: str
    start_time: datetime | None
    end_time: datetime | None
    duration: float | None  # seconds; for a job still running, so far
    totals: JobTotals
    routines: dict[str, RoutineMetrics]
    slots: list[SlotMetrics]
    errors: list[ErrorEntry]
    events_seen: int  # events this summary is built from (the job's last seq, unless some were lost)
    events_lost: int  # events the aggregator never saw (bus overflow): figures may be low by that much
    # The same figures under the names the Routilux Overseer dashboard reads, derived from the
    # fields above whenever metrics are built or decoded (so stored metrics have them too).
    routine_metrics: dict[str, RoutineMetrics] = {}  # ``routines`` with every duration a number
    total_events: int = 0  # events_seen
    total_slot_calls: int = 0  # totals.slot_calls
    total_event_emits: int = 0  # totals.events_emitted

    def __post_init__(self) -> None:
        self.routine_metrics = {rid: _filled(r) for rid, r in self.routines.items()}
        self.total_events = self.events_seen
        self.total_slot_calls = self.totals.slot_calls
        self.total_event_emits = self.totals.events_emitted


def _filled(metrics: RoutineMetrics) -> RoutineMetrics:
    """A routine's figures with 0.0 for durations not known yet (no execution ended)."""
    return msgspec.structs.replace(
        metrics,
        avg_duration=metrics.avg_duration or 0.0,
        min_duration=metrics.min_duration or 0.0,
        max_duration=metrics.max_duration or 0.0,
        p95_duration=metrics.p95_duration or 0.0,
    )


#: The usage at which a slot's queue counts as near full: where its pressure becomes ``high``.
NEAR_FULL: float = 0.8


class SlotQueueStatus(msgspec.Struct, kw_only=True):
    """One slot's queue, as the dashboard's queue panels read it (from :class:`SlotMetrics`). A
    queue holds only what is not consumed yet, so ``total_count`` is ``unconsumed_count``."""

    slot_name: str
    routine_id: str
    unconsumed_count: int
    total_count: int
    max_length: int
    watermark_threshold: float
    usage_percentage: float  # 0.0-1.0
    pressure_level: str
    is_full: bool
    is_near_full: bool

    @classmethod
    def of(cls, slot: SlotMetrics) -> SlotQueueStatus:
        return cls(
            slot_name=slot.slot, routine_id=slot.routine_id, unconsumed_count=slot.unconsumed,
            total_count=slot.unconsumed, max_length=slot.capacity, watermark_threshold=NEAR_FULL,
            usage_percentage=slot.usage, pressure_level=slot.pressure, is_full=slot.unconsumed >= slot.capacity,
            is_near_full=slot.usage >= NEAR_FULL,
        )


class DurationSummary(msgspec.Struct, kw_only=True):
    count: int
    total: float
    avg: float | None
    min: float | None
    max: float | None
    p50: float | None
    p95: float | None


class FlowRoutineMetrics(msgspec.Struct, kw_only=True):
    routine_id: str
    execution_count: int
    error_count: int
    duration: DurationSummary


class RecentJob(msgspec.Struct, kw_only=True):
    job_id: str
    status: str
    start_time: datetime | None
    end_time: datetime | None
    duration: float | None


class FlowMetrics(msgspec.Struct, kw_only=True):
    flow_id: str
    total_jobs: int
    jobs_by_status: dict[str, int]
    success_rate: float | None  # completed / ended; None before any job ended
    job_duration: DurationSummary  # of ended jobs
    routines: dict[str, FlowRoutineMetrics]
    recent_jobs: list[RecentJob]  # newest first


class RuntimeMetrics(msgspec.Struct, kw_only=True):
    runtime_id: str
    active_jobs: int  # jobs of the runtime not yet ended
    shared_pool: bool  # on the pool shared by every runtime with thread_pool_size 0
    threads_total: int  # the pool's size
    threads_busy: int  # threads running sync routines' logic (the pool's, if shared)
    queued_activations: int  # sync activations waiting for a thread (the pool's, if shared)
    thread_activations: int  # this runtime's sync activations running or waiting


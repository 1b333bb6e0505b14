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


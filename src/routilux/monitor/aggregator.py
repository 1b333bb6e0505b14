"""The metrics aggregator: a bus subscriber that turns events into job, routine, slot and flow
metrics, and never looks at engine state.

What each event tells it:

- ``job_start`` opens a job (its runtime); ``job_idle``/``job_pause``/``job_resume`` move its
  status; ``job_end`` closes it: its metrics are compacted (handed to ``on_finished``, which the API
  stores with the job so they are pruned with it), folded into its flow's figures, and kept in a
  bounded memory of recently finished jobs.
- ``slot_call``: one item delivered to ``routine.slot`` (queue depth + 1, slot calls + 1).
- ``routine_start``: an activation began (the first attempt takes its items off the queues: depth
  - n per slot; a later attempt is a retry).
- ``routine_end``: it ended — duration, status (``completed``, ``failed``, ``retrying``,
  ``skipped``), error type and message.
- ``event_emit``: one emitted event.

Slot capacities are configuration, not state: ``capacities(flow_id)`` (from the flow catalogue)
gives them. Figures of running jobs are kept per job; a flow's figures are updated with every
activation (so a long-lived job shows up at once) and with every job that ends. Each job's
``version`` counts the events it has seen, so a socket can send metrics only when they changed.

Cost: events are taken from the subscription in batches and each costs a few dictionary
operations; see ``bench/engine`` (``python -m bench.engine``) for the measured overhead.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from routilux.bus import Event, EventBus, Gap
from routilux.bus.consumer import BatchConsumer
from routilux.engine.slots import DEFAULT_SLOT_CAPACITY, pressure_of
from routilux.monitor.durations import Durations
from routilux.monitor.views import (
    DurationSummary,
    ErrorEntry,
    FlowMetrics,
    FlowRoutineMetrics,
    JobMetrics,
    JobTotals,
    RecentJob,
    RoutineMetrics,
    RuntimeMetrics,
    SlotMetrics,
)

log = logging.getLogger("routilux.monitor")

MAX_ERRORS_PER_JOB: Final[int] = 100
RECENT_JOBS: Final[int] = 10

Capacities = Callable[[str], Mapping[tuple[str, str], int]]


class _Routine:
    __slots__ = ("active", "durations", "errors", "executions", "failed", "last_execution", "retries", "threaded")

    def __init__(self) -> None:
        self.threaded = False  # its logic runs in a worker thread (routine_start says so)
        self.active = 0
        self.executions = 0
        self.errors = 0
        self.retries = 0
        self.failed = False
        self.last_execution: datetime | None = None
        self.durations = Durations()


class _Job:
    __slots__ = ("activations", "emitted", "ended", "errors", "flow_id", "gaps", "job_id", "lost", "retries",
                 "routines", "runtime_id", "slots", "started", "status", "version")

    def __init__(self, job_id: str, flow_id: str) -> None:
        self.job_id = job_id
        self.flow_id = flow_id
        self.runtime_id: str | None = None
        self.status = "running"
        self.started: datetime | None = None
        self.ended: datetime | None = None
        self.activations = 0
        self.retries = 0
        self.emitted = 0
        self.routines: dict[str, _Routine] = {}
        self.slots: dict[tuple[str, str], list[int]] = {}  # (routine, slot) -> [queue depth, received]
        self.errors: deque[ErrorEntry] = deque(maxlen=MAX_ERRORS_PER_JOB)
        self.lost = 0
        self.gaps = 0
        self.version = 0  # events and gap notices seen

    def routine(self, routine_id: str) -> _Routine:
        found = self.routines.get(routine_id)
        if found is None:
            found = self.routines[routine_id] = _Routine()
        return found

    def slot(self, routine_id: str, slot: str) -> list[int]:
        key = (routine_id, slot)
        found = self.slots.get(key)
        if found is None:
            found = self.slots[key] = [0, 0]
        return found


class _Flow:
    __slots__ = ("ended_by_status", "job_durations", "recent", "routines")

    def __init__(self) -> None:
        self.ended_by_status: Counter[str] = Counter()
        self.job_durations = Durations()
        self.routines: dict[str, _FlowRoutine] = {}
        self.recent: deque[RecentJob] = deque(maxlen=RECENT_JOBS)

    def routine(self, routine_id: str) -> _FlowRoutine:
        found = self.routines.get(routine_id)
        if found is None:
            found = self.routines[routine_id] = _FlowRoutine()
        return found


class _FlowRoutine:
    __slots__ = ("durations", "errors", "executions")

    def __init__(self) -> None:
        self.executions = 0
        self.errors = 0
        self.durations = Durations(prometheus=True)


class FinishedJob(msgspec.Struct, kw_only=True):
    """A finished job's metrics as stored: the view, plus the duration sets a restart folds back
    into the flow's figures."""

    metrics: JobMetrics
    durations: dict[str, dict[str, Any]]
    node: str | None = None  # the cluster node that ran it (None: a single server)


_finished_decoder = msgspec.json.Decoder(FinishedJob)


class MetricsAggregator(BatchConsumer):
    """Subscribe with :meth:`run` (owned by the caller's task group); read with :meth:`job`,
    :meth:`flow`, :meth:`live_jobs` and the Prometheus collector."""

    log = log
    lost_message = "metrics lost events %s..%s of job %s"
    failed_batch_message = "metrics: a batch of %d events could not be aggregated; figures may be low"

    def __init__(
        self,
        bus: EventBus,
        *,
        capacities: Capacities | None = None,
        on_finished: Callable[[str, str, bytes], None] | None = None,
        keep_finished: int = 1000,
        buffer: int = 200_000,
        node_id: str | None = None,
        is_remote: Callable[[str], bool] | None = None,
    ) -> None:
        super().__init__(bus, buffer=buffer)
        #: In a cluster: this node (written with each finished job's metrics, so that folding the
        #: stored metrics of every node skips its own), and which jobs run on other nodes — their
        #: relayed events are not counted here: their owners count them, and their stored
        #: aggregates are folded in when they end (:mod:`routilux.cluster.figures`).
        self.node_id = node_id
        self.is_remote = is_remote
        #: The other nodes' live jobs by (flow, status), and per runtime (live jobs, activations
        #: in threads), as they last published them; ``refresh`` reads them again (and folds in
        #: the jobs that ended elsewhere) before a figure is answered.
        self.others_live: Counter[tuple[str, str]] = Counter()
        self.others_runtimes: dict[str, tuple[int, int]] = {}
        self.refresh: Callable[[], Awaitable[None]] | None = None
        #: Counts changes of the live figures (jobs opened and ended, statuses, activations): a
        #: cluster node publishes them again when it moved.
        self.live_changes = 0
        self.bus = bus
        self.capacities = capacities or (lambda _flow_id: {})
        self.on_finished = on_finished
        self.keep_finished = keep_finished
        self._live: dict[str, _Job] = {}
        self._live_by_flow: dict[str, set[str]] = {}
        self._finished: OrderedDict[str, JobMetrics] = OrderedDict()
        self._flows: dict[str, _Flow] = {}
        self.processed = 0
        self._encoder = msgspec.json.Encoder()

    # -- consuming ---------------------------------------------------------------------------
    async def consume(self, batch: list[Event | Gap]) -> None:
        self.apply(batch)

    def apply(self, batch: list[Event | Gap]) -> None:
        """Fold a batch of bus items in. The two commonest events (an item delivered, an event
        emitted) cost a few operations each; consecutive events of one job share its lookup."""
        live = self._live
        last_id: str | None = None
        job: _Job  # set on the first event: its job_id is not None
        processed = 0
        for item in batch:
            if item.__class__ is Gap:  # isinstance() costs several times more on a Struct class
                self._gap(item)  # type: ignore[arg-type]
                continue
            event: Event = item  # type: ignore[assignment]
            processed += 1
            job_id = event.job_id
            if job_id != last_id:
                found = live.get(job_id)
                if found is None:
                    if event.type == "job_end" and job_id in self._finished:
                        continue
                    if self.is_remote is not None and self.is_remote(job_id):
                        continue  # relayed for a socket here; its owner counts it
                    found = self._open(event)
                job = found
                last_id = job_id
            job.version += 1
            kind = event.type
            if kind == "slot_call":
                key: tuple[str, str] = (event.routine_id, event.data["slot"])  # type: ignore[assignment]
                slot = job.slots.get(key)
                if slot is None:
                    slot = job.slots[key] = [0, 0]
                slot[0] += 1
                slot[1] += 1
            elif kind == "event_emit":
                job.emitted += 1
            else:
                self._other(job, event)
                if kind == "job_end":
                    last_id = None
        self.processed += processed

    def _gap(self, gap: Gap) -> None:
        lost = self.count_lost(gap)
        job = self._live.get(gap.job_id)
        if job is not None:
            job.lost += lost
            job.gaps += 1
            job.version += 1

    def _other(self, job: _Job, item: Event) -> None:
        kind = item.type
        self.live_changes += 1
        if kind == "routine_start":
            routine = job.routine(item.routine_id)  # type: ignore[arg-type]
            routine.active += 1
            data = item.data
            routine.threaded = bool(data.get("thread", False))
            if data["attempt"] == 1:
                job.activations += 1
                for slot, taken in data["items"].items():
                    job.slot(item.routine_id, slot)[0] -= taken  # type: ignore[arg-type]
            else:
                job.retries += 1
                routine.retries += 1
        elif kind == "routine_end":
            self._routine_end(job, item)
        elif kind == "job_idle":
            job.status = "idle"
        elif kind == "job_pause":
            job.status = "paused"
        elif kind == "job_resume":  # after a restart it says which status the job is back in
            job.status = item.data.get("status") or "running"
        elif kind == "job_start":
            job.runtime_id = item.data.get("runtime_id")
            job.started = item.timestamp
            job.status = "running"
        elif kind == "job_end":
            self._end(job, item)

    def _open(self, event: Event) -> _Job:
        self.live_changes += 1
        job = self._live[event.job_id] = _Job(event.job_id, event.flow_id)
        job.started = event.timestamp  # job_start says it again; a job seen mid-way starts here
        self._live_by_flow.setdefault(event.flow_id, set()).add(event.job_id)
        if event.flow_id not in self._flows:
            self._flows[event.flow_id] = _Flow()
        return job

    def _routine_end(self, job: _Job, event: Event) -> None:
        rid: str = event.routine_id  # type: ignore[assignment]
        data = event.data
        routine = job.routine(rid)
        routine.active -= 1
        routine.executions += 1
        routine.last_execution = event.timestamp
        duration = data["duration"]
        routine.durations.add(duration)
        flow_routine = self._flows[job.flow_id].routine(rid)
        flow_routine.executions += 1
        flow_routine.durations.add(duration)
        status = data["status"]
        if status == "completed":
            routine.failed = False
            return
        if status == "skipped":
            return
        routine.errors += 1
        flow_routine.errors += 1
        routine.failed = status == "failed"
        error = data.get("error") or {}
        job.errors.append(ErrorEntry(routine_id=rid, type=str(error.get("type", "error")),
                                     message=str(error.get("message", "")), timestamp=event.timestamp,
                                     attempt=data.get("attempt"), status=status))

    def _end(self, job: _Job, event: Event) -> None:
        data = event.data
        job.status = str(data.get("status", "completed"))
        job.ended = event.timestamp
        error = data.get("error")
        if error and not (error.get("routine_id") and any(e.routine_id == error["routine_id"] for e in job.errors)):
            # why the job ended, when no routine's error already says it (cancel, timeout, fail
            # by request, an internal error)
            job.errors.append(ErrorEntry(routine_id=error.get("routine_id"), type=str(error.get("type", "error")),
                                         message=str(error.get("message", "")), timestamp=event.timestamp))
        metrics = self._view(job)
        flow = self._flows[job.flow_id]
        self._fold_finished(flow, metrics)
        del self._live[job.job_id]
        live = self._live_by_flow.get(job.flow_id)
        if live is not None:
            live.discard(job.job_id)
            if not live:
                del self._live_by_flow[job.flow_id]
        self._remember(metrics)
        if self.on_finished is not None:
            stored = FinishedJob(metrics=metrics, node=self.node_id,
                                 durations={rid: r.durations.to_builtins() for rid, r in job.routines.items()})
            self.on_finished(job.job_id, job.flow_id, self._encoder.encode(stored))

    def _fold_finished(self, flow: _Flow, metrics: JobMetrics) -> None:
        flow.ended_by_status[metrics.status] += 1
        if metrics.duration is not None:
            flow.job_durations.add(metrics.duration)
        recent = RecentJob(job_id=metrics.job_id, status=metrics.status, start_time=metrics.start_time,
                           end_time=metrics.end_time, duration=metrics.duration)
        # Newest end first. Jobs end here in order; in a cluster another node's job is folded in
        # a moment after it ended, maybe after a later one of ours: it goes where its end puts it.
        queue = flow.recent
        at = 0
        if recent.end_time is not None:
            while at < len(queue) and (end := queue[at].end_time) is not None and end > recent.end_time:
                at += 1
        if at < RECENT_JOBS:
            if len(queue) == RECENT_JOBS:
                queue.pop()
            queue.insert(at, recent)

    def _remember(self, metrics: JobMetrics) -> None:
        self._finished[metrics.job_id] = metrics
        while len(self._finished) > self.keep_finished:
            self._finished.popitem(last=False)

    # -- start-up: jobs that ended before this process ---------------------------------------
    def restore(self, stored: list[bytes]) -> int:
        """Fold stored finished jobs (oldest first) into their flows' figures; return how many
        were folded. Their own metrics stay in the store (``on_finished`` put them there). In a
        cluster this also folds the other nodes' jobs as they end; this node's own are skipped
        (counted already, from its bus)."""
        restored = 0
        for blob in stored:
            try:
                finished = _finished_decoder.decode(blob)
            except msgspec.MsgspecError:
                log.warning("unreadable stored job metrics skipped")
                continue
            if finished.node is not None and finished.node == self.node_id:
                continue
            metrics = finished.metrics
            flow = self._flows.get(metrics.flow_id)
            if flow is None:
                flow = self._flows[metrics.flow_id] = _Flow()
            self._fold_finished(flow, metrics)
            for rid, durations in finished.durations.items():
                flow_routine = flow.routine(rid)
                routine = metrics.routines.get(rid)
                if routine is not None:
                    flow_routine.executions += routine.execution_count
                    flow_routine.errors += routine.error_count
                flow_routine.durations.merge(Durations.from_builtins(durations))
            restored += 1
        return restored

    # -- reading -----------------------------------------------------------------------------
    def version(self, job_id: str) -> int | None:
        """Changes with every event of a live job; ``None`` once it is not live."""
        job = self._live.get(job_id)
        return None if job is None else job.version

    def job(self, job_id: str) -> JobMetrics | None:
        """A live or recently finished job's metrics (older ones are in the store)."""
        live = self._live.get(job_id)
        if live is not None:
            return self._view(live)
        return self._finished.get(job_id)

    def live_jobs(self, flow_id: str | None = None) -> list[str]:
        if flow_id is None:
            return list(self._live)
        return list(self._live_by_flow.get(flow_id, ()))

    def flow_ids(self) -> list[str]:
        return list(self._flows)

    def flow(self, flow_id: str) -> FlowMetrics:
        flow = self._flows.get(flow_id) or _Flow()
        by_status: Counter[str] = Counter(flow.ended_by_status)
        for job_id in self._live_by_flow.get(flow_id, ()):
            by_status[self._live[job_id].status] += 1
        for (fid, status), n in self.others_live.items():
            if fid == flow_id:
                by_status[status] += n
        ended = sum(flow.ended_by_status.values())
        routines = {
            rid: FlowRoutineMetrics(routine_id=rid, execution_count=r.executions, error_count=r.errors,
                                    duration=_summary(r.durations))
            for rid, r in sorted(flow.routines.items())
        }
        return FlowMetrics(
            flow_id=flow_id,
            total_jobs=sum(by_status.values()),
            jobs_by_status=dict(sorted(by_status.items())),
            success_rate=flow.ended_by_status["completed"] / ended if ended else None,
            job_duration=_summary(flow.job_durations),
            routines=routines,
            recent_jobs=list(flow.recent),
        )

    def flow_routine_durations(self) -> list[tuple[str, str, _FlowRoutine]]:
        """(flow_id, routine_id, figures) of every routine seen: what Prometheus exports."""
        return [(fid, rid, r) for fid, flow in self._flows.items() for rid, r in flow.routines.items()]

    def jobs_by_flow_and_status(self) -> Counter[tuple[str, str]]:
        counts: Counter[tuple[str, str]] = Counter()
        for fid, flow in self._flows.items():
            for status, n in flow.ended_by_status.items():
                counts[(fid, status)] += n
        counts.update(self.live_counts())
        counts.update(self.others_live)
        return counts

    def live_counts(self) -> Counter[tuple[str, str]]:
        """This node's live jobs by (flow, status): what it publishes to the other nodes."""
        return Counter((job.flow_id, job.status) for job in self._live.values())

    def runtime_demand(self) -> dict[str, tuple[int, int]]:
        """This node's live jobs and activations in threads, per runtime: what it publishes."""
        demand: dict[str, tuple[int, int]] = {}
        for job in self._live.values():
            runtime_id = job.runtime_id or ""
            jobs, threads = demand.get(runtime_id, (0, 0))
            demand[runtime_id] = (jobs + 1, threads + sum(max(0, r.active) for r in job.routines.values()
                                                          if r.threaded))
        return demand

    def set_others(self, jobs: Counter[tuple[str, str]], runtimes: dict[str, tuple[int, int]]) -> None:
        self.others_live = jobs
        self.others_runtimes = runtimes

    async def refreshed(self) -> MetricsAggregator:
        """Itself, with the other nodes' figures read again (a cluster); for the readers."""
        if self.refresh is not None:
            await self.refresh()
        return self

    def runtimes(self, pools: Mapping[str, tuple[int, bool]]) -> list[RuntimeMetrics]:
        """Per runtime: live jobs, and its thread pool's use. ``pools`` gives each runtime's
        (threads, shared) — configuration the API knows. Activations of sync routines wait for
        a thread: those beyond the pool's size are queued. Runtimes on the shared pool share
        its figures (busy and queued are the pool's). In a cluster the other nodes' demand (as
        they published it) is added: the figures are the cluster's, against this node's pools."""
        active_jobs: Counter[str] = Counter()
        in_threads: Counter[str] = Counter()
        for published in (self.runtime_demand(), self.others_runtimes):
            for runtime_id, (jobs, threads) in published.items():
                active_jobs[runtime_id] += jobs
                in_threads[runtime_id] += threads
        shared_demand = sum(in_threads[rid] for rid, (_size, shared) in pools.items() if shared)
        views = []
        for runtime_id, (size, shared) in sorted(pools.items()):
            demand = shared_demand if shared else in_threads[runtime_id]
            views.append(RuntimeMetrics(
                runtime_id=runtime_id, active_jobs=active_jobs[runtime_id], shared_pool=shared,
                threads_total=size, threads_busy=min(demand, size), queued_activations=max(0, demand - size),
                thread_activations=in_threads[runtime_id],
            ))
        return views

    def queue_depths(self) -> Counter[tuple[str, str, str]]:
        """(flow_id, routine_id, slot) -> items waiting, summed over the flow's live jobs."""
        depths: Counter[tuple[str, str, str]] = Counter()
        for job in self._live.values():
            for (rid, slot), (depth, _received) in job.slots.items():
                depths[(job.flow_id, rid, slot)] += max(0, depth)
        return depths

    def _view(self, job: _Job) -> JobMetrics:
        capacities = self.capacities(job.flow_id)
        paused = job.status == "paused"
        routines = {}
        for rid, r in sorted(job.routines.items()):
            d = r.durations
            if r.failed:
                status = "failed"
            elif paused:
                status = "paused"
            elif r.active > 0:
                status = "running"
            else:
                status = "idle"
            routines[rid] = RoutineMetrics(
                routine_id=rid, status=status, execution_count=r.executions, error_count=r.errors,
                retry_count=r.retries, active=max(0, r.active), total_duration=d.total, avg_duration=d.mean,
                min_duration=d.minimum if d.count else None, max_duration=d.maximum if d.count else None,
                p95_duration=d.quantile(0.95), last_execution=r.last_execution,
            )
        for rid, _slot in capacities:
            if rid not in routines:
                routines[rid] = RoutineMetrics(routine_id=rid, status="pending")
        slots = []
        for key in sorted(set(capacities) | set(job.slots)):
            depth, received = job.slots.get(key, (0, 0))
            depth = max(0, depth)
            capacity = capacities.get(key, DEFAULT_SLOT_CAPACITY)
            usage = depth / capacity if capacity else 0.0
            slots.append(SlotMetrics(routine_id=key[0], slot=key[1], unconsumed=depth, capacity=capacity,
                                     usage=usage, pressure=pressure_of(usage), received=received))
        end = job.ended
        start = job.started
        if start is None:
            duration = None
        else:
            until = end if end is not None else datetime.now(UTC)
            duration = max(0.0, (until - start).total_seconds())
        return JobMetrics(
            job_id=job.job_id, flow_id=job.flow_id, runtime_id=job.runtime_id,
            status=job.status,
            start_time=start, end_time=end, duration=duration,
            totals=JobTotals(activations=job.activations, retries=job.retries,
                             slot_calls=sum(received for _depth, received in job.slots.values()),
                             events_emitted=job.emitted, errors=sum(r.errors for r in job.routines.values())),
            routines=dict(sorted(routines.items())), slots=slots,
            errors=list(job.errors), events_seen=job.version - job.gaps,
            events_lost=job.lost,
        )


def _summary(durations: Durations) -> DurationSummary:
    return DurationSummary(**durations.summary())  # type: ignore[arg-type]


"""Runtimes run jobs, and the engine owns the runtimes.

A :class:`Runtime` is a named place to run jobs with its own thread budget: ``thread_pool_size=0``
shares the engine's process-wide pool (100 threads unless configured), ``>0`` gives it a limit of
its own so a heavy tenant cannot starve the others. Every activation of its jobs is a task in the
runtime's task group, so shutting a runtime down cancels exactly its work.

The :class:`Engine` is the structured-concurrency root: an async context manager that owns the
event bus, the timer task, the thread hand-off and every runtime. Nothing outlives it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Final

import anyio
import msgspec
from anyio.abc import TaskGroup, TaskStatus
from anyio.from_thread import BlockingPortal

from routilux.bus.bus import EventBus
from routilux.engine.checkpoint import JobCheckpoint, check_restorable, decode_checkpoint
from routilux.engine.errors import CheckpointError, DuplicateRuntime, RuntimeNotFound, RuntimeShutdown
from routilux.engine.flow import Flow, is_valid_id
from routilux.engine.handoff import ThreadHandoff
from routilux.engine.job import Entry, Job, JobOptions
from routilux.engine.plan import FlowPlan, compile_flow
from routilux.engine.registry import Registry, default_registry
from routilux.engine.timers import TimerQueue

DEFAULT_RUNTIME_ID: Final[str] = "default"
DEFAULT_SHARED_POOL_SIZE: Final[int] = 100
MAX_THREAD_POOL_SIZE: Final[int] = 1000


def _leaves(group: BaseException) -> list[BaseException]:
    if isinstance(group, BaseExceptionGroup):
        return [leaf for inner in group.exceptions for leaf in _leaves(inner)]
    return [group]


class RuntimeInfo(msgspec.Struct, frozen=True):
    runtime_id: str
    thread_pool_size: int
    is_default: bool
    active_job_count: int
    is_shutdown: bool
    busy_threads: int
    total_threads: int
    shares_pool: bool
    worker_group: str | None = None


class EngineSettings(msgspec.Struct, frozen=True):
    """Engine-wide knobs (the API layer fills them from environment variables)."""

    shared_pool_size: int = DEFAULT_SHARED_POOL_SIZE
    job_options: JobOptions = JobOptions()


class Runtime:
    """A named runner of jobs. Create through :meth:`Engine.create_runtime`."""

    def __init__(
        self, engine: Engine, runtime_id: str, thread_pool_size: int, is_default: bool, worker_group: str | None = None
    ) -> None:
        self.engine = engine
        self.runtime_id = runtime_id
        self.thread_pool_size = thread_pool_size
        self.is_default = is_default
        #: Where a cluster places this runtime's jobs; the engine itself only carries it.
        self.worker_group = worker_group
        self.limiter = (
            engine.shared_limiter if thread_pool_size == 0 else anyio.CapacityLimiter(thread_pool_size)
        )
        self.jobs: dict[str, Job] = {}
        self._tg: TaskGroup | None = None
        self._stop = anyio.Event()
        self.is_shutdown = False

    # services the jobs use
    @property
    def bus(self) -> EventBus:
        return self.engine.bus

    @property
    def timers(self) -> TimerQueue:
        return self.engine.timers

    @property
    def handoff(self) -> ThreadHandoff:
        return self.engine.handoff

    def spawn(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        """Run ``fn(*args)`` as a task owned by this runtime."""
        if self._tg is None:
            raise RuntimeShutdown(f"runtime '{self.runtime_id}' is not running", runtime_id=self.runtime_id)
        self._tg.start_soon(fn, *args)

    async def _serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started()
            await self._stop.wait()
            tg.cancel_scope.cancel()
        self._tg = None

    async def start_job(
        self,
        plan: FlowPlan,
        *,
        entries: Iterable[Entry] = (),
        timeout: float | None = None,
        complete_when_idle: bool = False,
        job_id: str | None = None,
    ) -> Job:
        """Create a job of ``plan`` here, start it, and post the entry data."""
        if self.is_shutdown:
            raise RuntimeShutdown(f"runtime '{self.runtime_id}' is shut down", runtime_id=self.runtime_id)
        if timeout is not None and not 0 < timeout <= 86400:
            raise ValueError("timeout must be > 0 and <= 86400 seconds")
        entries = tuple(entries)
        for entry in entries:  # refuse bad entry data before a job exists
            plan.check_port(entry.routine_id, entry.slot_name)
        job = Job(
            plan,
            self,
            job_id=job_id,
            timeout=timeout,
            complete_when_idle=complete_when_idle,
            options=self.engine.settings.job_options,
        )
        self.jobs[job.job_id] = job
        self.engine.jobs[job.job_id] = job
        try:
            await job.start(entries)
        except BaseException:
            if not job.is_terminal:
                job.fail("the job could not start", "start_failed")
            raise
        return job

    def restore_job(
        self, plan: FlowPlan, checkpoint: JobCheckpoint | bytes, *, last_seq: int = 0, reason: str = "restart"
    ) -> Job:
        """Bring a job back here from its checkpoint (see :meth:`Engine.restore_job`)."""
        if self.is_shutdown:
            raise RuntimeShutdown(f"runtime '{self.runtime_id}' is shut down", runtime_id=self.runtime_id)
        cp = checkpoint if isinstance(checkpoint, JobCheckpoint) else decode_checkpoint(checkpoint)
        check_restorable(plan, cp)
        existing = self.engine.jobs.get(cp.job_id)
        if existing is not None and not existing.is_terminal:
            raise CheckpointError(
                f"job {cp.job_id} is already running in this engine ({existing.status.value})",
                code="checkpoint_conflict", job_id=cp.job_id,
            )
        job = Job(
            plan,
            self,
            job_id=cp.job_id,
            timeout=cp.timeout,
            complete_when_idle=cp.complete_when_idle,
            options=self.engine.settings.job_options,
        )
        self.jobs[job.job_id] = job
        self.engine.jobs[job.job_id] = job
        try:
            job._restore(cp, last_seq, reason)
        except BaseException:
            if not job.is_terminal:
                job.fail("the job could not be restored from its checkpoint", "restore_failed")
            raise
        return job

    def _job_ended(self, job_id: str) -> None:
        self.jobs.pop(job_id, None)

    def info(self) -> RuntimeInfo:
        return RuntimeInfo(
            runtime_id=self.runtime_id,
            thread_pool_size=self.thread_pool_size,
            is_default=self.is_default,
            active_job_count=len(self.jobs),
            is_shutdown=self.is_shutdown,
            busy_threads=int(self.limiter.borrowed_tokens),
            total_threads=int(self.limiter.total_tokens),
            shares_pool=self.thread_pool_size == 0,
            worker_group=self.worker_group,
        )

    def shutdown(self) -> None:
        """Cancel every job of this runtime and stop it; it accepts no new jobs."""
        if self.is_shutdown:
            return
        self.is_shutdown = True
        for job in list(self.jobs.values()):
            job.cancel("runtime shut down")
        self._stop.set()


class Engine:
    """The root of a Routilux process: bus, timers, runtimes and jobs.

    ``async with Engine() as engine:`` starts it with a ``default`` runtime; leaving the block
    cancels every job that is still running and waits for all their tasks.
    """

    def __init__(
        self,
        *,
        registry: Registry | None = None,
        bus: EventBus | None = None,
        settings: EngineSettings | None = None,
    ) -> None:
        self.registry = registry if registry is not None else default_registry()
        self.bus = bus if bus is not None else EventBus()
        self.settings = settings or EngineSettings()
        self.shared_limiter = anyio.CapacityLimiter(self.settings.shared_pool_size)
        self.timers = TimerQueue()
        self.runtimes: dict[str, Runtime] = {}
        self.jobs: dict[str, Job] = {}
        self.default_runtime_id = DEFAULT_RUNTIME_ID
        self._tg: TaskGroup | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._handoff: ThreadHandoff | None = None

    @property
    def handoff(self) -> ThreadHandoff:
        if self._handoff is None:
            raise RuntimeError("the engine is not running (use 'async with Engine()')")
        return self._handoff

    async def __aenter__(self) -> Engine:
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            portal = await stack.enter_async_context(BlockingPortal())
            self._handoff = ThreadHandoff(portal)
            self._tg = await stack.enter_async_context(anyio.create_task_group())
            self._tg.start_soon(self.timers.run)
            await self.create_runtime(DEFAULT_RUNTIME_ID, 0, is_default=True)
        except BaseException:
            await stack.__aexit__(None, None, None)
            raise
        self._stack = stack
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        for runtime in list(self.runtimes.values()):
            runtime.shutdown()
        assert self._tg is not None and self._stack is not None
        self._tg.cancel_scope.cancel()
        stack, self._stack = self._stack, None
        try:
            return await stack.__aexit__(*exc_info)
        except BaseExceptionGroup as group:
            # The body's own exception comes back wrapped by the task groups; hand it back
            # unwrapped so ``async with Engine()`` behaves like any other context manager.
            if exc_info[1] is not None and _leaves(group) == [exc_info[1]]:
                return False
            raise
        finally:
            self._tg = None
            self.bus.close()

    # -- runtimes -------------------------------------------------------------------------------
    async def create_runtime(
        self, runtime_id: str, thread_pool_size: int = 0, *, is_default: bool = False, worker_group: str | None = None
    ) -> Runtime:
        """Add a runtime. ``thread_pool_size`` 0 shares the engine pool; 1..1000 is its own.
        ``worker_group`` is a placement label for a cluster of servers (the engine ignores it)."""
        if not is_valid_id(runtime_id):
            raise ValueError("runtime_id must be 1-128 of letters, digits, '_', '.', '-' (not '.' or '..')")
        if not 0 <= thread_pool_size <= MAX_THREAD_POOL_SIZE:
            raise ValueError(f"thread_pool_size must be between 0 and {MAX_THREAD_POOL_SIZE}")
        if runtime_id in self.runtimes:
            raise DuplicateRuntime(f"runtime '{runtime_id}' already exists", runtime_id=runtime_id)
        if self._tg is None:
            raise RuntimeError("the engine is not running (use 'async with Engine()')")
        runtime = Runtime(self, runtime_id, thread_pool_size, is_default, worker_group)
        await self._tg.start(runtime._serve)
        self.runtimes[runtime_id] = runtime
        if is_default:
            for other in self.runtimes.values():
                other.is_default = other is runtime
            self.default_runtime_id = runtime_id
        return runtime

    def get_runtime(self, runtime_id: str | None = None) -> Runtime:
        key = runtime_id or self.default_runtime_id
        try:
            return self.runtimes[key]
        except KeyError:
            raise RuntimeNotFound(
                f"runtime '{key}' does not exist. Known runtimes: {', '.join(self.runtimes)}",
                runtime_id=key,
            ) from None

    async def shutdown_runtime(self, runtime_id: str) -> None:
        runtime = self.get_runtime(runtime_id)
        if runtime.is_default:
            raise ValueError("the default runtime cannot be shut down while the engine runs")
        runtime.shutdown()
        del self.runtimes[runtime_id]

    # -- jobs ---------------------------------------------------------------------------------------
    def compile(self, flow: Flow) -> FlowPlan:
        return compile_flow(flow, self.registry)

    async def start_job(
        self,
        flow: Flow | FlowPlan,
        *,
        runtime_id: str | None = None,
        entries: Iterable[Entry] = (),
        timeout: float | None = None,
        complete_when_idle: bool = False,
        job_id: str | None = None,
    ) -> Job:
        """Start a job of ``flow`` on ``runtime_id`` (default runtime if ``None``)."""
        plan = flow if isinstance(flow, FlowPlan) else self.compile(flow)
        runtime = self.get_runtime(runtime_id)
        return await runtime.start_job(
            plan, entries=entries, timeout=timeout, complete_when_idle=complete_when_idle, job_id=job_id
        )

    def restore_job(
        self,
        flow: Flow | FlowPlan,
        checkpoint: JobCheckpoint | bytes,
        *,
        runtime_id: str | None = None,
        last_seq: int = 0,
        reason: str = "restart",
    ) -> Job:
        """Bring back a job from its checkpoint (a :class:`JobCheckpoint` or its encoded bytes),
        with the same id, on ``runtime_id`` (default: the runtime it ran on, which must exist).

        It is in the checkpoint's status again: a paused job stays paused, an idle one idle, a
        running one runs on; its queues, pending batches, policy timers and timeout carry on with
        the time they had left. Activations that were in flight run again, told so by
        ``ctx.redelivered`` (at-least-once). Entries do not run again and there is no second
        ``job_start``: the first event is ``job_resume`` with ``reason: "restart"`` and
        ``seq = checkpoint.seq + 1`` — or ``last_seq + 1`` when the job published (and someone
        recorded) events after its checkpoint: numbering never repeats a seq a client may have
        seen. Synchronous: nothing here waits.

        Raises :class:`~routilux.engine.errors.CheckpointError`: ``checkpoint_invalid`` (not a
        checkpoint this engine reads), ``checkpoint_incompatible`` (the flow lost a routine or
        slot the checkpoint holds data for: fail that job with the error's message instead),
        ``checkpoint_conflict`` (the job is live here already).
        """
        plan = flow if isinstance(flow, FlowPlan) else self.compile(flow)
        cp = checkpoint if isinstance(checkpoint, JobCheckpoint) else decode_checkpoint(checkpoint)
        return self.get_runtime(runtime_id or cp.runtime_id).restore_job(plan, cp, last_seq=last_seq, reason=reason)

    def get_job(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def abandon_job(self, job_id: str) -> bool:
        """Stop running a live job here *without ending it*: it publishes nothing more (no
        ``job_end``: its story goes on on another server, which resumed it from its checkpoint),
        its activations are cancelled, and it leaves memory. Whether there was such a job."""
        job = self.jobs.get(job_id)
        if job is None or job.is_terminal:
            return False
        job._events_closed = True  # the new owner numbers the events from here on
        job.cancel("moved to another server")
        del self.jobs[job_id]
        job.release()
        return True

    def forget_job(self, job_id: str) -> None:
        """Drop a finished job from memory (the store keeps its record). The job lets go of its
        routine runs (:meth:`Job.release`), so it is freed as soon as nobody else holds it,
        without the cyclic garbage collector."""
        job = self.jobs.get(job_id)
        if job is not None and job.is_terminal:
            del self.jobs[job_id]
            job.release()

"""What the engine's inner pieces need of the pieces that own them, as :class:`typing.Protocol`\\ s.

A job owns its routine runs and is owned by a runtime; a routine's :class:`Context` is handed the
job. Each of those inner pieces needs a few things of its owner, and naming those few things
here lets the inner module depend on this small one instead of importing its owner's module,
which imports it back. The owners satisfy these protocols structurally: nothing subclasses them.

- :class:`RoutineJob`: what a routine's context needs of its job (``emit``, ``log``, state).
- :class:`RuntimeServices`: what a job and its activations need of the runtime they run in.
- :class:`ActivationJob`: what one routine's activations need of the job they run for.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, Self

import anyio

from routilux.bus.bus import EventBus
from routilux.bus.events import EventType
from routilux.bus.status import JobStatus
from routilux.engine.handoff import ThreadHandoff
from routilux.engine.probe import Probe
from routilux.engine.records import ErrorRecord, ExecutionRecord, RoutineState
from routilux.engine.timers import TimerQueue


class RoutineJob(Protocol):
    """The job as a routine's :class:`~routilux.engine.routine.Context` reaches it."""

    @property
    def job_id(self) -> str: ...

    @property
    def flow_id(self) -> str: ...

    @property
    def shared_data(self) -> dict[str, Any]: ...

    async def _emit(self, routine_id: str, event: str, payload: dict[str, Any]) -> None: ...

    def _log(self, routine_id: str, level: str, message: str, fields: dict[str, Any]) -> None: ...

    def _progress(self, routine_id: str, fraction: float, message: str | None) -> None: ...


class RuntimeServices(Protocol):
    """The runtime as its jobs use it: the shared services and a task group to run in."""

    @property
    def runtime_id(self) -> str: ...

    @property
    def bus(self) -> EventBus: ...

    @property
    def timers(self) -> TimerQueue: ...

    @property
    def handoff(self) -> ThreadHandoff: ...

    @property
    def limiter(self) -> anyio.CapacityLimiter: ...

    def spawn(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None: ...

    def _job_ended(self, job_id: str) -> None: ...


class ActivationJob(RoutineJob, Protocol):
    """The job as a :class:`~routilux.engine.routine_run.RoutineRun` drives it: its status and
    records, its scheduling, and the end of the job when an activation fails it."""

    _active: int
    changes: int

    @property
    def status(self) -> JobStatus: ...

    @property
    def probe(self) -> Probe[Self] | None: ...

    @property
    def routine_states(self) -> dict[str, RoutineState]: ...

    @property
    def execution_history(self) -> deque[ExecutionRecord]: ...

    @property
    def errors(self) -> deque[ErrorRecord]: ...

    @property
    def _ended(self) -> bool: ...

    @property
    def _scopes(self) -> set[anyio.CancelScope]: ...

    @property
    def _handoff(self) -> ThreadHandoff: ...

    @property
    def _runtime(self) -> RuntimeServices: ...

    async def _held(self) -> None: ...

    def _schedule(self, routine_id: str, draining: bool = False) -> None: ...

    def _settle(self) -> None: ...

    def _on_wake(self, routine_id: str) -> None: ...

    def _finish(self, status: JobStatus, error: dict[str, Any] | None) -> None: ...

    def _publish(self, type_: EventType, routine_id: str | None, data: dict[str, Any]) -> None: ...

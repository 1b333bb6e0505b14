"""The flow document: what a DSL file says, as msgspec Structs.

This is pure data (comparable, encodable, lossless to round-trip). Turning it into something that
runs — instantiating routine classes, resolving connections — is :mod:`routilux.engine.plan`'s
job, so that a flow can be stored, edited and exported without importing any routine code.
"""

from __future__ import annotations

import re
from typing import Any, Final, Literal

import msgspec

#: Flow, job and runtime ids. Not "." or "..": in a URL those are dot-segments, which clients
#: resolve away (``/api/flows/..`` is ``/api/``), so such a resource could not be addressed.
ID_PATTERN: Final[str] = r"^(?!\.\.?$)[A-Za-z0-9_.-]{1,128}$"
ROUTINE_ID_PATTERN: Final[str] = r"^[A-Za-z0-9_-]{1,128}$"
_ID_RE: Final = re.compile(ID_PATTERN)
_ROUTINE_ID_RE: Final = re.compile(ROUTINE_ID_PATTERN)

Strategy = Literal["stop", "continue", "retry", "skip"]


class ErrorHandler(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """What happens when a routine's logic raises.

    - ``stop``: the job fails with the error (the default).
    - ``continue``: the error is recorded on the routine and the job goes on.
    - ``retry``: the same activation runs again, up to ``max_retries`` times, waiting
      ``retry_delay * retry_backoff ** (attempt - 1)`` seconds between tries (on the event loop,
      never in a thread); when the retries are spent, the job fails as with ``stop``.
    - ``skip``: the activation's items are set aside as skipped, the routine is marked
      ``skipped``, and the job goes on; the error is kept in the history, not in the job errors.
    """

    strategy: Strategy = "stop"
    max_retries: int = 3
    retry_delay: float = 1.0
    retry_backoff: float = 2.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if self.retry_delay < 0:
            raise ValueError("retry_delay must be >= 0")
        if self.retry_backoff < 1:
            raise ValueError("retry_backoff must be >= 1")

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        return self.retry_delay * self.retry_backoff ** (attempt - 1)


STOP: Final = ErrorHandler()


class PolicySpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """An activation policy as written in a DSL (``{type: batch_size, n: 10}``)."""

    type: Literal["immediate", "all_slots_ready", "batch_size", "time_interval", "custom"]
    n: int | None = None
    seconds: float | None = None
    name: str | None = None
    flush_when_idle: bool | None = None


class RoutineSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """One routine of a flow: a registered class name and its settings."""

    class_name: str = msgspec.field(name="class")
    config: dict[str, Any] = {}
    error_handler: ErrorHandler | None = None
    policy: PolicySpec | None = None
    description: str | None = None


class Connection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An edge from ``routine.event`` to ``routine.slot``."""

    source: str = msgspec.field(name="from")
    target: str = msgspec.field(name="to")

    @property
    def source_routine(self) -> str:
        return self.source.partition(".")[0]

    @property
    def source_event(self) -> str:
        return self.source.partition(".")[2]

    @property
    def target_routine(self) -> str:
        return self.target.partition(".")[0]

    @property
    def target_slot(self) -> str:
        return self.target.partition(".")[2]


class Execution(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Job-level settings every job of the flow starts with (overridable per job).

    ``durable`` (default true): a server keeps each live job's checkpoint, so the job resumes
    after a restart or a crash. False opts a pure-throughput pipeline out: no checkpoint is
    written, and a restart fails its live jobs (``interrupted: server restarted``).
    """

    timeout: float | None = None
    durable: bool = True


class Flow(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A workflow: routines and the connections between them. Cycles are allowed."""

    flow_id: str
    description: str | None = None
    execution: Execution = Execution()
    error_handler: ErrorHandler | None = None
    routines: dict[str, RoutineSpec] = {}
    connections: list[Connection] = []

    def to_builtins(self) -> dict[str, Any]:
        """The DSL form as plain Python data, in document order."""
        data: dict[str, Any] = msgspec.to_builtins(self)
        return data


def is_valid_id(value: str) -> bool:
    """Flow, job and runtime ids: 1-128 of letters, digits, ``_ . -``, but not ``.`` or ``..``."""
    return bool(_ID_RE.fullmatch(value))  # not .match: "$" also matches before a final "\n"


def is_valid_routine_id(value: str) -> bool:
    """Routine ids are ids without dots, since ``routine.event`` splits on the first dot."""
    return bool(_ROUTINE_ID_RE.fullmatch(value))

"""Every error the engine raises on purpose, each a distinct type with the context a caller
(the API layer, a test, a user's script) needs to explain it without parsing messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from routilux.errors import RoutiluxError as RoutiluxError  # re-exported: the engine's errors are these


class Problem(msgspec.Struct, frozen=True):
    """One problem found in a flow or DSL document, with where it is (``routines.clean.class``)."""

    location: str
    code: str
    message: str


class DSLError(RoutiluxError):
    """A DSL document could not be read: syntax, limits, or shape. Lists every problem found."""

    code = "invalid_dsl"

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        first = self.problems[0]
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        super().__init__(
            f"{first.location}: {first.message}{more}",
            problems=[msgspec.structs.asdict(p) for p in self.problems],
        )


class FlowValidationError(DSLError):
    """A flow is well-formed but cannot run: unknown classes, events, slots or routines."""

    code = "invalid_flow"


class UnknownRoutineClass(RoutiluxError):
    code = "unknown_routine_class"


class ConfigError(RoutiluxError):
    """A routine's config does not match its class's schema."""

    code = "invalid_config"


class IllegalTransition(RoutiluxError):
    """A job was asked to do something its current status does not allow."""

    code = "illegal_transition"

    def __init__(self, job_id: str, status: str, action: str) -> None:
        super().__init__(
            f"cannot {action} job {job_id}: it is {status}",
            job_id=job_id,
            status=status,
            action=action,
        )
        self.status = status
        self.action = action


class JobTerminated(RoutiluxError):
    """Work was handed to a job that has already ended (its results are abandoned)."""

    code = "job_terminated"


class UnknownRoutine(RoutiluxError):
    code = "unknown_routine"


class UnknownSlot(RoutiluxError):
    code = "unknown_slot"


class UnknownEvent(RoutiluxError):
    code = "unknown_event"


class SlotFull(RoutiluxError):
    """A slot stayed full for longer than the emitter may wait (back-pressure gave up)."""

    code = "slot_full"


class JobTimeout(RoutiluxError):
    code = "timeout"


class RuntimeNotFound(RoutiluxError):
    code = "runtime_not_found"


class DuplicateRuntime(RoutiluxError):
    code = "duplicate_runtime"


class RuntimeShutdown(RoutiluxError):
    code = "runtime_shutdown"


class CheckpointError(RoutiluxError):
    """A job's checkpoint could not be taken or cannot be restored; ``code`` says which way:

    - ``checkpoint_not_encodable``: a value the job holds (``shared_data``, a queued item, a
      policy's memory) is not JSON; ``context["where"]`` names it, so the routine that stored it
      can be fixed. The job itself is unharmed.
    - ``checkpoint_invalid``: the bytes are not a checkpoint of a format version this engine reads.
    - ``checkpoint_incompatible``: the flow changed since the checkpoint (a routine or slot it
      names is gone), so the job cannot be brought back as it was: the caller fails it instead.
    - ``checkpoint_conflict``: a live job with that id already runs in this engine.
    """

    code = "checkpoint_error"

    def __init__(self, message: str, *, code: str, **context: Any) -> None:
        super().__init__(message, **context)
        self.code = code

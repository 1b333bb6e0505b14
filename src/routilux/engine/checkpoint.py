"""A live job's checkpoint: everything it takes to bring the job back after its process died.

A process that stops (or crashes) loses every job it runs unless something outlives it. The
engine's half of that is here: :meth:`routilux.engine.job.Job.checkpoint` describes a live job as
a :class:`JobCheckpoint`, :func:`encode_checkpoint` makes it JSON bytes a store can keep, and
:meth:`routilux.engine.runtime.Engine.restore_job` brings the job back from them in a new process,
in the status it had. When to checkpoint and where to keep the bytes is the server's business.

What a checkpoint holds, and why so:

- Identity, timestamps, status (``running``, ``idle`` or ``paused``; a job that ended has no
  checkpoint: its stored record says everything), ``seq`` (the last event published, so the
  numbering continues with no reuse), ``shared_data``, routine states, the bounded execution
  history, errors and pause points.
- Every slot queue's items in order. Items taken by activations in flight (started, not
  finished) go back to the FRONT of their queues, so they run again after a restore: delivery is
  at-least-once, and ``ctx.redelivered`` tells the activation that gets them.
  ``redelivered`` counts how many items at the front of each queue are such items.
- Time as what is LEFT, never as loop times (the loop clock restarts with the process): the job's
  remaining timeout, each routine's pending policy wake-up (``wake_in``: a ``time_interval``
  leftover flush), and the policies' own memory as they save it
  (:meth:`~routilux.engine.policies.ActivationPolicy.save_state`). The time between the
  checkpoint and the restore is not counted against the job: it was not running.
- Batches a ``batch_size`` policy has not filled yet are simply items still queued.

A checkpoint shares the job's values rather than copying them (a deep copy per checkpoint would
cost what encoding costs, twice): encode it before the job runs on, which
:meth:`~routilux.engine.job.Job.checkpoint_bytes` does in one step. Values are kept as JSON, so
``shared_data`` and queued items must be JSON data; tuples and sets come back as lists, and a
value msgspec cannot encode fails the checkpoint with a :class:`CheckpointError` naming it.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import msgspec

from routilux.bus.status import JobStatus
from routilux.engine.errors import CheckpointError
from routilux.engine.records import ErrorRecord, ExecutionRecord, PausePoint, RoutineState

if TYPE_CHECKING:
    from routilux.engine.plan import FlowPlan

#: The format of :class:`JobCheckpoint`; bumped when a field changes meaning or type, so an
#: engine never misreads a checkpoint written by another version (it refuses it instead).
CHECKPOINT_VERSION: Final[int] = 1

#: The statuses a checkpoint may record: the live ones a job can be brought back in.
CHECKPOINT_STATUSES: Final = frozenset({JobStatus.RUNNING, JobStatus.IDLE, JobStatus.PAUSED})


class RoutineCheckpoint(msgspec.Struct, frozen=True, omit_defaults=True):
    """One routine of a job: its state, its queued items, and its policy's memory and wake-up."""

    state: RoutineState
    #: Queued items per slot, oldest first (in-flight items first of all); empty slots omitted.
    queues: dict[str, list[Any]] = {}
    #: How many items at the front of each slot were taken by an activation that did not finish.
    redelivered: dict[str, int] = {}
    #: The policy's per-job memory, as :meth:`ActivationPolicy.save_state` keeps it.
    policy_state: dict[str, Any] = {}
    #: Seconds until the policy asked to be consulted again (a ``time_interval`` flush), if it did.
    wake_in: float | None = None


class JobCheckpoint(msgspec.Struct, frozen=True):
    """A live job as it can be restored in another process (see the module docstring)."""

    version: int
    job_id: str
    flow_id: str
    runtime_id: str
    status: JobStatus
    taken_at: datetime  # wall clock, for the server's bookkeeping; nothing is computed from it
    created_at: datetime
    started_at: datetime | None
    seq: int  # the last event published: the restored job's first event is seq + 1
    timeout: float | None
    timeout_left: float | None  # seconds of the timeout still to run; None: no timeout
    complete_when_idle: bool
    error: dict[str, Any] | None
    shared_data: dict[str, Any]
    routines: dict[str, RoutineCheckpoint]
    execution_history: list[ExecutionRecord] = []
    errors: list[ErrorRecord] = []
    pause_points: list[PausePoint] = []


class _Header(msgspec.Struct):
    version: int


_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(JobCheckpoint)
_header_decoder: Final = msgspec.json.Decoder(_Header)
_ENCODE_ERRORS: Final = (TypeError, ValueError, OverflowError, RecursionError)


def encode_checkpoint(checkpoint: JobCheckpoint) -> bytes:
    """``checkpoint`` as JSON bytes; a :class:`CheckpointError` (``checkpoint_not_encodable``)
    names the first value that is not JSON data."""
    try:
        return _encoder.encode(checkpoint)
    except _ENCODE_ERRORS as exc:
        raise _not_encodable(checkpoint, exc) from None


def decode_checkpoint(data: bytes | bytearray | memoryview | str) -> JobCheckpoint:
    """The checkpoint :func:`encode_checkpoint` made; ``checkpoint_invalid`` if it is not one of
    this engine's format version."""
    try:
        version = _header_decoder.decode(data).version
    except msgspec.DecodeError as exc:
        raise CheckpointError(f"not a job checkpoint: {exc}", code="checkpoint_invalid") from None
    if version != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint format version {version} is not the version this engine reads ({CHECKPOINT_VERSION})",
            code="checkpoint_invalid",
            version=version,
        )
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise CheckpointError(f"not a job checkpoint: {exc}", code="checkpoint_invalid") from None


def check_restorable(plan: FlowPlan, checkpoint: JobCheckpoint) -> None:
    """Raise a :class:`CheckpointError` unless ``checkpoint`` can be restored onto ``plan``.

    Every routine and slot holding data in the checkpoint must still exist in the plan
    (``checkpoint_incompatible`` otherwise: that data would have nowhere to go). Routines and
    slots the plan has added start empty, so an additive change of the flow keeps its jobs.
    """
    job_id = checkpoint.job_id
    if checkpoint.version != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"job {job_id}: checkpoint format version {checkpoint.version} is not {CHECKPOINT_VERSION}",
            code="checkpoint_invalid", job_id=job_id, version=checkpoint.version,
        )
    if checkpoint.status not in CHECKPOINT_STATUSES:
        raise CheckpointError(
            f"job {job_id}: a checkpoint of a {checkpoint.status.value} job cannot be restored",
            code="checkpoint_invalid", job_id=job_id, status=checkpoint.status.value,
        )
    if checkpoint.flow_id != plan.flow_id:
        raise CheckpointError(
            f"job {job_id} is of flow '{checkpoint.flow_id}', not '{plan.flow_id}'",
            code="checkpoint_incompatible", job_id=job_id, flow_id=checkpoint.flow_id,
        )
    for rid, saved in checkpoint.routines.items():
        routine = plan.routines.get(rid)
        if routine is None:
            raise CheckpointError(
                f"job {job_id}: routine '{rid}' is no longer in flow '{plan.flow_id}'",
                code="checkpoint_incompatible", job_id=job_id, routine_id=rid,
            )
        for slot in (*saved.queues, *saved.redelivered):
            if slot not in routine.slot_specs:
                raise CheckpointError(
                    f"job {job_id}: routine '{rid}' of flow '{plan.flow_id}' no longer has slot '{slot}'",
                    code="checkpoint_incompatible", job_id=job_id, routine_id=rid, slot=slot,
                )


def _not_encodable(checkpoint: JobCheckpoint, exc: BaseException) -> CheckpointError:
    """The error naming where the first value that is not JSON data is (slow: on failure only)."""
    places: list[tuple[str, str | None, Any]] = [
        (f"shared_data[{key!r}]", None, value) for key, value in checkpoint.shared_data.items()
    ]
    for rid, saved in checkpoint.routines.items():
        places.extend((f"routines[{rid!r}].queues[{slot!r}]", rid, items) for slot, items in saved.queues.items())
        places.append((f"routines[{rid!r}].policy_state", rid, saved.policy_state))
    places.append(("error", None, checkpoint.error))
    for where, owner, value in places:
        found = _first_bad(value, where)
        if found is not None:
            path, kind = found
            return CheckpointError(
                f"job {checkpoint.job_id} cannot be checkpointed: {path} is {kind}, not JSON data",
                code="checkpoint_not_encodable", job_id=checkpoint.job_id, where=path, routine_id=owner, type=kind,
            )
    return CheckpointError(
        f"job {checkpoint.job_id} cannot be checkpointed: {type(exc).__name__}: {exc}",
        code="checkpoint_not_encodable", job_id=checkpoint.job_id, where=None,
    )


def _first_bad(value: Any, path: str) -> tuple[str, str] | None:
    try:
        _encoder.encode(value)
        return None
    except _ENCODE_ERRORS:
        pass
    if isinstance(value, dict):
        for key, inner in value.items():
            found = _first_bad(inner, f"{path}[{key!r}]")
            if found is not None:
                return found
        return path, "a dict with a key that is not a string"
    if isinstance(value, (list, tuple)):
        for index, inner in enumerate(value):
            found = _first_bad(inner, f"{path}[{index}]")
            if found is not None:
                return found
    return path, f"a {type(value).__module__}.{type(value).__qualname__}"

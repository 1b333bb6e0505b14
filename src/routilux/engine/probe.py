"""Where a debugger may look into a running job, and stop it.

The engine calls a job's probe (if one is attached) at four points: before an activation's logic
runs, when an item arrives at a slot, when a routine emits, and when an item crosses a
connection. A probe answers whether to **hold** there: then the job is paused (by the probe) and
the engine waits, with the data in hand, until the job is resumed; nothing is dropped or
consumed meanwhile. With no probe attached (the normal case) each point costs one attribute test.

The engine knows nothing about breakpoints or expressions; :mod:`routilux.debug` implements this.

A probe is generic in the job it is handed (``Probe[Job]``) so that this module needs nothing of
:mod:`routilux.engine.job`: the job holds a probe, and a probe sees the job only as its parameter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from routilux.engine.policies import Taken

#: The job a probe is handed: :class:`~routilux.engine.job.Job` for a real probe.
JobT = TypeVar("JobT", contravariant=True)


class Probe(Protocol[JobT]):
    def before_activation(self, job: JobT, routine_id: str, taken: Taken) -> bool:
        """Called before logic runs with the items the policy took; True holds the activation."""
        ...

    def on_slot(self, job: JobT, routine_id: str, slot: str, item: dict[str, Any], source: str | None) -> bool:
        """Called after ``item`` was queued at ``routine_id.slot``; True pauses the job (the item
        waits in the slot)."""
        ...

    def on_emit(self, job: JobT, routine_id: str, event: str, payload: dict[str, Any]) -> bool:
        """Called before an emitted payload is delivered; True holds the emission."""
        ...

    def on_connection(
        self, job: JobT, source: str, target_routine: str, target_slot: str, item: dict[str, Any]
    ) -> bool:
        """Called before ``item`` crosses ``source -> target_routine.target_slot``; True holds it."""
        ...

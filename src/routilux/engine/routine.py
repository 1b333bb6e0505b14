"""Routines: the units of work a flow is made of.

A routine class declares its input slots, output events, a config schema (a msgspec Struct with
defaults), an activation policy and its ``logic``. One instance is made per routine of a flow and
is shared by every job of that flow, so it must never hold per-job data: everything per job is
reached through the :class:`Context` that ``logic`` receives.

``logic`` is called with the context and one keyword argument per slot (the list of items the
policy took from it; empty if none). Define it with ``async def`` to run on the event loop, or
plain ``def`` to run in a worker thread of the job's runtime.
"""

from __future__ import annotations

import inspect
import keyword
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from routilux.engine.errors import ConfigError
from routilux.engine.flow import ErrorHandler
from routilux.engine.policies import ActivationPolicy, Immediate
from routilux.engine.ports import RoutineJob
from routilux.engine.slots import SlotSpec
from routilux.engine.validation import validation_problem

if TYPE_CHECKING:
    from routilux.engine.outbox import Outbox


class NoConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The config schema of a routine that takes no settings."""


def _check_port_name(kind: str, name: str) -> None:
    if not name.isidentifier() or keyword.iskeyword(name):
        raise ValueError(f"{kind} name {name!r} must be a Python identifier (it is passed as a keyword)")




class Routine:
    """Base class of every routine. Subclass it, declare ports, and write ``logic``."""

    #: Input slots: names, or names mapped to :class:`SlotSpec` for capacity/put timeout.
    slots: ClassVar[Sequence[str] | Mapping[str, SlotSpec]] = ()
    #: Output events.
    events: ClassVar[Sequence[str]] = ()
    #: The config schema; its field defaults are the routine's defaults.
    Config: ClassVar[type[msgspec.Struct]] = NoConfig
    #: When the routine runs and what it takes. An ``__init__`` may set ``self.policy`` from
    #: its config; a DSL ``policy`` block overrides both.
    policy: ActivationPolicy = Immediate()
    #: How many activations of this routine may run at once in one job.
    max_concurrency: ClassVar[int] = 1
    #: A class-level error handler (a DSL ``error_handler`` overrides it).
    error_handler: ClassVar[ErrorHandler | None] = None
    #: Where the catalogue lists it.
    category: ClassVar[str] = "general"

    def __init__(self, config: msgspec.Struct | Mapping[str, Any] | None = None) -> None:
        self.config = self.parse_config(config)
        self._slots: dict[str, SlotSpec] = {}
        self._events: list[str] = []
        declared = type(self).slots
        if isinstance(declared, Mapping):
            for name, spec in declared.items():
                self.define_slot(name, spec)
        else:
            for name in declared:
                self.define_slot(name)
        for name in type(self).events:
            self.define_event(name)

    # -- declaration -----------------------------------------------------------------------
    @classmethod
    def parse_config(cls, config: msgspec.Struct | Mapping[str, Any] | None) -> msgspec.Struct:
        """Validate ``config`` against :attr:`Config`; a :class:`ConfigError` says where."""
        if isinstance(config, cls.Config):
            return config
        try:
            # another Struct type is refused: dict() raises TypeError, a ConfigError below
            return msgspec.convert(dict(config or {}), cls.Config)  # type: ignore[arg-type]
        except msgspec.ValidationError as exc:
            problem = validation_problem(exc, "config", cls.Config)
            raise ConfigError(f"{problem.location}: {problem.message}", location=problem.location) from None
        except (TypeError, ValueError) as exc:  # a __post_init__ check in the schema
            raise ConfigError(f"config: {exc}", location="config") from None

    def define_slot(self, name: str, spec: SlotSpec | None = None) -> None:
        """Declare an input slot (also callable from a subclass ``__init__``)."""
        _check_port_name("slot", name)
        if name in self._slots:
            raise ValueError(f"slot {name!r} is declared twice")
        self._slots[name] = spec or SlotSpec()

    def define_event(self, name: str) -> None:
        """Declare an output event (also callable from a subclass ``__init__``)."""
        _check_port_name("event", name)
        if name in self._events:
            raise ValueError(f"event {name!r} is declared twice")
        self._events.append(name)

    @property
    def slot_specs(self) -> Mapping[str, SlotSpec]:
        return self._slots

    @property
    def event_names(self) -> Sequence[str]:
        return self._events

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.logic)

    def config_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = msgspec.to_builtins(self.config)
        return data

    # -- behaviour -------------------------------------------------------------------------
    def logic(self, ctx: Context, **inputs: list[Any]) -> Any:
        """Do the work. Override with ``def`` (worker thread) or ``async def`` (event loop)."""
        raise NotImplementedError(f"{type(self).__name__} does not define logic()")


class Context:
    """Everything ``logic`` may touch of the job it runs in.

    ``state`` is the job's shared key/value data: routines read and write it freely and the engine
    never overwrites it. ``config`` is the routine's parsed config (treat it as read-only: it is
    shared by every job of the flow). ``job`` is the running :class:`~routilux.engine.job.Job`,
    typed by what a context needs of it (:class:`~routilux.engine.ports.RoutineJob`).

    ``redelivered`` is True when this activation's items include some an activation had already
    taken before the job was restored from a checkpoint (its process stopped or crashed while it
    ran): delivery is at-least-once, so that earlier activation may have done part or all of its
    work (emitted, written state) already. Logic with effects outside the job can check it to
    avoid doing them twice.
    """

    __slots__ = ("job", "routine_id", "config", "attempt", "redelivered")

    def __init__(
        self, job: RoutineJob, routine_id: str, config: msgspec.Struct, attempt: int = 1, redelivered: bool = False
    ) -> None:
        self.job = job
        self.routine_id = routine_id
        self.config = config
        self.attempt = attempt
        self.redelivered = redelivered

    @property
    def job_id(self) -> str:
        return self.job.job_id

    @property
    def flow_id(self) -> str:
        return self.job.flow_id

    @property
    def state(self) -> dict[str, Any]:
        return self.job.shared_data

    async def emit(self, event: str, /, **payload: Any) -> None:
        """Send ``payload`` to every slot connected to ``event``, in connection order.

        Waits while a target slot is full (back-pressure), up to that slot's put timeout.
        """
        await self.job._emit(self.routine_id, event, payload)

    def log(self, message: str, level: str = "info", **fields: Any) -> None:
        """Publish a ``log`` event for this routine."""
        self.job._log(self.routine_id, level, message, fields)

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Publish a ``progress`` event (``fraction`` between 0 and 1)."""
        self.job._progress(self.routine_id, fraction, message)


class ThreadContext(Context):
    """The context handed to sync ``logic`` running in a worker thread.

    ``emit`` is a plain call here. It queues the payload in the activation's outbox and returns;
    the loop delivers batches in order with the usual back-pressure, and ``emit`` blocks only
    when the outbox itself is full. A delivery failure (a slot that stayed full, the job having
    ended) is raised by the next ``emit`` and reported for the activation.
    """

    __slots__ = ("_outbox",)

    def __init__(
        self,
        job: RoutineJob,
        routine_id: str,
        config: msgspec.Struct,
        attempt: int,
        outbox: Outbox,
        redelivered: bool = False,
    ) -> None:
        super().__init__(job, routine_id, config, attempt, redelivered)
        self._outbox = outbox

    def emit(self, event: str, /, **payload: Any) -> None:  # type: ignore[override]
        self._outbox.put(("emit", event, payload, None))

    def log(self, message: str, level: str = "info", **fields: Any) -> None:
        self._outbox.put(("log", level, message, fields))

    def progress(self, fraction: float, message: str | None = None) -> None:
        self._outbox.put(("progress", fraction, message, None))

"""Activation policies decide when a routine runs and which queued items it gets.

A policy is a stateless description shared by every job of a flow; what it must remember per job
(when it last fired) lives in the :class:`PolicyView` the job hands it. A policy never sleeps or
polls: if it needs time to pass it asks for a wake-up with :meth:`PolicyView.wake_at`, and the
runtime's single timer task calls back. Order within a slot is always preserved (items are taken
oldest first).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from routilux.engine.slots import SlotQueue

Taken = dict[str, list[Any]]


class PolicyView(Protocol):
    """What a policy sees of one routine in one job."""

    @property
    def queues(self) -> Mapping[str, SlotQueue]: ...

    @property
    def now(self) -> float: ...

    @property
    def state(self) -> dict[str, Any]: ...

    @property
    def draining(self) -> bool:
        """True when a job that completes when idle has nothing else to do: a policy may
        flush partial work now, or it stays queued (and is reported as unconsumed)."""
        ...

    def wake_at(self, deadline: float) -> None:
        """Ask to be consulted again at ``deadline`` (``anyio.current_time()`` clock)."""
        ...


class ActivationPolicy:
    """Base class: ``take`` returns the items for one activation, or ``None`` to wait."""

    name: str = "policy"

    def take(self, view: PolicyView) -> Taken | None:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """The DSL form of this policy (``{"type": ...}`` plus its parameters)."""
        return {"type": self.name}

    def save_state(self, state: dict[str, Any], now: float) -> dict[str, Any]:
        """This policy's per-job memory as a job checkpoint keeps it (plain JSON data).

        The loop clock (``now``) restarts with the process, so a policy that remembers loop times
        must save them relative to ``now`` and rebuild them in :meth:`load_state`. The default
        keeps the memory as it is, which suits a policy that remembers no times.
        """
        return dict(state)

    def load_state(self, saved: dict[str, Any], now: float) -> dict[str, Any]:
        """The memory :meth:`save_state` saved, rebuilt against the restoring process's ``now``."""
        return dict(saved)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.describe() == self.describe()

    def __hash__(self) -> int:
        return hash(repr(sorted(self.describe().items())))

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "type")
        return f"{type(self).__name__}({params})"


def _take_all(queues: Mapping[str, SlotQueue]) -> Taken:
    return {name: queue.take() for name, queue in queues.items()}


class Immediate(ActivationPolicy):
    """Run as soon as any slot has data, taking everything queued in every slot (the default)."""

    name = "immediate"

    def take(self, view: PolicyView) -> Taken | None:
        queues = view.queues
        for queue in queues.values():
            if len(queue):
                return _take_all(queues)
        return None


class AllSlotsReady(ActivationPolicy):
    """Run when every slot holds at least one item, taking the oldest item of each."""

    name = "all_slots_ready"

    def take(self, view: PolicyView) -> Taken | None:
        queues = view.queues
        if not queues or any(not len(q) for q in queues.values()):
            return None
        return {name: queue.take(1) for name, queue in queues.items()}


class BatchSize(ActivationPolicy):
    """Run when a slot holds ``n`` items, taking ``n`` from each slot that has them.

    In a job started with ``complete_when_idle``, leftovers are flushed as a short batch once
    nothing else can run, so the job never ends with data stuck in a half-full batch. In other
    jobs a partial batch waits for more input (it is visible in the queue status).
    """

    name = "batch_size"

    def __init__(self, n: int, *, flush_when_idle: bool = True) -> None:
        if n < 1:
            raise ValueError("batch_size needs n >= 1")
        self.n = n
        self.flush_when_idle = flush_when_idle

    def take(self, view: PolicyView) -> Taken | None:
        n = self.n
        queues = view.queues
        if any(len(q) >= n for q in queues.values()):
            return {name: (q.take(n) if len(q) >= n else []) for name, q in queues.items()}
        if view.draining and self.flush_when_idle and any(len(q) for q in queues.values()):
            return {name: q.take(n) for name, q in queues.items()}
        return None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.name, "n": self.n}
        if not self.flush_when_idle:
            out["flush_when_idle"] = False
        return out


class TimeInterval(ActivationPolicy):
    """Run at most once every ``seconds``, taking everything queued.

    Leading edge: data arriving after a quiet period runs at once. Items arriving within the
    interval wait, and a real timer runs the routine when the interval ends, so leftovers are
    always flushed without any polling.
    """

    name = "time_interval"

    def __init__(self, seconds: float) -> None:
        if not seconds > 0:
            raise ValueError("time_interval needs seconds > 0")
        self.seconds = float(seconds)

    def take(self, view: PolicyView) -> Taken | None:
        queues = view.queues
        if not any(len(q) for q in queues.values()):
            return None
        state = view.state
        last = state.get("last")
        now = view.now
        if last is not None and now < last + self.seconds:
            view.wake_at(last + self.seconds)
            return None
        state["last"] = now
        return _take_all(queues)

    def describe(self) -> dict[str, Any]:
        return {"type": self.name, "seconds": self.seconds}

    def save_state(self, state: dict[str, Any], now: float) -> dict[str, Any]:
        # The last run is a loop time; what outlives the process is what is left of its interval.
        last = state.get("last")
        return {} if last is None else {"interval_left": max(0.0, last + self.seconds - now)}

    def load_state(self, saved: dict[str, Any], now: float) -> dict[str, Any]:
        left = saved.get("interval_left")
        return {} if left is None else {"last": now + float(left) - self.seconds}


class Custom(ActivationPolicy):
    """Delegate the decision to a function ``fn(view) -> dict[slot, items] | None``.

    ``name`` is what the DSL calls it (``{type: custom, name: ...}``); register the function
    with :meth:`routilux.engine.registry.Registry.register_policy` to use it from a DSL.
    """

    name = "custom"

    def __init__(self, fn: Callable[[PolicyView], Taken | None], name: str | None = None) -> None:
        self.fn = fn
        self.policy_name = name or getattr(fn, "__name__", "custom")

    def take(self, view: PolicyView) -> Taken | None:
        return self.fn(view)

    def describe(self) -> dict[str, Any]:
        return {"type": self.name, "name": self.policy_name}


def immediate() -> Immediate:
    return Immediate()


def all_slots_ready() -> AllSlotsReady:
    return AllSlotsReady()


def batch_size(n: int, *, flush_when_idle: bool = True) -> BatchSize:
    return BatchSize(n, flush_when_idle=flush_when_idle)


def time_interval(seconds: float) -> TimeInterval:
    return TimeInterval(seconds)


def custom(fn: Callable[[PolicyView], Taken | None], name: str | None = None) -> Custom:
    return Custom(fn, name)

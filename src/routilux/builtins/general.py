"""General-purpose routines: reshape items, filter and route them, batch them, delay them.

They are driven by declarative config only (dotted paths and the predicate language of
:mod:`routilux.builtins.predicates`), so a flow document can use them without naming any code.
Like the data routines, each activation works out all of its outputs before emitting any, so an
error (a missing path in a strict Mapper, an item no Router route takes) leaves nothing half sent.
"""

from __future__ import annotations

import keyword
from collections.abc import Mapping
from typing import Annotated, Any, Final

import anyio
import msgspec

from routilux.builtins.predicates import (
    MISSING,
    Where,
    all_of,
    check_path,
    matches,
    resolve,
)
from routilux.engine.policies import ActivationPolicy, BatchSize
from routilux.engine.routine import Context, Routine

__all__ = [
    "ROUTINES",
    "Batcher",
    "BatcherConfig",
    "Delay",
    "DelayConfig",
    "Filter",
    "FilterConfig",
    "Mapper",
    "MapperConfig",
    "MissingPathError",
    "NoRouteError",
    "RouteRule",
    "Router",
    "RouterConfig",
]

Item = dict[str, Any]

#: Longest delay Delay accepts (a day).
MAX_DELAY: Final = 86400.0


class MissingPathError(LookupError):
    """A strict Mapper's source path leads nowhere in an item."""


class NoRouteError(LookupError):
    """An item matched none of a Router's routes and the Router has no default event."""


def _preview(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _event_problem(name: str) -> str | None:
    if not name.isidentifier() or keyword.iskeyword(name):
        return f"'{name}' is not a valid event name (it must be a Python identifier, not a keyword)"
    return None


# ---------------------------------------------------------------------------------------------
# Mapper
# ---------------------------------------------------------------------------------------------
class MapperConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    #: Output key -> dotted source path in the item (``{"name": "data.user.name"}``).
    mapping: dict[str, str]
    #: A missing source path raises MissingPathError (otherwise the key is set to ``None``).
    strict: bool = False
    #: Merge the mapped keys into the original item instead of emitting them alone.
    keep: bool = False

    def __post_init__(self) -> None:
        if not self.mapping:
            raise ValueError("mapping must name at least one output key")
        for key, path in self.mapping.items():
            if not key:
                raise ValueError("mapping keys (output keys) must not be empty")
            problem = check_path(path)
            if problem is not None:
                raise ValueError(f"mapping key '{key}': path {problem}")


class Mapper(Routine):
    """Builds a new item from dotted paths into each input item (``{out_key: "data.a.b"}``).

    Each output key gets the value at its source path, or ``None`` if the path leads nowhere
    (``strict: true`` raises ``MissingPathError`` instead). With ``keep: true`` the mapped keys
    are merged into the original item (overwriting keys of the same name); otherwise only the
    mapped keys are emitted. Output keys are plain keys: a dot in one is not nesting.
    """

    slots = ("input",)
    events = ("output",)
    Config = MapperConfig
    category = "transform"
    config: MapperConfig

    def map(self, item: Item) -> Item:
        mapped: Item = {}
        for key, path in self.config.mapping.items():
            value = resolve(item, path)
            if value is MISSING:
                if self.config.strict:
                    raise MissingPathError(f"path '{path}' (for key '{key}') is missing in item {_preview(item)}")
                value = None
            mapped[key] = value
        return {**item, **mapped} if self.config.keep else mapped

    async def logic(self, ctx: Context, input: list[Item]) -> None:  # type: ignore[override]
        outputs = [self.map(item) for item in input]
        for output in outputs:
            await ctx.emit("output", **output)


# ---------------------------------------------------------------------------------------------
# Filter
# ---------------------------------------------------------------------------------------------
class FilterConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    #: One predicate, or a list that must all pass (an empty list passes everything).
    where: Where


class Filter(Routine):
    """Sends items that pass ``config.where`` to ``output`` and the others to ``rejected``.

    ``where`` is one predicate or a list of predicates that must all pass, e.g.
    ``{path: data.score, op: ge, value: 0.5}``. A missing path or an incomparable value makes a
    predicate false (``exists`` is the way to test presence). Items are emitted unchanged.
    """

    slots = ("input",)
    events = ("output", "rejected")
    Config = FilterConfig
    category = "control"
    config: FilterConfig

    async def logic(self, ctx: Context, input: list[Item]) -> None:  # type: ignore[override]
        where = self.config.where
        decided = [("output" if matches(where, item) else "rejected", item) for item in input]
        for event, item in decided:
            await ctx.emit(event, **item)


# ---------------------------------------------------------------------------------------------
# Router
# ---------------------------------------------------------------------------------------------
class RouteRule(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Items that pass ``when`` (one predicate or a list, all must pass) go to ``event``."""

    event: str
    when: Where = []

    def __post_init__(self) -> None:
        problem = _event_problem(self.event)
        if problem is not None:
            raise ValueError(f"event {problem}")


class RouterConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    #: Tried in order; the first rule whose ``when`` passes decides the event.
    routes: list[RouteRule] = []
    #: The event for items no rule takes; ``None`` makes such an item an error.
    default: str | None = "default"

    def __post_init__(self) -> None:
        if self.default is not None:
            problem = _event_problem(self.default)
            if problem is not None:
                raise ValueError(f"default {problem}")
        elif not self.routes:
            raise ValueError("routes must not be empty when default is null (every item would fail)")


class Router(Routine):
    """Sends each item to the event of the first route whose predicates it passes, else to ``default``.

    The events are declared from the config: one per distinct ``routes[].event`` (several routes
    may share an event, which makes them alternatives), plus ``default`` unless it is ``null``,
    in the order they first appear. An item that no route takes when ``default`` is ``null`` is
    an error (``NoRouteError``), never dropped; the activation then emits nothing.
    """

    slots = ("input",)
    Config = RouterConfig
    category = "control"
    config: RouterConfig

    def __init__(self, config: msgspec.Struct | Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        rules = self.config.routes
        # Predicates are resolved once from the (shared, read-only) config; not per-job state.
        self._rules = tuple((all_of(rule.when), rule.event) for rule in rules)
        names = [rule.event for rule in rules]
        if self.config.default is not None:
            names.append(self.config.default)
        for name in dict.fromkeys(names):
            self.define_event(name)

    def route(self, item: Item) -> str:
        """The event ``item`` goes to (``NoRouteError`` if none)."""
        for predicates, event in self._rules:
            if all(predicate.test(item) for predicate in predicates):
                return event
        if self.config.default is None:
            raise NoRouteError(f"no route matches item {_preview(item)} and the router has no default event")
        return self.config.default

    async def logic(self, ctx: Context, input: list[Item]) -> None:  # type: ignore[override]
        routed = [(self.route(item), item) for item in input]
        for event, item in routed:
            await ctx.emit(event, **item)


# ---------------------------------------------------------------------------------------------
# Batcher
# ---------------------------------------------------------------------------------------------
class BatcherConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    #: Items per batch; a shorter last batch is flushed when the job has nothing else to do.
    size: Annotated[int, msgspec.Meta(ge=1)] = 10


class Batcher(Routine):
    """Groups items into batches of ``config.size`` and emits each batch as one item.

    Its activation policy is ``batch_size(config.size)`` (set per instance from the config; a DSL
    ``policy`` block overrides it), which flushes a short final batch when the job drains, so no
    item is left behind. Emits ``{"data": [each item's data], "items": [...], "count": n}``.
    """

    slots = ("input",)
    events = ("output",)
    Config = BatcherConfig
    policy: ActivationPolicy = BatchSize(BatcherConfig().size)
    category = "control"
    config: BatcherConfig

    def __init__(self, config: msgspec.Struct | Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        self.policy = BatchSize(self.config.size)

    async def logic(self, ctx: Context, input: list[Item]) -> None:  # type: ignore[override]
        if not input:
            return
        await ctx.emit("output", data=[item.get("data") for item in input], items=input, count=len(input))


# ---------------------------------------------------------------------------------------------
# Delay
# ---------------------------------------------------------------------------------------------
class DelayConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    #: Seconds each activation waits before passing its items on.
    seconds: Annotated[float, msgspec.Meta(ge=0, le=MAX_DELAY)] = 0.1


class Delay(Routine):
    """Waits ``config.seconds``, then passes the items on unchanged.

    The wait is once per activation (items that arrive together leave together, ``seconds``
    later), unlike SlowProcessor's per-item cost. It sleeps on the event loop (no thread is
    held), and cancelling the job interrupts it.
    """

    slots = ("input",)
    events = ("output",)
    Config = DelayConfig
    category = "control"
    config: DelayConfig

    async def logic(self, ctx: Context, input: list[Item]) -> None:  # type: ignore[override]
        await anyio.sleep(self.config.seconds)
        for item in input:
            await ctx.emit("output", **item)


ROUTINES: list[type[Routine]] = [Mapper, Filter, Router, Batcher, Delay]

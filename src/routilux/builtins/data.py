"""The data routines: sources, checks, transforms and sinks for items of the form ``{"data": ...}``.

Every item in a slot is a dict and, by convention, its value is under ``"data"``. These routines
read ``item["data"]`` (``None`` when absent), keep the item's other keys where it makes sense, and
emit dicts again. They are the ones the spec's examples and the debugger's demo flows use.

Three rules hold for all of them:

- **No per-job state on the instance.** One routine instance serves every job of a flow, so what
  must be remembered per job (DataSource's running index, ErrorGenerator's random draws, DataSink's
  results) lives in the job's shared data, under the keys documented on each class.
- **An activation either emits everything or raises before emitting anything.** Each routine
  works out all of its outputs first; so when it raises, the error strategy (``retry``, ``skip``,
  ``continue``) applies to the whole activation and a retry never emits an item twice.
- **Bad input raises a clear error** (usually ``ValueError``) instead of passing garbage on, so
  the routine's error strategy decides what happens.
"""

from __future__ import annotations

import copy
import math
import random
import re
import secrets
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Final, Literal

import anyio
import msgspec

from routilux.engine.policies import ActivationPolicy, AllSlotsReady
from routilux.engine.routine import Context, Routine
from routilux.engine.validation import kind_of

__all__ = [
    "ROUTINES",
    "DataAggregator",
    "DataMultiplier",
    "DataMultiplierConfig",
    "DataSink",
    "DataSinkConfig",
    "DataSource",
    "DataSourceConfig",
    "DataTransformer",
    "DataTransformerConfig",
    "DataValidator",
    "DataValidatorConfig",
    "ErrorGenerator",
    "ErrorGeneratorConfig",
    "GeneratedError",
    "SinkLimitExceeded",
    "SlowProcessor",
    "SlowProcessorConfig",
]

Item = dict[str, Any]
Number = int | float

#: Job shared-data key of DataSource's running indexes: ``{routine_id: next_index}``.
SOURCES_KEY: Final = "__sources__"
#: Job shared-data key of ErrorGenerator's random streams: ``{routine_id: {seed, draws}}``.
RANDOM_KEY: Final = "__random__"
#: Job shared-data key of DataSink's results: ``{routine_id: [item, ...]}``.
RESULTS_KEY: Final = "results"

#: Longest delay SlowProcessor accepts (a day; longer is a mistake, not a simulation).
MAX_DELAY: Final = 86400.0


class GeneratedError(RuntimeError):
    """The failure ErrorGenerator produces on purpose."""


class SinkLimitExceeded(RuntimeError):
    """DataSink was given more items than its ``max_items`` (it refuses rather than drops)."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    """A JSON-ish name of ``value``'s type, for error messages."""
    return kind_of(value, mapping="object")


def _preview(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# DataSource
# ---------------------------------------------------------------------------------------------
class DataSourceConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    #: Emit these on every trigger (with index 0..n-1); ``None`` emits the trigger's own data.
    items: list[Any] | None = None


class DataSource(Routine):
    """Emits ``{data, index}`` per item: each trigger's own data, or each of ``config.items``.

    With ``config.items`` set, every trigger item makes the source emit each configured item in
    order, with ``index`` 0..n-1 (a deep copy, so downstream routines can never change the
    config that other jobs share). Without it, each trigger item's ``data`` is emitted (the whole
    trigger item if it has no ``data`` key) with a running ``index`` that counts per job from 0;
    the next index is kept in the job's shared data as ``__sources__[routine_id]``.
    """

    slots = ("trigger",)
    events = ("output",)
    Config = DataSourceConfig
    category = "data"
    config: DataSourceConfig

    async def logic(self, ctx: Context, trigger: list[Item]) -> None:  # type: ignore[override]
        configured = self.config.items
        outputs: list[Item] = []
        if configured is not None:
            for _ in trigger:
                outputs.extend({"data": copy.deepcopy(value), "index": index} for index, value in enumerate(configured))
        else:
            counters: dict[str, int] = ctx.state.setdefault(SOURCES_KEY, {})
            start = counters.get(ctx.routine_id, 0)
            outputs = [{"data": item.get("data", item), "index": start + offset} for offset, item in enumerate(trigger)]
            counters[ctx.routine_id] = start + len(outputs)
        for output in outputs:
            await ctx.emit("output", **output)


# ---------------------------------------------------------------------------------------------
# DataValidator
# ---------------------------------------------------------------------------------------------
TypeName = Literal["any", "string", "number", "integer", "boolean", "list", "object"]

_TYPE_CHECKS: Final[dict[str, Callable[[Any], bool]]] = {
    "any": lambda value: True,
    "string": lambda value: isinstance(value, str),
    "number": _is_number,
    "integer": lambda value: isinstance(value, int) and not isinstance(value, bool),
    "boolean": lambda value: isinstance(value, bool),
    "list": lambda value: isinstance(value, (list, tuple)),
    "object": lambda value: isinstance(value, dict),
}

NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]


class DataValidatorConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    #: ``None``, ``""``, ``[]`` and ``{}`` are invalid.
    not_empty: bool = True
    #: The JSON type ``data`` must have (``number`` excludes booleans; ``integer`` is int only).
    type: TypeName = "any"
    #: Bounds for numbers (inclusive).
    min: Number | None = None
    max: Number | None = None
    #: Bounds on the length of strings, lists and objects (inclusive).
    min_length: NonNegativeInt | None = None
    max_length: NonNegativeInt | None = None
    #: Keys an object must have.
    required_keys: list[str] = []
    #: A regular expression a string must contain a match of (``re.search``; anchor it with
    #: ``^...$`` to match the whole string).
    pattern: str | None = None

    def __post_init__(self) -> None:
        for name in ("min", "max"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min must be <= max (got min={self.min}, max={self.max})")
        if self.min_length is not None and self.max_length is not None and self.min_length > self.max_length:
            raise ValueError(f"min_length must be <= max_length (got {self.min_length} > {self.max_length})")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern is not a valid regular expression: {exc}") from None


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, (str, list, tuple, dict)) and len(value) == 0)


class DataValidator(Routine):
    """Sends each item to ``valid`` or ``invalid`` by checking its ``data`` against the config rules.

    Every rule is checked and every failure is reported: an invalid item is emitted as
    ``{**item, "errors": [message, ...]}``; a valid one is emitted unchanged. A rule that does not
    apply to the value's type (``min`` on a string, ``required_keys`` on a list) is a failure,
    not a pass. With the default config the only rule is "not empty".
    """

    slots = ("input",)
    events = ("valid", "invalid")
    Config = DataValidatorConfig
    category = "data"
    config: DataValidatorConfig

    def __init__(self, config: msgspec.Struct | Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        # Derived from the (shared, read-only) config once; not per-job state.
        self._pattern = re.compile(self.config.pattern) if self.config.pattern is not None else None

    def errors(self, data: Any) -> list[str]:
        """Every rule ``data`` breaks, as messages (empty if it is valid)."""
        config = self.config
        errors: list[str] = []
        if config.not_empty and _is_empty(data):
            errors.append("data is empty")
        if not _TYPE_CHECKS[config.type](data):
            errors.append(f"data must be of type {config.type}, got {_kind(data)}")
        if config.min is not None or config.max is not None:
            if not _is_number(data):
                errors.append(f"data must be a number to check min/max, got {_kind(data)}")
            else:
                if config.min is not None and data < config.min:
                    errors.append(f"data {data} is less than min {config.min}")
                if config.max is not None and data > config.max:
                    errors.append(f"data {data} is greater than max {config.max}")
        if config.min_length is not None or config.max_length is not None:
            if not isinstance(data, (str, list, tuple, dict)):
                errors.append(f"data must be a string, list or object to check its length, got {_kind(data)}")
            else:
                length = len(data)
                if config.min_length is not None and length < config.min_length:
                    errors.append(f"data length {length} is less than min_length {config.min_length}")
                if config.max_length is not None and length > config.max_length:
                    errors.append(f"data length {length} is greater than max_length {config.max_length}")
        if config.required_keys:
            if not isinstance(data, dict):
                errors.append(f"data must be an object to have required keys, got {_kind(data)}")
            else:
                missing = [key for key in config.required_keys if key not in data]
                if missing:
                    errors.append(f"data is missing required keys: {', '.join(missing)}")
        if self._pattern is not None:
            if not isinstance(data, str):
                errors.append(f"data must be a string to match pattern, got {_kind(data)}")
            elif self._pattern.search(data) is None:
                errors.append(f"data does not match pattern {self._pattern.pattern!r}")
        return errors

    async def logic(self, ctx: Context, input: list[Item]) -> None:  # type: ignore[override]
        for item in input:
            errors = self.errors(item.get("data"))
            if errors:
                await ctx.emit("invalid", **{**item, "errors": errors})
            else:
                await ctx.emit("valid", **item)


# ---------------------------------------------------------------------------------------------
# DataTransformer
# ---------------------------------------------------------------------------------------------
Transformation = Literal[
    "identity", "upper", "lower", "title", "strip", "reverse", "length", "to_string", "to_number", "sort"
]


def _map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    """Apply ``fn`` to every string in ``value``, through lists and dict values (not keys)."""
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, (list, tuple)):
        return [_map_strings(element, fn) for element in value]
    if isinstance(value, dict):
        return {key: _map_strings(element, fn) for key, element in value.items()}
    return value


def _reverse(value: Any) -> Any:
    if isinstance(value, str):
        return value[::-1]
    if isinstance(value, (list, tuple)):
        return list(reversed(value))
    raise ValueError(f"reverse needs a string or a list, got {_kind(value)}")


def _length(value: Any) -> int:
    if isinstance(value, (str, list, tuple, dict)):
        return len(value)
    raise ValueError(f"length needs a string, list or object, got {_kind(value)}")


def _to_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return msgspec.json.encode(value).decode()
    except (TypeError, msgspec.EncodeError):
        return str(value)


def _to_number(value: Any) -> int | float:
    if _is_number(value):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if math.isfinite(number):
            return number
        raise ValueError(f"to_number: {_preview(value)} is not a number")
    raise ValueError(f"to_number needs a number or a numeric string, got {_kind(value)}")


def _sort(value: Any) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"sort needs a list, got {_kind(value)}")  # noqa: TRY004 (bad data is a ValueError here)
    try:
        return sorted(value)
    except TypeError as exc:
        raise ValueError(f"sort: the list's elements cannot be compared ({exc})") from None


_TRANSFORMS: Final[dict[str, Callable[[Any], Any]]] = {
    "identity": lambda value: value,
    "upper": lambda value: _map_strings(value, str.upper),
    "lower": lambda value: _map_strings(value, str.lower),
    "title": lambda value: _map_strings(value, str.title),
    "strip": lambda value: _map_strings(value, str.strip),
    "reverse": _reverse,
    "length": _length,
    "to_string": _to_string,
    "to_number": _to_number,
    "sort": _sort,
}


class DataTransformerConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    transformation: Transformation = "identity"


class DataTransformer(Routine):
    """Applies ``config.transformation`` (upper, lower, identity, ...) to each item's ``data``.

    ``upper``, ``lower``, ``title`` and ``strip`` change every string in ``data``, through lists
    and dict values (keys are left alone), and leave other values as they are. The others work on
    ``data`` as a whole: ``reverse`` (a string or list), ``length`` (of a string, list or
    object), ``to_string`` (strings unchanged, anything else as JSON: ``true``, ``[1, 2]``),
    ``to_number`` (a number, or a string holding a finite int or float) and ``sort`` (a list of
    mutually comparable values). A value a transformation cannot handle raises ``ValueError``.
    Emits ``{**item, "data": new_data}``.
    """

    slots = ("input",)
    events = ("output",)
    Config = DataTransformerConfig
    category = "data"
    config: DataTransformerConfig

    async def logic(self, ctx: Context, input: list[Item]) -> None:  # type: ignore[override]
        transform = _TRANSFORMS[self.config.transformation]
        outputs = [{**item, "data": transform(item.get("data"))} for item in input]
        for output in outputs:
            await ctx.emit("output", **output)


# ---------------------------------------------------------------------------------------------
# DataMultiplier
# ---------------------------------------------------------------------------------------------
class DataMultiplierConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    #: Numbers are multiplied by it; strings and lists are repeated (int factors >= 0 only).
    factor: Number = 2

    def __post_init__(self) -> None:
        if not math.isfinite(self.factor):
            raise ValueError("factor must be a finite number")


class DataMultiplier(Routine):
    """Multiplies numeric ``data`` by ``config.factor``, or repeats strings and lists that many times.

    Numbers are multiplied; strings and lists are repeated, which needs an integer factor >= 0;
    for a dict, every numeric value is multiplied and the others are kept. Anything else
    (``None``, booleans) raises ``ValueError``. Emits ``{**item, "data": new_data}``.
    """

    slots = ("input",)
    events = ("output",)
    Config = DataMultiplierConfig
    category = "data"
    config: DataMultiplierConfig

    def multiply(self, data: Any) -> Any:
        factor = self.config.factor
        if _is_number(data):
            return data * factor
        if isinstance(data, (str, list, tuple)):
            if isinstance(factor, bool) or not isinstance(factor, int) or factor < 0:
                raise ValueError(f"repeating a {_kind(data)} needs an integer factor >= 0, but factor is {factor!r}")
            return list(data) * factor if isinstance(data, tuple) else data * factor
        if isinstance(data, dict):
            return {key: value * factor if _is_number(value) else value for key, value in data.items()}
        raise ValueError(f"cannot multiply data of type {_kind(data)}")

    async def logic(self, ctx: Context, input: list[Item]) -> None:  # type: ignore[override]
        outputs = [{**item, "data": self.multiply(item.get("data"))} for item in input]
        for output in outputs:
            await ctx.emit("output", **output)


# ---------------------------------------------------------------------------------------------
# DataAggregator
# ---------------------------------------------------------------------------------------------
class DataAggregator(Routine):
    """Pairs one item from ``input1`` with one from ``input2`` and emits them together.

    Runs with ``all_slots_ready``: each activation takes the oldest item of each slot, so the
    n-th item of ``input1`` is paired with the n-th of ``input2``. Emits
    ``{"data": [data1, data2], "items": [item1, item2]}``.
    """

    slots = ("input1", "input2")
    events = ("output",)
    policy: ActivationPolicy = AllSlotsReady()
    category = "data"

    async def logic(self, ctx: Context, input1: list[Item], input2: list[Item]) -> None:  # type: ignore[override]
        # A DSL ``policy`` block may replace all_slots_ready: pair equal numbers, in order.
        if len(input1) != len(input2):
            raise ValueError(
                f"DataAggregator got {len(input1)} item(s) on input1 and {len(input2)} on input2 in one "
                "activation; it pairs items one to one (use the all_slots_ready policy)"
            )
        for first, second in zip(input1, input2, strict=True):
            await ctx.emit("output", data=[first.get("data"), second.get("data")], items=[first, second])


# ---------------------------------------------------------------------------------------------
# SlowProcessor
# ---------------------------------------------------------------------------------------------
class SlowProcessorConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    #: Seconds to wait before passing on each item.
    delay: Annotated[float, msgspec.Meta(ge=0, le=MAX_DELAY)] = 1.0


class SlowProcessor(Routine):
    """Waits ``config.delay`` seconds per item, then passes the item on unchanged.

    The wait is per item (an activation of three items takes three delays, emitting each item as
    its wait ends), simulating work that costs time per item. It sleeps on the event loop, so a
    slow processor holds no thread, and cancelling the job interrupts it.
    """

    slots = ("input",)
    events = ("output",)
    Config = SlowProcessorConfig
    category = "data"
    config: SlowProcessorConfig

    async def logic(self, ctx: Context, input: list[Item]) -> None:  # type: ignore[override]
        for item in input:
            await anyio.sleep(self.config.delay)
            await ctx.emit("output", **item)


# ---------------------------------------------------------------------------------------------
# ErrorGenerator
# ---------------------------------------------------------------------------------------------
class ErrorGeneratorConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    #: Fail on every item.
    should_fail: bool = False
    #: Otherwise fail each item with this probability.
    error_rate: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.0
    #: Seed of each job's random stream; ``None`` gives each job a fresh random seed.
    seed: int | None = None
    #: The error message.
    message: str = "generated error"
    #: ``raise`` a GeneratedError (the error strategy applies) or ``emit`` the item to ``error``.
    on_fail: Literal["raise", "emit"] = "raise"


class ErrorGenerator(Routine):
    """Fails on purpose when ``config.should_fail`` or at ``config.error_rate``; otherwise passes items on.

    Each item is decided on its own, in order. With ``on_fail: raise`` an activation holding any
    failing item raises ``GeneratedError(message)`` before emitting anything (so the routine's
    error strategy applies to the whole activation); with ``on_fail: emit`` failing items go to
    ``error`` as ``{**item, "error": message}`` and the others to ``output``.

    Draws are reproducible per job: the n-th draw of a job is ``Random(f"{seed}:{n}")``, so two
    jobs with the same ``seed`` fail on the same items however they interleave, and no random
    state is shared between jobs or kept on the instance. The seed and draw count live in the
    job's shared data as ``__random__[routine_id] = {"seed": ..., "draws": ...}`` (plain data).
    A retry draws again.
    """

    slots = ("input",)
    events = ("output", "error")
    Config = ErrorGeneratorConfig
    category = "data"
    config: ErrorGeneratorConfig

    def _draw(self, ctx: Context) -> float:
        streams: dict[str, dict[str, int]] = ctx.state.setdefault(RANDOM_KEY, {})
        stream = streams.get(ctx.routine_id)
        if stream is None:
            seed = self.config.seed if self.config.seed is not None else secrets.randbits(64)
            stream = streams[ctx.routine_id] = {"seed": seed, "draws": 0}
        value = random.Random(f"{stream['seed']}:{stream['draws']}").random()
        stream["draws"] += 1
        return value

    def _fails(self, ctx: Context) -> bool:
        if self.config.should_fail:
            return True
        if self.config.error_rate <= 0:
            return False
        return self._draw(ctx) < self.config.error_rate

    async def logic(self, ctx: Context, input: list[Item]) -> None:  # type: ignore[override]
        failing = [self._fails(ctx) for _ in input]
        message = self.config.message
        if self.config.on_fail == "raise":
            if any(failing):
                raise GeneratedError(message)
            for item in input:
                await ctx.emit("output", **item)
            return
        for item, fails in zip(input, failing, strict=True):
            if fails:
                await ctx.emit("error", **{**item, "error": message})
            else:
                await ctx.emit("output", **item)


# ---------------------------------------------------------------------------------------------
# DataSink
# ---------------------------------------------------------------------------------------------
class DataSinkConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    #: Most items kept per job; ``None`` is no limit. More raises SinkLimitExceeded.
    max_items: NonNegativeInt | None = None


class DataSink(Routine):
    """Keeps every item it receives in the job's state, at ``shared_data["results"][routine_id]``.

    Items are kept whole and in arrival order. With ``config.max_items`` set, an activation that
    would take the total past it raises ``SinkLimitExceeded`` and keeps none of its items (the
    error strategy decides what happens next); nothing is ever dropped silently.
    """

    slots = ("input",)
    Config = DataSinkConfig
    category = "data"
    config: DataSinkConfig

    async def logic(self, ctx: Context, input: list[Item]) -> None:  # type: ignore[override]
        kept: list[Item] = ctx.state.setdefault(RESULTS_KEY, {}).setdefault(ctx.routine_id, [])
        limit = self.config.max_items
        if limit is not None and len(kept) + len(input) > limit:
            raise SinkLimitExceeded(
                f"sink '{ctx.routine_id}' holds {len(kept)} item(s) and max_items is {limit}; "
                f"refusing {len(input)} more"
            )
        kept.extend(input)


ROUTINES: list[type[Routine]] = [
    DataSource,
    DataValidator,
    DataTransformer,
    DataMultiplier,
    DataAggregator,
    SlowProcessor,
    ErrorGenerator,
    DataSink,
]

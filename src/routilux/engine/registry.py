"""The registry: the only way a DSL names code.

A DSL says ``class: DataSource``; that name must have been registered here, from Python
(:meth:`Registry.register`), from an installed package's ``routilux.routines`` entry points, or
from a module listed in ``ROUTILUX_ROUTINE_MODULES``. Import paths are never resolved, so a flow
document can not make the server import arbitrary code.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from typing import Any, Final, TypeVar, overload

import msgspec

from routilux.engine.errors import UnknownRoutineClass
from routilux.engine.policies import PolicyView, Taken
from routilux.engine.routine import Routine

ENTRY_POINT_GROUP: Final[str] = "routilux.routines"
MODULES_ENV: Final[str] = "ROUTILUX_ROUTINE_MODULES"

R = TypeVar("R", bound=type[Routine])


class SlotInfo(msgspec.Struct, frozen=True):
    name: str
    capacity: int | None
    description: str = ""


class RoutineInfo(msgspec.Struct, frozen=True):
    """A registered routine class's interface, as the catalogue shows it."""

    name: str
    description: str
    category: str
    slots: list[SlotInfo]
    events: list[str]
    config_schema: dict[str, Any]
    policy: dict[str, Any]
    is_async: bool
    max_concurrency: int


def _describe(cls: type[Routine]) -> str:
    doc = inspect.getdoc(cls) or ""
    return doc.split("\n\n", 1)[0].replace("\n", " ").strip()


def config_schema(cls: type[Routine]) -> dict[str, Any]:
    """JSON Schema of a routine class's config, inlined (no ``$ref`` to resolve)."""
    schema: dict[str, Any] = msgspec.json.schema(cls.Config)
    defs: dict[str, dict[str, Any]] = schema.pop("$defs", {})
    ref = schema.get("$ref")
    if ref and ref.startswith("#/$defs/"):
        return defs.get(ref.removeprefix("#/$defs/"), {})
    return schema


class Registry:
    """Routine classes and custom activation policies, by name."""

    def __init__(self) -> None:
        self._classes: dict[str, type[Routine]] = {}
        self._policies: dict[str, Callable[[PolicyView], Taken | None]] = {}

    # -- routine classes ---------------------------------------------------------------------
    @overload
    def register(self, cls: R, *, name: str | None = None) -> R: ...

    @overload
    def register(self, cls: None = None, *, name: str | None = None) -> Callable[[R], R]: ...

    def register(self, cls: R | None = None, *, name: str | None = None) -> R | Callable[[R], R]:
        """Register a routine class under ``name`` (default: its class name).

        Usable as ``registry.register(MyRoutine)`` or as a decorator ``@registry.register``.
        Registering a different class under a taken name is an error; the same class is a no-op.
        """

        def add(klass: R) -> R:
            if not (isinstance(klass, type) and issubclass(klass, Routine)):
                raise TypeError(f"{klass!r} is not a Routine subclass")
            key = name or klass.__name__
            if "." in key or ":" in key or not key:
                raise ValueError(f"routine class name {key!r} may not contain '.' or ':'")
            existing = self._classes.get(key)
            if existing is not None and existing is not klass:
                raise ValueError(f"routine class name {key!r} is already registered to {existing!r}")
            self._classes[key] = klass
            return klass

        return add if cls is None else add(cls)

    def unregister(self, name: str) -> None:
        self._classes.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def names(self) -> list[str]:
        return sorted(self._classes)

    def get(self, name: str) -> type[Routine]:
        """The class registered as ``name``; the error lists what is available."""
        try:
            return self._classes[name]
        except KeyError:
            pass
        available = ", ".join(self.names()) or "none"
        if "." in name or ":" in name:
            message = (
                f"'{name}' looks like an import path; a flow may only name registered routine "
                f"classes. Available: {available}"
            )
        else:
            message = f"unknown routine class '{name}'. Available: {available}"
        raise UnknownRoutineClass(message, class_name=name, available=self.names())

    def interface(self, name: str) -> RoutineInfo:
        cls = self.get(name)
        try:
            sample = cls()
            slots = [SlotInfo(n, s.capacity, s.description) for n, s in sample.slot_specs.items()]
            events = list(sample.event_names)
        except Exception:  # a class whose ports depend on required config
            declared = cls.slots
            slot_names = list(declared) if not isinstance(declared, dict) else list(declared)
            slots = [SlotInfo(n, None) for n in slot_names]
            events = list(cls.events)
        return RoutineInfo(
            name=name,
            description=_describe(cls),
            category=cls.category,
            slots=slots,
            events=events,
            config_schema=config_schema(cls),
            policy=cls.policy.describe(),
            is_async=inspect.iscoroutinefunction(cls.logic),
            max_concurrency=cls.max_concurrency,
        )

    # -- custom policies -----------------------------------------------------------------------
    def register_policy(self, name: str, fn: Callable[[PolicyView], Taken | None]) -> None:
        """Make ``fn`` usable from a DSL as ``policy: {type: custom, name: <name>}``."""
        self._policies[name] = fn

    def get_policy(self, name: str) -> Callable[[PolicyView], Taken | None] | None:
        return self._policies.get(name)

    def policy_names(self) -> list[str]:
        return sorted(self._policies)

    # -- discovery -------------------------------------------------------------------------------
    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> list[str]:
        """Register every class an installed package advertises in ``group``; returns names."""
        loaded = []
        for ep in entry_points(group=group):
            self.register(ep.load(), name=ep.name)
            loaded.append(ep.name)
        return loaded

    def load_modules(self, modules: Iterable[str]) -> list[str]:
        """Import each module and register its routines.

        A module that defines ``register(registry)`` is asked to register its own classes;
        otherwise every :class:`Routine` subclass defined in the module is registered.
        """
        loaded: list[str] = []
        for module_name in modules:
            module = importlib.import_module(module_name)
            hook = getattr(module, "register", None)
            if callable(hook) and not isinstance(hook, type):
                before = set(self._classes)
                hook(self)
                loaded.extend(sorted(set(self._classes) - before))
                continue
            for value in vars(module).values():
                if (
                    isinstance(value, type)
                    and issubclass(value, Routine)
                    and value is not Routine
                    and value.__module__ == module.__name__
                ):
                    self.register(value)
                    loaded.append(value.__name__)
        return loaded

    def load_modules_from_env(self, environ: dict[str, str] | None = None) -> list[str]:
        """Load the comma-separated module list in ``ROUTILUX_ROUTINE_MODULES``."""
        raw = (environ if environ is not None else os.environ).get(MODULES_ENV, "")
        return self.load_modules(m.strip() for m in raw.split(",") if m.strip())


_default: Registry | None = None


def default_registry() -> Registry:
    """The process-wide registry: entry points and ``ROUTILUX_ROUTINE_MODULES``.

    The builtins (``DataSource`` and friends) are entry points of the installed ``routilux``
    package itself, so they are found like any plugin's and the engine never imports them.
    """
    global _default
    if _default is None:
        registry = Registry()
        registry.load_entry_points()
        registry.load_modules_from_env()
        _default = registry
    return _default

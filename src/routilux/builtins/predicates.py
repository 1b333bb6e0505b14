"""Declarative pieces shared by the builtin routines: dotted paths, predicates, config errors.

**Paths.** ``"data.value"`` reads ``item["data"]["value"]``; a segment that is an integer
(``"data.rows.0.name"``, ``"data.rows.-1"``) indexes a list. A path that does not lead anywhere
(missing key, index out of range, stepping into a string or number) is *missing*, which is not
the same as leading to ``None``: :func:`resolve` says which.

**Predicates** are data, never code, so a flow document can filter and route without being able
to run anything::

    {path: data.value, op: gt, value: 3}
    [{path: data.kind, op: in, value: [a, b]}, {path: data.note, op: exists}]   # all of

Operators: ``eq ne gt ge lt le`` (Python comparison), ``in not_in`` (``value`` is a list that
should / should not hold the item's value), ``contains`` (the item's value is a string holding
``value`` as a substring, a list holding it, or a dict holding it as a key), ``exists`` (the path
leads somewhere, even to ``None``) and ``truthy`` (it leads to a true value).

Two rules keep predicates total, so a surprising item is sent one way or the other rather than
failing the job:

- a **missing path makes the predicate false**, whatever the operator (``ne`` and ``not_in``
  included), except ``exists``, which is the way to ask about presence;
- a **comparison between values that cannot be compared** (``"a" > 3``, ``None < 1``) is false.

Predicates are checked when the config is parsed (unknown operators, a missing or pointless
``value``, malformed paths), so mistakes are reported with their location before a job runs.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal, Self

import msgspec
import msgspec.inspect

__all__ = [
    "MISSING",
    "Op",
    "Predicate",
    "Where",
    "all_of",
    "check_path",
    "matches",
    "resolve",
]

Op = Literal["eq", "ne", "gt", "ge", "lt", "le", "in", "not_in", "contains", "exists", "truthy"]


class _Missing:
    """What :func:`resolve` returns for a path that leads nowhere (distinct from ``None``)."""

    _instance: _Missing | None = None

    def __new__(cls) -> Self:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance  # type: ignore[return-value]

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing()


# ---------------------------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------------------------
def check_path(path: str) -> str | None:
    """Why ``path`` is not a valid dotted path, or ``None`` if it is."""
    if not path:
        return "must not be empty"
    if any(not segment for segment in path.split(".")):
        return f"'{path}' has an empty segment (two dots, or a leading or trailing dot)"
    return None


@functools.lru_cache(maxsize=1024)
def _segments(path: str) -> tuple[str, ...]:
    return tuple(path.split("."))


def resolve(item: Any, path: str) -> Any:
    """The value at dotted ``path`` inside ``item``, or :data:`MISSING` if there is none."""
    current = item
    for segment in _segments(path):
        if isinstance(current, Mapping):
            if segment not in current:
                return MISSING
            current = current[segment]
        elif isinstance(current, (list, tuple)):
            try:
                current = current[int(segment)]
            except (ValueError, IndexError):
                return MISSING
        else:
            return MISSING
    return current


# ---------------------------------------------------------------------------------------------
# Predicates
# ---------------------------------------------------------------------------------------------
_VALUELESS: Final = frozenset({"exists", "truthy"})
_LIST_VALUED: Final = frozenset({"in", "not_in"})


def _contains(container: Any, value: Any) -> bool:
    if isinstance(container, str):
        return isinstance(value, str) and value in container
    if isinstance(container, (list, tuple, Mapping)):
        return value in container
    return False


_COMPARE: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
    "in": lambda actual, value: actual in value,
    "not_in": lambda actual, value: actual not in value,
    "contains": _contains,
}


class Predicate(msgspec.Struct, forbid_unknown_fields=True, frozen=True, omit_defaults=True):
    """One test on an item: the value at ``path`` compared by ``op`` with ``value``."""

    path: str
    op: Op
    value: Any | msgspec.UnsetType = msgspec.UNSET

    def __post_init__(self) -> None:
        problem = check_path(self.path)
        if problem is not None:
            raise ValueError(f"path {problem}")
        has_value = self.value is not msgspec.UNSET
        if self.op in _VALUELESS:
            if has_value:
                raise ValueError(f"value is not used by op '{self.op}'; leave it out")
        elif not has_value:
            raise ValueError(f"value is required by op '{self.op}'")
        elif self.op in _LIST_VALUED and not isinstance(self.value, (list, tuple)):
            raise ValueError(f"value of op '{self.op}' must be a list")

    def test(self, item: Any) -> bool:
        """Whether ``item`` passes (see the module docstring for missing paths and type errors)."""
        actual = resolve(item, self.path)
        if self.op == "exists":
            return actual is not MISSING
        if actual is MISSING:
            return False
        if self.op == "truthy":
            return bool(actual)
        try:
            return bool(_COMPARE[self.op](actual, self.value))
        except TypeError:  # incomparable types (or an unhashable key for a dict 'contains')
            return False


#: How a config field holds predicates: one predicate, or a list of them that must all pass.
Where = Predicate | list[Predicate]


def all_of(where: Where) -> tuple[Predicate, ...]:
    """``where`` as a tuple of predicates that must all pass (an empty one always passes)."""
    return (where,) if isinstance(where, Predicate) else tuple(where)


def matches(where: Where, item: Any) -> bool:
    """Whether ``item`` passes every predicate of ``where``."""
    return all(predicate.test(item) for predicate in all_of(where))

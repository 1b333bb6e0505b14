"""Dotted paths and the predicate language (routilux.builtins.predicates)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from routilux.builtins.predicates import MISSING, Predicate, all_of, matches, resolve

ITEM: dict[str, Any] = {
    "data": {
        "value": 5,
        "name": "ada lovelace",
        "tags": ["math", "poetry"],
        "rows": [{"id": 1}, {"id": 2}],
        "none": None,
        "zero": 0,
        "nested": {"1": "string key"},
    },
    "index": 3,
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("data.value", 5),
        ("index", 3),
        ("data.rows.1.id", 2),
        ("data.rows.-1.id", 2),
        ("data.tags.0", "math"),
        ("data.none", None),
        ("data.nested.1", "string key"),  # a digit segment is a key in a dict
        ("data.missing", MISSING),
        ("data.rows.5", MISSING),
        ("data.rows.x", MISSING),
        ("data.value.deeper", MISSING),  # into a number
        ("data.name.0", MISSING),  # into a string
        ("nope", MISSING),
    ],
)
def test_resolve(path: str, expected: Any) -> None:
    assert resolve(ITEM, path) == expected or (expected is MISSING and resolve(ITEM, path) is MISSING)


def test_missing_is_not_none() -> None:
    assert resolve(ITEM, "data.none") is None
    assert resolve(ITEM, "data.absent") is MISSING
    assert not MISSING and repr(MISSING) == "MISSING"


def _p(path: str, op: str, *value: Any) -> Predicate:
    raw: dict[str, Any] = {"path": path, "op": op}
    if value:
        raw["value"] = value[0]
    return msgspec.convert(raw, Predicate)


@pytest.mark.parametrize(
    ("predicate", "expected"),
    [
        (_p("data.value", "eq", 5), True),
        (_p("data.value", "ne", 5), False),
        (_p("data.value", "gt", 4), True),
        (_p("data.value", "ge", 5), True),
        (_p("data.value", "lt", 5), False),
        (_p("data.value", "le", 5), True),
        (_p("data.value", "in", [1, 5]), True),
        (_p("data.value", "not_in", [1, 5]), False),
        (_p("data.name", "contains", "love"), True),
        (_p("data.tags", "contains", "poetry"), True),
        (_p("data.tags", "contains", "prose"), False),
        (_p("data", "contains", "rows"), True),  # dict: a key
        (_p("data.value", "contains", 5), False),  # a number contains nothing
        (_p("data.name", "contains", 5), False),  # substring needs a string
        (_p("data", "contains", ["unhashable"]), False),
        (_p("data.none", "exists"), True),
        (_p("data.absent", "exists"), False),
        (_p("data.zero", "truthy"), False),
        (_p("data.tags", "truthy"), True),
        (_p("data.none", "eq", None), True),
        # a missing path makes every operator false except exists
        (_p("data.absent", "ne", 1), False),
        (_p("data.absent", "not_in", [1]), False),
        (_p("data.absent", "truthy"), False),
        (_p("data.absent", "eq", None), False),
        # incomparable types are false, not errors
        (_p("data.name", "gt", 3), False),
        (_p("data.none", "lt", 1), False),
        (_p("data.tags", "ge", {"a": 1}), False),
    ],
)
def test_predicate(predicate: Predicate, expected: bool) -> None:
    assert predicate.test(ITEM) is expected


def test_all_of_and_matches() -> None:
    single = _p("data.value", "gt", 1)
    assert all_of(single) == (single,)
    assert matches([single, _p("index", "eq", 3)], ITEM)
    assert not matches([single, _p("index", "eq", 4)], ITEM)
    assert matches([], ITEM)  # nothing to fail


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"path": "", "op": "truthy"}, "path must not be empty"),
        ({"path": "a..b", "op": "truthy"}, "path 'a..b' has an empty segment"),
        ({"path": ".a", "op": "truthy"}, "path '.a' has an empty segment"),
        ({"path": "a", "op": "eq"}, "value is required by op 'eq'"),
        ({"path": "a", "op": "in", "value": "abc"}, "value of op 'in' must be a list"),
        ({"path": "a", "op": "exists", "value": False}, "value is not used by op 'exists'"),
        ({"path": "a", "op": "matches", "value": "x"}, "Invalid enum value 'matches'"),
        ({"path": "a", "op": "eq", "value": 1, "extra": 1}, "unknown field `extra`"),
    ],
)
def test_predicates_are_checked_when_parsed(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=message.replace("(", r"\(").replace(".", r"\.")):
        msgspec.convert(raw, Predicate)

"""Turning msgspec's validation errors into :class:`Problem` s that say where, in DSL words.

msgspec reports ``"Expected `int`, got `str` - at `$.rate`"``, and names unknown or missing
fields in the message with the path of their parent. The DSL reader and routine config parsing
both need ``routines.clean.config.rate: expected integer, got string``; this is the one place
that translation lives.
"""

from __future__ import annotations

import re
from typing import Any, Final, get_args

import msgspec
import msgspec.inspect

from routilux.engine.errors import Problem

#: The location of problems that concern the whole document (syntax, limits, its type).
DOCUMENT: Final = "document"

_TYPE_NAMES: Final = {
    "int": "integer",
    "float": "number",
    "str": "string",
    "bool": "boolean",
    "null": "null",
    "object": "mapping",
    "array": "list",
}
_EXPECTED_RE: Final = re.compile(r"Expected `(?P<expected>[^`]+)`, got `(?P<got>[^`]+)`")
_MISSING_RE: Final = re.compile(r"Object missing required field `(?P<field>[^`]+)`")
_UNKNOWN_RE: Final = re.compile(r"Object contains unknown field `(?P<field>[^`]+)`")
_ENUM_RE: Final = re.compile(r"Invalid enum value (?P<value>.+)")


def kind_of(value: object, mapping: str = "mapping") -> str:
    """A value's type in plain words (``string``, ``list``...); dicts are called ``mapping``
    (the DSL's word) unless the caller prefers another (``object`` for JSON data)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return mapping
    if isinstance(value, (list, tuple)):
        return "list"
    return type(value).__name__


def friendly_type(msgspec_type: str) -> str:
    return " or ".join(_TYPE_NAMES.get(part, part) for part in msgspec_type.split(" | "))


def join_path(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _split_validation_error(exc: msgspec.ValidationError) -> tuple[str, str, bool]:
    """``"Expected `int`, got `str` - at `$.a[0]`"`` -> ``(message, "$.a[0]", in_key)``.

    msgspec says ``at `key` in `$.a``` when a mapping key is wrong; ``in_key`` tells.
    """
    message, sep, where = str(exc).rpartition(" - at `")
    if not sep:
        return str(exc), "$", False
    where = where.removesuffix("`")
    in_key = where.startswith("key` in `")
    return message, where.removeprefix("key` in `"), in_key


def validation_problem(exc: msgspec.ValidationError, prefix: str, tp: Any = None) -> Problem:
    """A msgspec ValidationError as a Problem at a DSL path, with a friendlier message."""
    message, where, in_key = _split_validation_error(exc)
    location = prefix + where.removeprefix("$") if prefix else (where.lstrip("$.") or DOCUMENT)
    if match := _EXPECTED_RE.fullmatch(message):
        expected, got = match["expected"], match["got"]
        if expected == "object" and not in_key:
            return Problem(location, "not_a_mapping", f"expected a mapping, got {friendly_type(got)}")
        text = f"expected {friendly_type(expected)}, got {friendly_type(got)}"
        return Problem(location, "invalid_type", f"{text} (as a key)" if in_key else text)
    if match := _MISSING_RE.fullmatch(message):
        field = match["field"]
        return Problem(join_path(location, field), "missing_field", f"'{field}' is required")
    if match := _UNKNOWN_RE.fullmatch(message):
        field = match["field"]
        return Problem(join_path(location, field), "unknown_field", f"unknown field '{field}'")
    if match := _ENUM_RE.fullmatch(message):
        choices = ", ".join(str(choice) for choice in get_args(tp) if choice is not None)
        text = f"invalid value {match['value']}"
        return Problem(location, "invalid_value", f"{text}; expected one of: {choices}" if choices else text)
    return Problem(_field_named(tp, prefix, location, message), "invalid_value", message)


_STEP: Final = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]")


def _flatten(info: msgspec.inspect.Type) -> list[msgspec.inspect.Type]:
    if isinstance(info, msgspec.inspect.UnionType):
        return [member for option in info.types for member in _flatten(option)]
    return [info]


def _types_at(tp: Any, path: str) -> list[msgspec.inspect.Type]:
    """The schema types that can sit at ``path`` (``.routes[0]``) inside ``tp``."""
    types = _flatten(msgspec.inspect.type_info(tp))
    for name, index in _STEP.findall(path):
        following: list[msgspec.inspect.Type] = []
        for info in types:
            if index and isinstance(info, (msgspec.inspect.ListType, msgspec.inspect.VarTupleType)):
                following.extend(_flatten(info.item_type))
            elif name and isinstance(info, msgspec.inspect.StructType):
                following.extend(
                    member for field in info.fields if field.encode_name == name for member in _flatten(field.type)
                )
            elif name and isinstance(info, msgspec.inspect.DictType):
                following.extend(_flatten(info.value_type))
        types = following
    return types


def _field_named(tp: Any, prefix: str, location: str, message: str) -> str:
    """Move a ``__post_init__`` error from its struct to the field its message starts with.

    msgspec reports a ``ValueError`` raised by a struct's own ``__post_init__`` at the struct
    (``config`` or ``config.routes[0]``). By convention (see :class:`ErrorHandler`), a message
    whose first word is a field of that struct is about that field: ``"pattern is not a valid
    regular expression"`` belongs at ``config.pattern``.
    """
    if tp is None or not location.startswith(prefix):
        return location
    first_word = message.split(" ", 1)[0]
    try:
        candidates = _types_at(tp, location.removeprefix(prefix))
    except (TypeError, ValueError):  # a type msgspec cannot describe: keep msgspec's location
        return location
    for info in candidates:
        if isinstance(info, msgspec.inspect.StructType):
            for field in info.fields:
                if first_word in (field.encode_name, field.name):
                    return join_path(location, field.encode_name)
    return location

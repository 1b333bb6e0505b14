"""Plain data to a :class:`~routilux.engine.flow.Flow`, struct by struct, collecting problems.

msgspec stops at the first error and reports dict values as ``$.routines[...]``, so the document
is converted field by field: each routine and each connection separately, so that two broken
routines give two problems, each located in DSL terms (``routines.clean.error_handler``).
"""

from __future__ import annotations

import functools
import types
from typing import Any, Final, Union, get_args, get_origin

import msgspec

from routilux.engine.errors import DSLError, Problem
from routilux.engine.flow import Connection, Flow
from routilux.engine.validation import DOCUMENT, join_path, kind_of, validation_problem


class _Invalid:
    """Marks a value that could not be converted (its problem is already recorded)."""


_INVALID: Final = _Invalid()


def _with_article(noun: str) -> str:
    return f"an {noun}" if noun[:1] in "aeiou" else f"a {noun}"


def build_flow(data: Any) -> Flow:
    """The flow ``data`` describes; :class:`DSLError` lists every problem of its shape."""
    if not isinstance(data, dict):
        what = "empty" if data is None else f"{_with_article(kind_of(data))}, not a mapping"
        message = f"the document is {what}; a flow is a mapping with a flow_id"
        raise DSLError([Problem(DOCUMENT, "not_a_mapping", message)])
    problems: list[Problem] = []
    flow = _convert_struct(data, Flow, "", problems)
    if problems or not isinstance(flow, Flow):
        raise DSLError(problems)
    return flow


def _convert(value: Any, tp: Any, path: str, problems: list[Problem]) -> Any:
    """Convert ``value`` to ``tp``, descending into structs, optional structs, and dicts or
    lists of structs, so each gets its own location; anything else goes to msgspec whole."""
    struct, optional = _struct_in(tp)
    if struct is not None:
        if optional and value is None:
            return None
        return _convert_struct(value, struct, path, problems)
    origin, args = get_origin(tp), get_args(tp)
    if origin is dict and _struct_in(args[1])[0] is not None:
        return _convert_dict(value, args[1], path, problems)
    if origin is list and _struct_in(args[0])[0] is not None:
        return _convert_list(value, args[0], path, problems)
    try:
        return msgspec.convert(value, tp)
    except msgspec.ValidationError as exc:
        problems.append(validation_problem(exc, path, tp))
        return _INVALID


def _struct_in(tp: Any) -> tuple[type[msgspec.Struct] | None, bool]:
    """``(S, False)`` for a Struct type S, ``(S, True)`` for ``S | None``, else ``(None, _)``."""
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return tp, False
    if get_origin(tp) in (Union, types.UnionType):
        members = [arg for arg in get_args(tp) if arg is not type(None)]
        if len(members) == 1 and len(get_args(tp)) == 2:
            inner, _ = _struct_in(members[0])
            return inner, True
    return None, False


def _convert_struct(
    value: Any, cls: type[msgspec.Struct], path: str, problems: list[Problem]
) -> Any:
    if not isinstance(value, dict):
        problems.append(Problem(path or DOCUMENT, "not_a_mapping", f"expected a mapping, got {kind_of(value)}"))
        return _INVALID
    fields = _fields(cls)
    valid = _check_unknown_fields(value, fields, path, problems)
    kwargs: dict[str, Any] = {}
    for field in fields:
        where = join_path(path, field.encode_name)
        if field.encode_name not in value:
            if field.required:
                problems.append(Problem(where, "missing_field", f"'{field.encode_name}' is required"))
                valid = False
            continue
        converted = _convert(value[field.encode_name], field.type, where, problems)
        if isinstance(converted, _Invalid):
            valid = False
        else:
            kwargs[field.name] = converted
    if not valid:
        return _INVALID
    try:
        result = cls(**kwargs)  # field types are already checked; this runs __post_init__
    except (ValueError, TypeError) as exc:
        problems.append(Problem(_post_init_location(str(exc), fields, path), "invalid_value", str(exc)))
        return _INVALID
    if isinstance(result, Connection) and not _check_connection(result, path, problems):
        return _INVALID
    return result


@functools.cache
def _fields(cls: type[msgspec.Struct]) -> tuple[msgspec.structs.FieldInfo, ...]:
    return msgspec.structs.fields(cls)  # resolves annotations each call: worth caching


def _check_unknown_fields(
    value: dict[str, Any],
    fields: tuple[msgspec.structs.FieldInfo, ...],
    path: str,
    problems: list[Problem],
) -> bool:
    known = [field.encode_name for field in fields]
    unknown = [key for key in value if key not in known]
    for key in unknown:
        message = f"unknown field '{key}'; expected one of: {', '.join(known)}"
        problems.append(Problem(join_path(path, key), "unknown_field", message))
    return not unknown


def _convert_dict(value: Any, item_type: Any, path: str, problems: list[Problem]) -> Any:
    if not isinstance(value, dict):
        problems.append(Problem(path, "not_a_mapping", f"expected a mapping, got {kind_of(value)}"))
        return _INVALID
    result = {key: _convert(item, item_type, join_path(path, key), problems) for key, item in value.items()}
    return _INVALID if any(isinstance(v, _Invalid) for v in result.values()) else result


def _convert_list(value: Any, item_type: Any, path: str, problems: list[Problem]) -> Any:
    if not isinstance(value, list):
        problems.append(Problem(path, "invalid_type", f"expected a list, got {kind_of(value)}"))
        return _INVALID
    result = [_convert(item, item_type, f"{path}[{i}]", problems) for i, item in enumerate(value)]
    return _INVALID if any(isinstance(v, _Invalid) for v in result) else result


def _post_init_location(message: str, fields: tuple[msgspec.structs.FieldInfo, ...], path: str) -> str:
    """``max_retries must be >= 0`` is about the field it names; otherwise the struct itself."""
    first_word = message.split(" ", 1)[0]
    for field in fields:
        if first_word in (field.name, field.encode_name):
            return join_path(path, field.encode_name)
    return path or DOCUMENT


def _check_connection(connection: Connection, path: str, problems: list[Problem]) -> bool:
    """Both ends look like ``routine.port`` (whether they exist is plan.py's question)."""
    valid = True
    for side, text, port in (("from", connection.source, "event"), ("to", connection.target, "slot")):
        routine, dot, name = text.partition(".")
        if not (routine and dot and name):
            message = f"'{text}' must be 'routine.{port}'"
            problems.append(Problem(join_path(path, side), "invalid_value", message))
            valid = False
    return valid

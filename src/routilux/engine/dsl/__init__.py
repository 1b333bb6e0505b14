"""Reading and writing flow documents (the DSL) in YAML or JSON.

:func:`load_flow` turns text into a :class:`~routilux.engine.flow.Flow`, :func:`load_flow_dict`
does the same for data that is already parsed (an API body's ``dsl_dict``), and
:func:`dump_flow` writes a flow back out. ``load_flow(dump_flow(flow, fmt)) == flow`` for both
formats.

Why it is built the way it is:

- **Limits come before allocation.** A DSL document may come from anyone who can reach the API,
  so size, nesting depth, node count and alias count are bounded (:class:`DSLLimits`). The size
  is checked on the raw bytes before any parsing. For YAML the rest is checked on the *composed
  node graph* (``YAML.compose``), before any Python object is constructed: the graph is walked
  iteratively (no recursion limit) and the expanded size of every node is memoised by node
  identity, so an alias bomb ("billion laughs": 9 levels of 9 aliases) is measured in
  microseconds without ever being expanded, and a recursive alias (a cycle) is found rather
  than followed. JSON has no aliases; it is decoded by msgspec (fast, exact byte positions) and
  the decoded object is walked with the same depth/node bounds.
- **Only plain data.** YAML is read with ruamel's *safe* loader, and tags are allow-listed on the
  node graph as well (strings, numbers, booleans, null, mappings, sequences, merge keys), so
  ``!!python/object``, ``!!binary``, ``!!set`` and custom tags are refused with a location rather
  than a raw ruamel exception. Implicit timestamps (``2024-01-01``) stay strings, as in JSON.
  Mapping keys must be strings and may not repeat.
- **Every problem, with where it is.** Errors are :class:`~routilux.engine.errors.DSLError`
  carrying :class:`~routilux.engine.errors.Problem` s whose locations are dotted paths in DSL terms
  (``routines.clean.error_handler.max_retries``, ``connections[1].to``). msgspec reports dict
  values as ``$.routines[...]`` and stops at the first error, so the document is converted field
  by field, struct by struct: each routine and each connection separately, so that two broken
  routines give two problems, each naming its routine id.
- **Shape only.** Whether a ``class`` is registered, whether a connection's routine or port
  exists, whether ids are well formed: that is :mod:`routilux.engine.plan`'s job. This module
  only checks that the document has the shape of a :class:`Flow`.

Problem codes: ``syntax``, ``too_large``, ``too_deep``, ``too_many_nodes``, ``too_many_aliases``,
``recursive_alias``, ``not_a_mapping``, ``missing_field``, ``unknown_field``, ``invalid_type``,
``invalid_value``.
"""

from __future__ import annotations

from typing import Any

from routilux.engine.dsl.convert import build_flow
from routilux.engine.dsl.dump import dump_flow
from routilux.engine.dsl.parse import DEFAULT_LIMITS, DSLLimits, Format, check_data, parse_text
from routilux.engine.flow import Flow

__all__ = [
    "DEFAULT_LIMITS",
    "DSLLimits",
    "Format",
    "dump_flow",
    "load_flow",
    "load_flow_dict",
]


def load_flow(
    text: str | bytes,
    format: Format | None = None,
    *,
    limits: DSLLimits = DEFAULT_LIMITS,
    default_flow_id: str | None = None,
) -> Flow:
    """Read a flow from YAML or JSON text; ``format=None`` detects it (JSON starts with ``{``).

    ``default_flow_id`` is used when the document has no ``flow_id`` (the API passes the id the
    request names). Raises :class:`DSLError` listing every problem found; no parser exception
    escapes.
    """
    data = parse_text(text, format, limits)
    return build_flow(_with_default_id(data, default_flow_id))


def _with_default_id(data: Any, default_flow_id: str | None) -> Any:
    if default_flow_id is not None and isinstance(data, dict) and "flow_id" not in data:
        return {"flow_id": default_flow_id, **data}
    return data


def load_flow_dict(data: Any, *, limits: DSLLimits = DEFAULT_LIMITS, default_flow_id: str | None = None) -> Flow:
    """Read a flow from already-parsed data (a mapping of plain JSON-like values).

    The same depth and node limits apply, and only ``dict``, ``list``, ``str``, ``int``,
    ``float``, ``bool`` and ``None`` are accepted, so that the flow dumps losslessly.
    """
    check_data(data, limits)
    return build_flow(_with_default_id(data, default_flow_id))

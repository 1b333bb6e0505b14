"""The expression language of breakpoint conditions and ``evaluate``: small, pure and bounded.

Built on simpleeval, configured strictly, with a check of the parsed tree before anything runs:

- allowed: literals, arithmetic, comparison, boolean logic, ``in``, subscripts, ``x if c else y``,
  dotted access into dicts (``data.value`` reads ``data["value"]``), and calls of a small
  whitelist of pure functions (len, min, max, abs, round, sum, any, all, str, int, float, bool,
  sorted);
- refused (``forbidden``): any name or attribute starting with ``_``, attribute access on anything
  but a dict, calls of anything else (methods included), lambdas, comprehensions and generators,
  f-strings, walrus, starred arguments, ``await``/``yield``;
- bounded (``limit``): expression length, tree size and depth, powers, string and list sizes,
  and time — enforced with a per-thread trace function, so it works in any thread, not only the
  main one (signals would not).

A trace function cannot interrupt one C call, so every operation whose C-level cost grows with
its operands is bounded *before* it runs: the bit lengths of integers given to ``*``, ``//``,
``%``, ``/`` and ``**`` (:data:`MAX_INT_BITS`), and the size of what repetition, ``+`` and
``sum`` would build (:data:`MAX_SIZE`). ``<<`` and the other bitwise operators are not part of
the language. ``int``/``str`` conversions of huge numbers are refused by Python itself (4,300
digits). So one step costs at most a few milliseconds, and the time limit is checked between
steps.

The same bounds apply when an expression is compiled: every part of it that uses no name (a
constant such as ``9**9**9`` or ``'a'*10**9``) is evaluated then, so a breakpoint condition
that could never run is refused when it is set, not when it is first hit. Only ``limit`` and
``forbidden`` failures refuse it there: ``1/0`` in a branch that is never taken is legal.

Errors are :class:`ExpressionError` with ``kind`` one of ``syntax``, ``name``, ``type``,
``limit``, ``forbidden``.
"""

from __future__ import annotations

import ast
import gc
import sys
import time
import types
from collections.abc import Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any, Final, Literal

import simpleeval

from routilux.errors import RoutiluxError

Kind = Literal["syntax", "name", "type", "limit", "forbidden"]

MAX_LENGTH: Final = 1000
MAX_NODES: Final = 200
MAX_DEPTH: Final = 30
MAX_POWER: Final = 1000
MAX_SIZE: Final = 100_000  # longest string or list an expression may build
MAX_INT_BITS: Final = 64 * MAX_POWER  # largest integer an arithmetic operation may take or make
TIME_LIMIT: Final = 0.05  # seconds of the evaluating thread's CPU

FUNCTIONS: Final[dict[str, Any]] = {
    "len": len, "min": min, "max": max, "abs": abs, "round": round, "sum": sum, "any": any,
    "all": all, "str": str, "int": int, "float": float, "bool": bool, "sorted": sorted,
}

_ALLOWED_NODES: Final = (
    ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.BinOp, ast.UnaryOp, ast.Compare, ast.Call,
    ast.Name, ast.Load, ast.Constant, ast.Attribute, ast.Subscript, ast.Slice, ast.List, ast.Tuple,
    ast.Dict, ast.IfExp, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow,
    ast.USub, ast.UAdd, ast.Not, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In,
    ast.NotIn, ast.Is, ast.IsNot, ast.keyword,
)


class ExpressionError(RoutiluxError):
    code = "invalid_expression"

    def __init__(self, kind: Kind, message: str) -> None:
        super().__init__(f"{kind} error: {message}", kind=kind)
        self.kind = kind


@dataclass(frozen=True)
class Expression:
    """A checked expression, ready to evaluate any number of times."""

    text: str
    tree: ast.Expression


def compile_expression(text: str) -> Expression:
    """Parse and check ``text``; :class:`ExpressionError` says what is wrong."""
    if not isinstance(text, str):
        raise ExpressionError("type", "an expression is a string")
    if len(text) > MAX_LENGTH:
        raise ExpressionError("limit", f"expressions are limited to {MAX_LENGTH} characters")
    if not text.strip():
        raise ExpressionError("syntax", "the expression is empty")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError("syntax", f"{exc.msg} (column {exc.offset})") from None
    except (ValueError, RecursionError, MemoryError):
        raise ExpressionError("limit", "the expression is too deeply nested") from None
    _check(tree)
    expression = Expression(text, tree)
    _check_constants(tree.body)
    return expression


def _uses_names(node: ast.AST) -> bool:
    """Whether ``node`` reads a variable (a called function's name is not a variable)."""
    callees = {id(n.func) for n in ast.walk(node) if isinstance(n, ast.Call)}
    return any(isinstance(n, ast.Name) and id(n) not in callees for n in ast.walk(node))


def _check_constants(node: ast.AST) -> None:
    """Evaluate each largest part of the tree that uses no variable, under the same bounds, so a
    constant that breaks a bound is refused now (see the module docstring)."""
    if not isinstance(node, ast.expr) or isinstance(node, ast.Constant):
        return
    if not _uses_names(node):
        try:
            evaluate(Expression("", ast.Expression(body=node)), {})
        except ExpressionError as exc:
            if exc.kind in ("limit", "forbidden"):
                raise
        return
    for child in ast.iter_child_nodes(node):
        _check_constants(child)


def _check(tree: ast.Expression) -> None:
    count = 0
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise ExpressionError("limit", f"expressions are limited to {MAX_NODES} syntax nodes")
        if depth > MAX_DEPTH:
            raise ExpressionError("limit", f"expressions are limited to a nesting depth of {MAX_DEPTH}")
        if not isinstance(node, _ALLOWED_NODES):
            raise ExpressionError("forbidden", f"{type(node).__name__} is not allowed in an expression")
        if isinstance(node, ast.Name) and node.id.startswith("_"):
            raise ExpressionError("forbidden", f"names starting with '_' are not allowed ({node.id})")
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            raise ExpressionError("forbidden", f"attributes starting with '_' are not allowed ({node.attr})")
        if isinstance(node, ast.keyword) and node.arg is None:
            raise ExpressionError("forbidden", "** arguments are not allowed")
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                raise ExpressionError("forbidden", f"only these functions may be called: {', '.join(FUNCTIONS)}")
            if node.func.id not in FUNCTIONS:
                raise ExpressionError(
                    "forbidden", f"calling {node.func.id} is not allowed; functions: {', '.join(FUNCTIONS)}"
                )
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)) and len(node.value) > MAX_SIZE:
            raise ExpressionError("limit", f"literals are limited to {MAX_SIZE} characters")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


def _int_bits(*values: Any) -> None:
    """Refuse integers too large for an operation to take in bounded time."""
    for value in values:
        if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
            raise ExpressionError("limit", f"integers are limited to {MAX_INT_BITS} bits in arithmetic")


def _sized(length: int) -> None:
    if length > MAX_SIZE:
        raise ExpressionError("limit", f"strings and lists are limited to {MAX_SIZE} items")


_SEQUENCES: Final = (str, bytes, list, tuple)


def _power(base: Any, exponent: Any) -> Any:
    if isinstance(exponent, (int, float)) and abs(exponent) > MAX_POWER:
        raise ExpressionError("limit", f"exponents are limited to {MAX_POWER}")
    _int_bits(base)
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0:
        if base.bit_length() * exponent > MAX_INT_BITS:
            raise ExpressionError("limit", "the power would be too large")
    return base**exponent


def _multiply(left: Any, right: Any) -> Any:
    if isinstance(left, int) and isinstance(right, int):
        _int_bits(left, right)
        if left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise ExpressionError("limit", "the product would be too large")
    elif isinstance(left, _SEQUENCES) and isinstance(right, int):
        _sized(len(left) * max(right, 0))
    elif isinstance(right, _SEQUENCES) and isinstance(left, int):
        _sized(len(right) * max(left, 0))
    return left * right


def _add(left: Any, right: Any) -> Any:
    if isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
        _sized(len(left) + len(right))
    return left + right


def _divide(left: Any, right: Any) -> Any:
    _int_bits(left, right)
    return left / right


def _floor_divide(left: Any, right: Any) -> Any:
    _int_bits(left, right)
    return left // right


def _modulo(left: Any, right: Any) -> Any:
    if isinstance(left, (str, bytes)):
        raise ExpressionError("forbidden", "string formatting with % is not allowed")
    _int_bits(left, right)
    return left % right


def _sum(values: Any, start: Any = 0) -> Any:
    """``sum`` of numbers only: adding up lists builds a quadratic amount of data. With a number
    to start from, the builtin refuses anything but numbers itself (a TypeError), in C."""
    if not isinstance(start, (int, float)):
        raise ExpressionError("forbidden", "sum() adds numbers; its start must be a number")
    return sum(values, start)


def _round(number: Any, ndigits: Any = None) -> Any:
    if ndigits is not None and isinstance(ndigits, int) and abs(ndigits) > 100:
        raise ExpressionError("limit", "round() takes at most 100 digits")
    return round(number, ndigits) if ndigits is not None else round(number)


def _size(value: Any, budget: int = MAX_SIZE) -> int:
    """A bound on how many characters ``value`` takes as text, walking at most ``budget``."""
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, (str, bytes)):
            total += len(item) + 2
        elif isinstance(item, dict):
            total += 2 + len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            total += 2 + len(item)
            stack.extend(item)
        else:
            total += 8
        if total > budget:
            raise ExpressionError("limit", f"values are limited to about {budget} characters")
    return total


def _str(value: Any = "") -> str:
    if not isinstance(value, (str, int, float, bool, type(None))):
        _size(value)
    return str(value)


def sorted_(value: Any, *, key: Any = None, reverse: bool = False) -> list[Any]:
    """``sorted``, with ``key`` limited to the whitelisted functions."""
    if key is not None and key not in FUNCTIONS.values() and key not in _SAFE_FUNCTION_VALUES:
        raise ExpressionError("forbidden", "sorted's key may only be one of the allowed functions")
    _size(value)
    return sorted(value, key=key, reverse=bool(reverse))


_OPERATORS: Final = {
    **simpleeval.DEFAULT_OPERATORS, ast.Pow: _power, ast.Mod: _modulo, ast.Mult: _multiply, ast.Add: _add,
    ast.Div: _divide, ast.FloorDiv: _floor_divide,
}
_SAFE_FUNCTIONS: Final[dict[str, Any]] = {
    **FUNCTIONS, "round": _round, "str": _str, "sorted": sorted_, "sum": _sum,
}
_SAFE_FUNCTION_VALUES: Final = tuple(_SAFE_FUNCTIONS.values())


class _DictOnlyEval(simpleeval.EvalWithCompoundTypes):
    """simpleeval (with lists, tuples, dicts) and attribute access reduced to dict keys."""

    def _check_disallowed_items(self, item: Any) -> None:
        """simpleeval walks every container each node returns, in Python, looking for modules and
        forbidden functions: a list of 100,000 items costs 100,000 traced calls per node that
        touches it, which made ``sum(data.items * 33000)`` run for seconds. Here nothing inside a
        value can be reached as code: calls are only of whitelisted names (checked before the
        expression runs) and attribute access only reads mapping keys. So a module or function
        inside data is inert; only a result that is one itself is refused."""
        if isinstance(item, types.ModuleType):
            raise simpleeval.FeatureNotAvailable("Sorry, modules are not allowed")
        if callable(item) and not isinstance(item, type) and item in simpleeval.DISALLOW_FUNCTIONS:
            raise simpleeval.FeatureNotAvailable("This function is forbidden")

    def _eval_attribute(self, node: ast.Attribute) -> Any:
        value = self._eval(node.value)
        if isinstance(value, Mapping):
            if node.attr in value:
                return value[node.attr]
            raise ExpressionError("name", f"'{node.attr}' is not a key of the mapping")
        raise ExpressionError("forbidden", f"attribute access is only for mappings, not {type(value).__name__}")


_gc_seconds = 0.0
_gc_started = 0.0


def _gc_clock(phase: str, info: dict[str, Any]) -> None:
    global _gc_seconds, _gc_started
    if phase == "start":
        _gc_started = time.perf_counter()
    else:
        _gc_seconds += time.perf_counter() - _gc_started


gc.callbacks.append(_gc_clock)


def _deadline_tracer(limit: float, wall_limit: float | None):  # type: ignore[no-untyped-def]
    """A tracer that stops evaluation once it used ``limit`` seconds of its thread's CPU time, or
    ``wall_limit`` seconds of wall time if given.

    CPU time of the thread: waiting for the GIL while other threads run does not count, and
    neither do the collector's pauses (measured by a gc callback), so a busy server does not fail
    fair expressions. A caller that answers a client (``evaluate`` over HTTP) adds a wall bound,
    so that an answer comes in bounded time even to an expression starved of the GIL.
    """
    cpu_start = time.thread_time()
    wall_end = time.perf_counter() + wall_limit if wall_limit is not None else float("inf")
    gc_start = _gc_seconds

    def tracer(frame: FrameType, event: str, arg: Any):  # type: ignore[no-untyped-def]
        if time.thread_time() - cpu_start - (_gc_seconds - gc_start) > limit:
            raise ExpressionError("limit", f"the expression ran for more than {limit * 1000:g} ms")
        if time.perf_counter() > wall_end:
            raise ExpressionError("limit", f"the expression took more than {wall_limit * 1000:g} ms")  # type: ignore[operator]
        return tracer

    return tracer


def evaluate(
    expression: Expression | str,
    names: Mapping[str, Any],
    *,
    time_limit: float = TIME_LIMIT,
    wall_limit: float | None = None,
) -> Any:
    """Evaluate against ``names``; the result, or :class:`ExpressionError`. ``time_limit`` bounds
    the evaluating thread's CPU time, ``wall_limit`` (if given) its wall-clock time.

    Every operation that could do unbounded work inside one C call (string formatting, huge
    ``round`` digits, ``str``/``sorted`` of huge nested values) is refused or size-checked
    first, because a trace-based time limit cannot interrupt C code.
    """
    expr = compile_expression(expression) if isinstance(expression, str) else expression
    evaluator = _DictOnlyEval(operators=dict(_OPERATORS), functions=dict(_SAFE_FUNCTIONS), names=dict(names))
    previous = sys.gettrace()
    sys.settrace(_deadline_tracer(time_limit, wall_limit))
    try:
        result = evaluator.eval(expr.text, previously_parsed=expr.tree.body)
    except ExpressionError:
        raise
    except simpleeval.NameNotDefined as exc:
        raise ExpressionError("name", f"'{exc.name}' is not defined") from None
    except simpleeval.FeatureNotAvailable as exc:
        raise ExpressionError("forbidden", str(exc)) from None
    except (simpleeval.NumberTooHigh, simpleeval.IterableTooLong, OverflowError, MemoryError, RecursionError) as exc:
        raise ExpressionError("limit", str(exc) or type(exc).__name__) from None
    except (TypeError, ValueError, KeyError, IndexError, ZeroDivisionError, AttributeError) as exc:
        raise ExpressionError("type", f"{type(exc).__name__}: {exc}") from None
    except simpleeval.InvalidExpression as exc:
        raise ExpressionError("forbidden", str(exc)) from None
    finally:
        sys.settrace(previous)
    _size(result)  # nested too: a list of big strings is as big as its strings
    return result

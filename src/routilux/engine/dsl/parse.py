"""Text to plain data, within limits: size, encoding and format; JSON; YAML on its node graph.

See :mod:`routilux.engine.dsl` for why it is built this way. :func:`parse_text` returns plain
data (``dict``/``list``/``str``/numbers/``bool``/``None``) or raises :class:`DSLError`;
:func:`check_data` bounds data that is already parsed.
"""

from __future__ import annotations

import re
import sys
from typing import Any, Final, Literal, NoReturn

import msgspec
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.reader import ReaderError

from routilux.engine.errors import DSLError, Problem
from routilux.engine.validation import DOCUMENT, join_path, kind_of

Format = Literal["yaml", "json"]


class DSLLimits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Bounds on a DSL document, checked before it is turned into Python objects."""

    #: Size of the document in bytes (UTF-8).
    max_bytes: int = 1_048_576
    #: Nesting of mappings and sequences (a flat mapping has depth 1).
    max_depth: int = 32
    #: Mappings, sequences, keys and scalars, counted after alias expansion.
    max_nodes: int = 100_000
    #: YAML alias references (``*name``, including merge keys).
    max_aliases: int = 100


DEFAULT_LIMITS: Final = DSLLimits()


def parse_text(text: str | bytes, format: Format | None, limits: DSLLimits) -> Any:
    """The plain data of a YAML or JSON document; ``format=None`` detects it."""
    if format not in (None, "yaml", "json"):
        raise ValueError(f"format must be 'yaml', 'json' or None, not {format!r}")
    source = _decode_text(text, limits)
    if format == "json":
        return _parse_json(source, limits)
    if format == "yaml":
        return _parse_yaml(source, limits)
    return _parse_detected(source, limits)


# ---------------------------------------------------------------------------------------------
# Text: size, encoding, format
# ---------------------------------------------------------------------------------------------
def _fail(location: str, code: str, message: str) -> NoReturn:
    raise DSLError([Problem(location, code, message)]) from None  # hide parser internals


def _too_large(size: int | str, limits: DSLLimits) -> NoReturn:
    _fail(DOCUMENT, "too_large", f"the document is {size} bytes; the limit is {limits.max_bytes}")


def _decode_text(text: str | bytes, limits: DSLLimits) -> str:
    """Check the size on the raw bytes, then return the text (UTF-8, without a BOM)."""
    if isinstance(text, str):
        if len(text) > limits.max_bytes:  # every character is at least one byte
            _too_large(f"more than {limits.max_bytes}", limits)
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > limits.max_bytes:
            _too_large(size, limits)
        source = text
    elif isinstance(text, (bytes, bytearray, memoryview)):
        raw = bytes(text)
        if len(raw) > limits.max_bytes:
            _too_large(len(raw), limits)
        try:
            source = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            where = _line_column(raw, exc.start, b"\n")
            _fail(DOCUMENT, "syntax", f"{where}: invalid UTF-8 (byte {exc.start}): {exc.reason}")
    else:
        raise TypeError(f"a DSL document is str or bytes, not {type(text).__name__}")
    return source.removeprefix("\ufeff")


def _parse_detected(source: str, limits: DSLLimits) -> Any:
    """JSON if the text starts with ``{``, else YAML.

    A YAML flow mapping (``{flow_id: x}``) also starts with ``{``, so text that is not valid
    JSON is tried as YAML; if it is not valid YAML either, the JSON error is the one reported.
    """
    if not source.lstrip().startswith("{"):
        return _parse_yaml(source, limits)
    try:
        return _parse_json(source, limits)
    except DSLError as json_error:
        if [p.code for p in json_error.problems] != ["syntax"]:
            raise
        try:
            return _parse_yaml(source, limits)
        except DSLError:
            raise json_error from None


def _line_column(text: str | bytes, offset: int, newline: Any) -> str:
    """``line L, column C`` (1-based) of ``offset`` in ``text``."""
    line = text.count(newline, 0, offset) + 1
    column = offset - (text.rfind(newline, 0, offset) + 1) + 1
    return f"line {line}, column {column}"


# ---------------------------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------------------------
_BYTE_RE: Final = re.compile(r"\(byte (\d+)\)")


def _parse_json(source: str, limits: DSLLimits) -> Any:
    """Decode with msgspec, then bound the decoded data (JSON has no aliases to expand)."""
    data = _decode_json(source)
    check_data(data, limits)
    return data


def _decode_json(source: str) -> Any:
    try:
        return msgspec.json.decode(source)
    except msgspec.DecodeError as exc:
        _fail(DOCUMENT, "syntax", _json_message(source, str(exc)))
    except RecursionError:
        _fail(DOCUMENT, "too_deep", "the document is nested too deeply to be decoded")
    except (ValueError, TypeError) as exc:  # e.g. lone surrogates in a str
        _fail(DOCUMENT, "syntax", f"{type(exc).__name__}: {exc}")


def _json_message(source: str, message: str) -> str:
    """Prefix msgspec's message with the line and column of the byte it reports."""
    raw = source.encode("utf-8", "surrogatepass")
    match = _BYTE_RE.search(message)
    if match is not None:
        offset = int(match.group(1))
    elif "truncated" in message:
        offset = len(raw)
    else:
        return message
    where = _line_column(raw, offset, b"\n")
    return f"{where}: {message}"


# ---------------------------------------------------------------------------------------------
# YAML
# ---------------------------------------------------------------------------------------------
_TAG: Final = "tag:yaml.org,2002:"
_STR, _MAP, _SEQ, _MERGE, _TIMESTAMP = (
    _TAG + "str",
    _TAG + "map",
    _TAG + "seq",
    _TAG + "merge",
    _TAG + "timestamp",
)
_SCALAR_TAGS: Final = frozenset({_STR, _TAG + "int", _TAG + "float", _TAG + "bool", _TAG + "null"})


def _yaml_loader(limits: DSLLimits) -> YAML:
    yaml = YAML(typ="safe", pure=True)
    yaml.allow_duplicate_keys = False
    # ruamel >= 0.19 stops composing past this depth (scalars count as a level); the exact
    # check is the node walk's, this one only spares composing a deep document to the end.
    yaml.max_depth = limits.max_depth + 1
    yaml.composer.warn_double_anchors = False  # redefining an anchor is legal YAML
    return yaml


def _parse_yaml(source: str, limits: DSLLimits) -> Any:
    """Compose, check the node graph against the limits, and only then construct."""
    yaml = _yaml_loader(limits)
    _stop_composing_past(yaml, limits.max_nodes)
    try:
        node = yaml.compose(source)
    except DSLError:
        raise
    except RecursionError:
        _fail(DOCUMENT, "too_deep", "the document is nested too deeply to be read")
    except Exception as exc:  # noqa: BLE001 - every ruamel failure is a syntax problem
        if type(exc).__name__ == "MaxDepthExceededError":
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            _fail(DOCUMENT, "too_deep", f"{where}nested more than {limits.max_depth} levels deep")
        raise _syntax_error(exc, source) from None
    if node is None:
        return None
    _NodeChecker(limits).check(node)
    try:
        return yaml.constructor.construct_document(node)
    except Exception as exc:  # noqa: BLE001
        raise _syntax_error(exc, source) from None


def _stop_composing_past(yaml: YAML, max_nodes: int) -> None:
    """Fail as soon as the composer has made more than ``max_nodes`` nodes.

    Pure-Python YAML costs tens of microseconds per node, so composing a 1 MiB document of
    ``[1,1,1,...]`` before counting its nodes would take tens of seconds of CPU per request; this
    bounds the work to what a document at the limit costs. Aliases are counted once here, so this
    count never exceeds the expanded count the node walk checks exactly afterwards.
    """
    composer = yaml.composer
    compose_node = composer.compose_node
    made = 0

    def counting(parent: Any, index: Any) -> Any:
        nonlocal made
        made += 1
        if made > max_nodes:
            mark = composer.parser.peek_event().start_mark
            _fail(
                DOCUMENT,
                "too_many_nodes",
                f"line {mark.line + 1}, column {mark.column + 1}: more than {max_nodes} nodes",
            )
        return compose_node(parent, index)

    composer.compose_node = counting  # the composer recurses through the instance attribute


def _syntax_error(exc: Exception, source: str) -> DSLError:
    return DSLError([Problem(DOCUMENT, "syntax", _yaml_message(exc, source))])


def _yaml_message(exc: Exception, source: str) -> str:
    if isinstance(exc, MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        text = ": ".join(str(part) for part in (exc.context, exc.problem) if part)
        text = text or type(exc).__name__
        if mark is None:
            return text
        return f"line {mark.line + 1}, column {mark.column + 1}: {text}"
    if isinstance(exc, ReaderError):
        where = _line_column(source, exc.position, "\n")
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        return f"{where}: unacceptable character #x{char:04x}: {exc.reason}"
    if isinstance(exc, YAMLError):
        return str(exc)
    if isinstance(exc, ValueError) and "integer string conversion" in str(exc):
        return f"a number has more than {sys.get_int_max_str_digits()} digits"  # Python's own bound
    return f"{type(exc).__name__}: {exc}"


def _mark(node: Node) -> str:
    mark = node.start_mark
    return f"line {mark.line + 1}, column {mark.column + 1}"


class _NodeChecker:
    """One iterative walk of a composed YAML graph: limits, tags, keys.

    ``sizes`` memoises each node's expanded size (itself plus everything below it, aliases
    expanded) and ``heights`` its nesting height, both by node identity, so a node referenced
    by many aliases is walked once. A node met again while still on the walk's path is a cycle.
    Limit violations stop the walk at once; tag and key problems are collected.
    """

    def __init__(self, limits: DSLLimits) -> None:
        self.limits = limits
        self.sizes: dict[int, int] = {}
        self.heights: dict[int, int] = {}
        self.on_path: set[int] = set()
        self.aliases = 0
        self.problems: list[Problem] = []

    def check(self, root: Node) -> None:
        # Stack entries: (node, path, level, children_done); ``level`` counts the containers
        # above the node. Scalars (most nodes) are finished on the spot.
        stack: list[tuple[Node, str, int, bool]] = [(root, "", 0, False)]
        sizes, on_path = self.sizes, self.on_path
        while stack:
            node, path, level, done = stack.pop()
            if done:
                self._finish(node)
            elif id(node) in sizes or id(node) in on_path:
                self._alias(node, path, level)
            elif isinstance(node, ScalarNode):
                self._check_scalar_tag(node, path)
                if isinstance(node.value, str) and (bad := _lone_surrogate(node.value)) is not None:
                    self.problems.append(Problem(path or DOCUMENT, "invalid_value", f"{_mark(node)}: {bad}"))
                sizes[id(node)] = 1
                self.heights[id(node)] = 0
            else:
                self._enter(node, path, level, stack)
        if self.problems:
            raise DSLError(self.problems)

    def _enter(self, node: Node, path: str, level: int, stack: list[tuple[Node, str, int, bool]]) -> None:
        """Check a container and schedule its children, then itself again to be finished."""
        if level + 1 > self.limits.max_depth:
            self._too_deep(node)
        self._check_container_tag(node, path)
        self.on_path.add(id(node))
        stack.append((node, path, level, True))
        children = self._children(node, path)
        stack.extend((child, where, level + 1, False) for child, where in reversed(children))

    # -- limits --------------------------------------------------------------------------------
    def _alias(self, node: Node, path: str, level: int) -> None:
        if id(node) in self.on_path:
            _fail(path or DOCUMENT, "recursive_alias", f"{_mark(node)}: an alias refers to itself")
        self.aliases += 1
        if self.aliases > self.limits.max_aliases:
            _fail(
                path or DOCUMENT,
                "too_many_aliases",
                f"{_mark(node)}: more than {self.limits.max_aliases} alias references",
            )
        if level + self.heights[id(node)] > self.limits.max_depth:
            self._too_deep(node)

    def _finish(self, node: Node) -> None:
        """All children are measured: record the container's expanded size and height."""
        sizes, heights = self.sizes, self.heights
        if isinstance(node, MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            children = node.value
        size = 1 + sum(sizes[id(child)] for child in children)
        self.on_path.discard(id(node))
        sizes[id(node)] = size
        heights[id(node)] = 1 + max((heights[id(child)] for child in children), default=0)
        if size > self.limits.max_nodes:
            _fail(
                DOCUMENT,
                "too_many_nodes",
                f"{_mark(node)}: more than {self.limits.max_nodes} nodes once aliases are expanded",
            )

    def _too_deep(self, node: Node) -> NoReturn:
        _fail(
            DOCUMENT,
            "too_deep",
            f"{_mark(node)}: nested more than {self.limits.max_depth} levels deep",
        )

    # -- structure -----------------------------------------------------------------------------
    def _children(self, node: Node, path: str) -> list[tuple[Node, str]]:
        """Child nodes with their DSL paths; checks mapping keys on the way."""
        if isinstance(node, SequenceNode):
            return [(item, f"{path}[{index}]") for index, item in enumerate(node.value)]
        children: list[tuple[Node, str]] = []
        seen: dict[str, Node] = {}
        for key, value in node.value:
            name = self._check_key(key, path, seen)
            children.append((key, path))
            children.append((value, path if name is None else join_path(path, name)))
        return children

    def _check_key(self, key: Node, path: str, seen: dict[str, Node]) -> str | None:
        """The key's name, or None for a merge key (``<<``), whose mapping lands in ``path``."""
        tag = key.tag if isinstance(key, ScalarNode) else None
        if tag == _MERGE:
            return None
        if tag == _TIMESTAMP:
            key.tag = tag = _STR  # a date-like key is text, as in JSON
        if tag != _STR:
            got = _nodekind_of(key)
            self.problems.append(
                Problem(path or DOCUMENT, "invalid_type", f"{_mark(key)}: keys must be strings, got {got}")
            )
            return f"<{got}>"
        name = str(key.value)
        first = seen.setdefault(name, key)
        if first is not key:
            self.problems.append(
                Problem(
                    join_path(path, name),
                    "syntax",
                    f"{_mark(key)}: duplicate key '{name}' (first at {_mark(first)})",
                )
            )
        return name

    def _check_scalar_tag(self, node: Node, path: str) -> None:
        tag = node.tag
        if tag in _SCALAR_TAGS or tag == _MERGE:  # a merge value is refused on construction
            return
        if tag == _TIMESTAMP:  # keep dates as text, as JSON would
            node.tag = _STR
            return
        self._bad_tag(node, tag, path)

    def _check_container_tag(self, node: Node, path: str) -> None:
        tag = node.tag
        if tag != (_MAP if isinstance(node, MappingNode) else _SEQ):
            self._bad_tag(node, tag, path)

    def _bad_tag(self, node: Node, tag: str | None, path: str) -> None:
        self.problems.append(
            Problem(path or DOCUMENT, "syntax", f"{_mark(node)}: the tag '{tag}' is not allowed")
        )


def _nodekind_of(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "mapping"
    if isinstance(node, SequenceNode):
        return "list"
    tag = node.tag or ""
    return tag.removeprefix(_TAG)


# ---------------------------------------------------------------------------------------------
# Parsed data (JSON, dsl_dict): limits and plain types
# ---------------------------------------------------------------------------------------------
_SCALARS: Final = (str, int, float, bool, type(None))


def _lone_surrogate(text: str) -> str | None:
    """What is wrong with ``text`` if it holds half of a UTF-16 surrogate pair, else None.

    YAML's ``"\\ud800"`` escape makes one; it is not a character, so the flow could be neither
    stored nor sent as JSON (UTF-8 cannot encode it). Refused here, with where it is.
    """
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"\\u{ord(text[exc.start]):04x} is half of a UTF-16 surrogate pair, not a character"
    return None


def check_data(data: Any, limits: DSLLimits) -> None:
    """Bound depth and node count of parsed data, iteratively; only JSON-like types pass.

    A self-referencing structure (possible in ``dsl_dict``) fails as too deep.
    """
    problems: list[Problem] = []
    nodes = 0
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, path, level = stack.pop()
        nodes += 1
        if nodes > limits.max_nodes:
            _fail(DOCUMENT, "too_many_nodes", f"more than {limits.max_nodes} nodes")
        if isinstance(value, _SCALARS):
            if isinstance(value, str) and (bad := _lone_surrogate(value)) is not None:
                problems.append(Problem(path or DOCUMENT, "invalid_value", bad))
            continue
        if not isinstance(value, (dict, list)):
            message = f"unsupported value of type {type(value).__name__}"
            problems.append(Problem(path or DOCUMENT, "invalid_type", message))
            continue
        if level + 1 > limits.max_depth:
            _fail(DOCUMENT, "too_deep", f"nested more than {limits.max_depth} levels deep")
        if isinstance(value, list):
            stack.extend((item, f"{path}[{i}]", level + 1) for i, item in enumerate(value))
            continue
        for key, item in value.items():
            nodes += 1
            if not isinstance(key, str):
                got = kind_of(key)
                problems.append(Problem(path or DOCUMENT, "invalid_type", f"keys must be strings, got {got}"))
            elif (bad := _lone_surrogate(key)) is not None:
                problems.append(Problem(path or DOCUMENT, "invalid_value", bad))
            stack.append((item, join_path(path, key), level + 1))
    if problems:
        raise DSLError(problems)

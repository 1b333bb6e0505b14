"""The DSL reader/writer: round trips, the documented example, limits, and every error code
with the exact location it reports."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from routilux.engine.dsl import (
    DEFAULT_LIMITS,
    DSLLimits,
    dump_flow,
    load_flow,
    load_flow_dict,
)
from routilux.engine.errors import DSLError, Problem
from routilux.engine.flow import (
    Connection,
    ErrorHandler,
    Execution,
    Flow,
    PolicySpec,
    RoutineSpec,
)

EXAMPLE = """\
flow_id: etl
description: optional text
execution: {timeout: 300}
routines:
  source:   {class: DataSource, config: {items: [a, b, c]}}
  clean:    {class: DataTransformer, error_handler: {strategy: retry, max_retries: 3}}
  sink:     {class: DataSink}
connections:
  - {from: source.output, to: clean.input}
  - {from: clean.output, to: sink.input}
"""

EXPECTED = Flow(
    flow_id="etl",
    description="optional text",
    execution=Execution(timeout=300),
    routines={
        "source": RoutineSpec("DataSource", config={"items": ["a", "b", "c"]}),
        "clean": RoutineSpec(
            "DataTransformer", error_handler=ErrorHandler(strategy="retry", max_retries=3)
        ),
        "sink": RoutineSpec("DataSink"),
    },
    connections=[
        Connection("source.output", "clean.input"),
        Connection("clean.output", "sink.input"),
    ],
)

RICH = Flow(
    flow_id="rich.flow-1",
    description="A flow\nwith a multi-line description\n",
    execution=Execution(timeout=12.5),
    error_handler=ErrorHandler(strategy="continue"),
    routines={
        "source": RoutineSpec(
            "DataSource",
            config={
                "items": ["a", "ü", "日本語", "🎉", "", "yes", "null", "1.0", "2024-01-01", "a: b"],
                "nested": {"deep": [[1, [2.5, {"k": None}]], {}, []], "flags": [True, False]},
                "numbers": {"int": -12, "big": 2**70, "float": 0.1, "small": 3e-5, "zero": 0.0},
                "text": "line one\n  indented\nlast",
                "odd": "tab\there\r\nwindows\x85nel\u2028ls\x1bescape",
                "": "empty key",
                "1": "numeric-looking key",
            },
            policy=PolicySpec(type="batch_size", n=10, flush_when_idle=True),
            description="makes items",
        ),
        "clean": RoutineSpec(
            "DataTransformer",
            error_handler=ErrorHandler(
                strategy="retry", max_retries=0, retry_delay=0.5, retry_backoff=1.0
            ),
            policy=PolicySpec(type="time_interval", seconds=2),
        ),
        "sink": RoutineSpec("DataSink", policy=PolicySpec(type="custom", name="mine")),
    },
    connections=[
        Connection("source.output", "clean.input"),
        Connection("clean.output", "sink.input"),
        Connection("clean.output", "clean.input"),
    ],
)


def problems_of(text: str | bytes, **kwargs: Any) -> list[Problem]:
    with pytest.raises(DSLError) as info:
        load_flow(text, **kwargs)
    return info.value.problems


def only_problem(text: str | bytes, **kwargs: Any) -> Problem:
    problems = problems_of(text, **kwargs)
    assert len(problems) == 1, problems
    return problems[0]


def where(problems: list[Problem]) -> list[tuple[str, str]]:
    return [(p.location, p.code) for p in problems]


def routine_doc(body: str) -> str:
    """A flow whose only routine, ``clean``, is ``body`` (a YAML flow mapping)."""
    return f"flow_id: f\nroutines:\n  clean: {body}\n"


# -- loading and round trips ---------------------------------------------------------------------
def test_the_documented_example_loads() -> None:
    assert load_flow(EXAMPLE) == EXPECTED
    assert load_flow(EXAMPLE.encode()) == EXPECTED
    assert load_flow(EXAMPLE, "yaml") == EXPECTED


@pytest.mark.parametrize("fmt", ["yaml", "json"])
@pytest.mark.parametrize("flow", [EXPECTED, RICH, Flow(flow_id="minimal")], ids=["example", "rich", "minimal"])
def test_round_trip_is_lossless(flow: Flow, fmt: str) -> None:
    text = dump_flow(flow, fmt)  # type: ignore[arg-type]
    assert load_flow(text) == flow
    assert load_flow(text, fmt) == flow  # type: ignore[arg-type]
    assert load_flow(text.encode()) == flow


def test_yaml_output_is_block_style_in_document_order() -> None:
    text = dump_flow(EXPECTED)
    assert text.splitlines()[:6] == [
        "flow_id: etl",
        "description: optional text",
        "execution:",
        "  timeout: 300",
        "routines:",
        "  source:",
    ]
    assert "  - from: source.output\n    to: clean.input\n" in text
    assert "{" not in text
    assert "ü" in dump_flow(RICH)  # unicode stays readable
    assert "description: |\n  A flow\n" in dump_flow(RICH)  # multi-line text as a literal block


def test_json_output_is_indented_by_two() -> None:
    text = dump_flow(EXPECTED, "json")
    assert text.startswith('{\n  "flow_id": "etl",\n  "description": "optional text",\n')
    assert '"class": "DataSource"' in text


def test_shared_values_are_not_written_as_aliases() -> None:
    shared = {"items": [1, 2]}
    flow = Flow(
        flow_id="f",
        routines={"a": RoutineSpec("A", config=shared), "b": RoutineSpec("B", config=shared)},
    )
    text = dump_flow(flow)
    assert "&" not in text and "*" not in text
    assert load_flow(text) == flow


def test_auto_detection() -> None:
    json_text = dump_flow(EXPECTED, "json")
    assert load_flow("\n  \t" + json_text) == EXPECTED
    assert load_flow(dump_flow(EXPECTED, "yaml")) == EXPECTED
    # a YAML flow mapping starts with "{" too
    assert load_flow("{flow_id: etl, routines: {a: {class: A}}}").routines["a"].class_name == "A"
    # forcing JSON on YAML text is a syntax error
    assert only_problem(EXAMPLE, format="json").code == "syntax"


def test_json_syntax_error_reports_line_and_column() -> None:
    problem = only_problem('{"flow_id": "x",\n "routines": {]}')
    assert (problem.location, problem.code) == ("document", "syntax")
    assert problem.message.startswith("line 2, column 15: ")
    truncated = only_problem('{"flow_id": "x",\n "routines": [', format="json")
    assert truncated.code == "syntax" and truncated.message.startswith("line 2, column 15")


def test_utf8_bom_is_ignored() -> None:
    assert load_flow(b"\xef\xbb\xbf" + EXAMPLE.encode()) == EXPECTED
    assert load_flow("\ufeff" + dump_flow(EXPECTED, "json")) == EXPECTED


def test_load_flow_dict_shares_the_validation() -> None:
    assert load_flow_dict(EXPECTED.to_builtins()) == EXPECTED
    with pytest.raises(DSLError) as info:
        load_flow_dict({"flow_id": "f", "routines": {"clean": {"class": 3, "colour": "red"}}})
    assert where(info.value.problems) == [
        ("routines.clean.colour", "unknown_field"),
        ("routines.clean.class", "invalid_type"),
    ]


def test_load_flow_dict_rejects_non_plain_values() -> None:
    with pytest.raises(DSLError) as info:
        load_flow_dict({"flow_id": "f", "routines": {"a": {"class": "A", "config": {"s": {1}}}}})
    assert where(info.value.problems) == [("routines.a.config.s", "invalid_type")]
    with pytest.raises(DSLError) as info:
        load_flow_dict({"flow_id": "f", 1: "x"})
    assert where(info.value.problems) == [("document", "invalid_type")]


def test_load_flow_dict_survives_a_self_referencing_structure() -> None:
    data: dict[str, Any] = {"flow_id": "f"}
    data["routines"] = data
    with pytest.raises(DSLError) as info:
        load_flow_dict(data)
    assert where(info.value.problems) == [("document", "too_deep")]


def test_moderate_anchor_and_alias_use_is_accepted() -> None:
    text = """\
flow_id: shared
routines:
  a: &base {class: Worker, config: &cfg {retries: 2, tags: [x, y]}}
  b: {<<: *base, description: same as a}
  c: {class: Other, config: *cfg}
"""
    flow = load_flow(text)
    assert flow.routines["b"] == RoutineSpec("Worker", {"retries": 2, "tags": ["x", "y"]}, description="same as a")
    assert flow.routines["c"].config == {"retries": 2, "tags": ["x", "y"]}


def test_implicit_dates_stay_text() -> None:
    flow = load_flow(routine_doc("{class: A, config: {day: 2024-01-01, 2024-01-02: holiday}}"))
    assert flow.routines["clean"].config == {"day": "2024-01-01", "2024-01-02": "holiday"}


# -- shape problems, with exact locations ---------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "location", "code"),
    [
        ("description: no id\n", "flow_id", "missing_field"),
        ("flow_id: 12\n", "flow_id", "invalid_type"),
        ("flow_id: f\ncolour: red\n", "colour", "unknown_field"),
        ("flow_id: f\nexecution: {timeout: soon}\n", "execution.timeout", "invalid_type"),
        ("flow_id: f\nexecution: 5\n", "execution", "not_a_mapping"),
        ("flow_id: f\nerror_handler: {max_retries: -1}\n", "error_handler.max_retries", "invalid_value"),
        ("flow_id: f\nroutines: [a, b]\n", "routines", "not_a_mapping"),
        ("flow_id: f\nconnections: {a: b}\n", "connections", "invalid_type"),
        (routine_doc("{config: {}}"), "routines.clean.class", "missing_field"),
        (routine_doc("{class: [A]}"), "routines.clean.class", "invalid_type"),
        (routine_doc("{class: A, colour: red}"), "routines.clean.colour", "unknown_field"),
        (routine_doc("{class: A, config: [1, 2]}"), "routines.clean.config", "not_a_mapping"),
        (routine_doc("{class: A, config: 3}"), "routines.clean.config", "not_a_mapping"),
        (routine_doc("[A]"), "routines.clean", "not_a_mapping"),
        (routine_doc("{class: A, error_handler: retry}"), "routines.clean.error_handler", "not_a_mapping"),
        (
            routine_doc('{class: A, error_handler: {max_retries: "x"}}'),
            "routines.clean.error_handler.max_retries",
            "invalid_type",
        ),
        (
            routine_doc("{class: A, error_handler: {strategy: again}}"),
            "routines.clean.error_handler.strategy",
            "invalid_value",
        ),
        (
            routine_doc("{class: A, error_handler: {retry_backoff: 0.5}}"),
            "routines.clean.error_handler.retry_backoff",
            "invalid_value",
        ),
        (
            routine_doc("{class: A, error_handler: {retry_delay: true}}"),
            "routines.clean.error_handler.retry_delay",
            "invalid_type",
        ),
        (routine_doc("{class: A, policy: {type: sometimes}}"), "routines.clean.policy.type", "invalid_value"),
        (routine_doc("{class: A, policy: {type: batch_size, n: ten}}"), "routines.clean.policy.n", "invalid_type"),
        (routine_doc("{class: A, policy: {n: 3}}"), "routines.clean.policy.type", "missing_field"),
        (routine_doc("{class: A, description: 5}"), "routines.clean.description", "invalid_type"),
        (
            "flow_id: f\nconnections:\n  - {from: a.out, to: b.in}\n  - {from: b.out}\n",
            "connections[1].to",
            "missing_field",
        ),
        ("flow_id: f\nconnections:\n  - {from: 3, to: b.in}\n", "connections[0].from", "invalid_type"),
        ("flow_id: f\nconnections:\n  - {from: a.out, to: b}\n", "connections[0].to", "invalid_value"),
        ("flow_id: f\nconnections:\n  - {from: .out, to: b.in}\n", "connections[0].from", "invalid_value"),
        ("flow_id: f\nconnections:\n  - {from: a.out, to: b.in, via: c}\n", "connections[0].via", "unknown_field"),
        ("flow_id: f\nconnections:\n  - a.out -> b.in\n", "connections[0]", "not_a_mapping"),
    ],
)
def test_problem_location(text: str, location: str, code: str) -> None:
    problem = only_problem(text)
    assert (problem.location, problem.code) == (location, code)


def test_messages_are_friendly() -> None:
    problem = only_problem(routine_doc('{class: A, error_handler: {max_retries: "x"}}'))
    assert problem.message == "expected integer, got string"
    problem = only_problem("flow_id: f\nexecution: {timeout: soon}\n")
    assert problem.message == "expected number or null, got string"
    problem = only_problem(routine_doc("{class: A, error_handler: {strategy: again}}"))
    assert "stop, continue, retry, skip" in problem.message
    problem = only_problem("flow_id: f\nerror_handler: {max_retries: -1}\n")
    assert problem.message == "max_retries must be >= 0"


def test_two_bad_routines_give_two_problems() -> None:
    text = """\
flow_id: f
routines:
  clean: {class: A, config: [1]}
  sink: {class: 7}
  fine: {class: B}
connections:
  - {from: clean.out}
"""
    assert where(problems_of(text)) == [
        ("routines.clean.config", "not_a_mapping"),
        ("routines.sink.class", "invalid_type"),
        ("connections[0].to", "missing_field"),
    ]


def test_problems_in_one_routine_are_all_reported() -> None:
    text = routine_doc('{class: 1, colour: red, error_handler: {max_retries: "x", strategy: again}}')
    assert sorted(where(problems_of(text))) == [
        ("routines.clean.class", "invalid_type"),
        ("routines.clean.colour", "unknown_field"),
        ("routines.clean.error_handler.max_retries", "invalid_type"),
        ("routines.clean.error_handler.strategy", "invalid_value"),
    ]


def test_the_error_summarises_the_first_problem() -> None:
    with pytest.raises(DSLError) as info:
        load_flow("flow_id: f\nroutines: {a: {class: 1}, b: {class: 2}}\n")
    error = info.value
    assert error.code == "invalid_dsl"
    assert str(error) == "routines.a.class: expected string, got integer (and 1 more)"
    assert [p["location"] for p in error.to_dict()["problems"]] == ["routines.a.class", "routines.b.class"]


# -- documents that are not mappings ------------------------------------------------------------------
@pytest.mark.parametrize(
    "text", ["- flow_id: f\n", "just text\n", "42", "", "# only a comment\n", "null\n", '["a"]', '"x"']
)
def test_document_must_be_a_mapping(text: str) -> None:
    problem = only_problem(text)
    assert (problem.location, problem.code) == ("document", "not_a_mapping")


def test_empty_document_says_so() -> None:
    assert "empty" in only_problem("").message


# -- syntax ---------------------------------------------------------------------------------------------
def test_yaml_syntax_error_shows_the_line() -> None:
    problem = only_problem("flow_id: f\nroutines:\n  a: {class: A\n  b: [\n")
    assert (problem.location, problem.code) == ("document", "syntax")
    assert problem.message.startswith("line ")
    bad_indent = only_problem("flow_id: f\nroutines:\n  a: 1\n b: 2\n")
    assert bad_indent.code == "syntax" and bad_indent.message.startswith("line 4, column 2: ")


def test_duplicate_key_is_a_syntax_error_with_its_line() -> None:
    problem = only_problem("flow_id: f\nroutines:\n  a: {class: A}\n  a: {class: B}\n")
    assert (problem.location, problem.code) == ("routines.a", "syntax")
    assert problem.message.startswith("line 4, column 3: duplicate key 'a'")


def test_keys_must_be_strings() -> None:
    problem = only_problem(routine_doc("{class: A, config: {1: one}}"))
    assert (problem.location, problem.code) == ("routines.clean.config", "invalid_type")
    assert "keys must be strings" in problem.message


@pytest.mark.parametrize(
    "value",
    [
        "!!python/object:os.system x",
        "!!python/object/apply:os.system [echo hi]",
        "!!python/name:os.system ''",
        "!!binary aGk=",
        "!!set {a, b}",
        "!custom 1",
    ],
)
def test_non_plain_tags_are_rejected(value: str) -> None:
    problem = only_problem(routine_doc(f"{{class: A, config: {{x: {value}}}}}"))
    assert (problem.location, problem.code) == ("routines.clean.config.x", "syntax")
    assert "not allowed" in problem.message and problem.message.startswith("line 3, ")


def test_undefined_alias_and_multiple_documents_are_syntax_errors() -> None:
    assert only_problem("flow_id: *nope\n").code == "syntax"
    assert only_problem("flow_id: a\n---\nflow_id: b\n").code == "syntax"


@pytest.mark.parametrize("raw", [b"flow_id: \xff\xfe\n", b'{"flow_id": "\xc3"}', b"\x80"])
def test_invalid_utf8_is_a_syntax_error(raw: bytes) -> None:
    problem = only_problem(raw)
    assert (problem.location, problem.code) == ("document", "syntax")
    assert "UTF-8" in problem.message


def test_unprintable_characters_are_a_syntax_error() -> None:
    problem = only_problem("flow_id: a\x00b\n")
    assert problem.code == "syntax" and problem.message.startswith("line 1, column 11")


# -- limits -----------------------------------------------------------------------------------------------
def billion_laughs(levels: int = 9, width: int = 9) -> str:
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for level in range(1, levels):
        refs = ", ".join([f"*a{level - 1}"] * width)
        lines.append(f"a{level}: &a{level} [{refs}]")
    return "\n".join(lines) + "\n"


def test_default_limits() -> None:
    assert DEFAULT_LIMITS == DSLLimits(
        max_bytes=1_048_576, max_depth=32, max_nodes=100_000, max_aliases=100
    )


def test_alias_bomb_is_rejected_fast() -> None:
    text = billion_laughs()
    started = time.perf_counter()
    problem = only_problem(text)
    elapsed = time.perf_counter() - started
    assert (problem.location, problem.code) == ("document", "too_many_nodes")
    assert elapsed < 0.1, f"took {elapsed * 1000:.1f} ms"


def test_alias_bomb_is_rejected_fast_even_with_generous_alias_limit() -> None:
    text = billion_laughs(levels=12, width=40)  # 440 aliases, 40**12 nodes
    limits = DSLLimits(max_aliases=10_000)
    started = time.perf_counter()
    assert only_problem(text, limits=limits).code == "too_many_nodes"
    assert time.perf_counter() - started < 0.1


def test_too_many_aliases() -> None:
    refs = ", ".join(["*x"] * 101)
    text = f"flow_id: f\nroutines: {{a: {{class: A, config: {{v: &x 1, l: [{refs}]}}}}}}\n"
    problem = only_problem(text)
    assert (problem.location, problem.code) == ("routines.a.config.l[100]", "too_many_aliases")
    ok = text.replace(refs, ", ".join(["*x"] * 100))
    assert load_flow(ok).routines["a"].config["l"] == [1] * 100


@pytest.mark.parametrize(
    ("text", "location"),
    [
        ("flow_id: f\nroutines: &r {a: *r}\n", "routines.a"),
        ("flow_id: f\nroutines: {a: {class: A, config: &c {l: [1, [*c]]}}}\n", "routines.a.config.l[1][0]"),
    ],
)
def test_recursive_alias(text: str, location: str) -> None:
    problem = only_problem(text)
    assert (problem.location, problem.code) == (location, "recursive_alias")


def nested(depth: int, fmt: str) -> str:
    """A document whose routine config nests ``depth`` levels in total."""
    inner_levels = depth - 3  # the document, routines and the routine are 3 levels
    if fmt == "json":
        inner = "[" * (inner_levels - 1) + "1" + "]" * (inner_levels - 1)
        return '{"flow_id": "f", "routines": {"a": {"class": "A", "config": {"x": ' + inner + "}}}}"
    inner = "[" * (inner_levels - 1) + "1" + "]" * (inner_levels - 1)
    return f"flow_id: f\nroutines:\n  a:\n    class: A\n    config: {{x: {inner}}}\n"


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_depth_limit(fmt: str) -> None:
    assert load_flow(nested(32, fmt)).routines["a"].class_name == "A"
    problem = only_problem(nested(33, fmt))
    assert (problem.location, problem.code) == ("document", "too_deep")
    assert only_problem(nested(5, fmt), limits=DSLLimits(max_depth=4)).code == "too_deep"


def test_depth_limit_applies_through_aliases() -> None:
    text = "flow_id: f\ndeep: &d [[[[1]]]]\nroutines: {a: {class: A, config: {x: *d}}}\n"
    assert only_problem(text, limits=DSLLimits(max_depth=6)).code == "too_deep"


def test_very_deep_documents_are_rejected_without_recursion_error() -> None:
    text = '{"flow_id": "f", "x": ' + "[" * 200_000 + "]" * 200_000 + "}"
    assert only_problem(text, limits=DSLLimits(max_bytes=10**6)).code == "too_deep"
    text = "x: " + "[" * 200_000 + "]" * 200_000
    assert only_problem(text, limits=DSLLimits(max_bytes=10**6)).code == "too_deep"


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_node_limit_without_aliases(fmt: str) -> None:
    items = list(range(200))
    flow = Flow(flow_id="f", routines={"a": RoutineSpec("A", config={"items": items})})
    text = dump_flow(flow, fmt)  # type: ignore[arg-type]
    assert load_flow(text) == flow
    problem = only_problem(text, limits=DSLLimits(max_nodes=100))
    assert (problem.location, problem.code) == ("document", "too_many_nodes")


def test_yaml_composition_stops_at_the_node_limit() -> None:
    """Pure-Python YAML costs tens of microseconds a node: a document far over the limit is
    refused where it crosses it (the error's column), not after composing all of it."""
    text = "flow_id: f\nx: [" + ",".join(["1"] * 50_000) + "]\n"
    problem = only_problem(text, limits=DSLLimits(max_nodes=1000))
    assert (problem.location, problem.code) == ("document", "too_many_nodes")
    line, column = (int(n) for n in re.findall(r"line (\d+), column (\d+)", problem.message)[0])
    assert line == 2 and column < 2 * 1000 + 10  # about the 1000th node of "1,1,1,...": far from 100,000


@pytest.mark.parametrize(
    ("text", "location"),
    [
        ('flow_id: f\ndescription: "\\ud800"\n', "description"),
        ('flow_id: f\nroutines: {a: {class: A, config: {items: ["ok", "\\udfff!"]}}}\n', "routines.a.config.items[1]"),
        ('flow_id: f\nroutines: {"\\udc00": {class: A}}\n', "routines"),
    ],
)
def test_an_unpaired_surrogate_escape_is_refused_with_its_location(text: str, location: str) -> None:
    """YAML's \\uXXXX escape can make half a surrogate pair, which no UTF-8 (so no JSON reply and
    no store) can hold: refused here rather than failing later as a server error."""
    problem = only_problem(text)
    assert (problem.location, problem.code) == (location, "invalid_value")
    assert "surrogate" in problem.message and problem.message.startswith("line 2")
    with pytest.raises(DSLError) as caught:
        load_flow_dict({"flow_id": "f", "description": "\udfff"})
    assert [(p.location, p.code) for p in caught.value.problems] == [("description", "invalid_value")]


@pytest.mark.parametrize("as_bytes", [False, True])
@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_size_limit(fmt: str, as_bytes: bool) -> None:
    text = dump_flow(EXPECTED, fmt)  # type: ignore[arg-type]
    size = len(text.encode())
    exact = DSLLimits(max_bytes=size)
    payload: str | bytes = text.encode() if as_bytes else text
    assert load_flow(payload, limits=exact) == EXPECTED
    problem = only_problem(payload, limits=DSLLimits(max_bytes=size - 1))
    assert (problem.location, problem.code) == ("document", "too_large")


def test_size_limit_counts_bytes_not_characters() -> None:
    text = "flow_id: f\ndescription: " + "é" * 100 + "\n"
    assert load_flow(text, limits=DSLLimits(max_bytes=len(text.encode()))).description == "é" * 100
    assert only_problem(text, limits=DSLLimits(max_bytes=len(text) + 10)).code == "too_large"


def test_default_size_limit_is_checked_before_parsing() -> None:
    huge = "flow_id: f\n" + "#" * 2_000_000 + "\n"
    started = time.perf_counter()
    assert only_problem(huge).code == "too_large"
    assert time.perf_counter() - started < 0.1


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        load_flow(EXAMPLE, "toml")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        dump_flow(EXPECTED, "toml")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        load_flow(123)  # type: ignore[arg-type]

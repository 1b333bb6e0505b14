"""The data routines (routilux.builtins.data), run through real jobs."""

from __future__ import annotations

import random
from typing import Any

import anyio
import pytest

from routilux.builtins.data import DataSource, DataTransformer, DataValidator, ErrorGenerator, SlowProcessor
from routilux.engine import ConfigError, Engine, Entry, ErrorHandler, FlowValidationError, JobStatus, compile_flow
from tests.support.builtin_flows import data_of, entries, make_flow, results, run_flow


def _through(class_name: str, config: dict[str, Any] | None = None, out: str = "output"):
    """A flow ``r`` (the routine under test) whose ``out`` event feeds DataSink ``sink``."""
    return make_flow({"r": (class_name, config or {}), "sink": "DataSink"}, [(f"r.{out}", "sink.input")])


# ---------------------------------------------------------------------------------------------
# DataSource
# ---------------------------------------------------------------------------------------------
async def test_source_emits_configured_items_on_every_trigger() -> None:
    flow = make_flow(
        {"src": ("DataSource", {"items": ["a", "b", {"k": 1}]}), "sink": "DataSink"},
        [("src.output", "sink.input")],
    )
    job = await run_flow(flow, entries("src", "trigger", [None, None]))
    assert job.status is JobStatus.COMPLETED
    assert [(i["data"], i["index"]) for i in results(job)] == [
        ("a", 0),
        ("b", 1),
        ({"k": 1}, 2),
        ("a", 0),
        ("b", 1),
        ({"k": 1}, 2),
    ]
    # Emitted values are copies: downstream code can never change the config other jobs share.
    config_item = job.plan.routines["src"].config.items[2]
    assert results(job)[2]["data"] is not config_item
    results(job)[2]["data"]["k"] = 99
    assert config_item == {"k": 1}


async def test_source_passes_trigger_data_with_a_running_index_per_job(registry) -> None:
    flow = make_flow({"src": "DataSource", "sink": "DataSink"}, [("src.output", "sink.input")])
    async with Engine(registry=registry) as engine:
        plan = engine.compile(flow)
        jobs = []
        for values in (["x", "y", "z"], ["p", "q"]):
            job = await engine.start_job(plan, entries=entries("src", "trigger", values), complete_when_idle=True)
            assert await job.wait(5) is JobStatus.COMPLETED
            jobs.append(job)
    assert [(i["data"], i["index"]) for i in results(jobs[0])] == [("x", 0), ("y", 1), ("z", 2)]
    # A second job of the same plan counts from 0 again: the index is per job, not per instance.
    assert [(i["data"], i["index"]) for i in results(jobs[1])] == [("p", 0), ("q", 1)]
    assert jobs[0].shared_data["__sources__"] == {"src": 3}


async def test_source_trigger_without_data_key_emits_the_whole_item() -> None:
    flow = make_flow({"src": "DataSource", "sink": "DataSink"}, [("src.output", "sink.input")])
    job = await run_flow(flow, [Entry("src", "trigger", {"name": "ada", "age": 36})])
    assert results(job) == [{"data": {"name": "ada", "age": 36}, "index": 0}]


def test_source_config_errors() -> None:
    with pytest.raises(ConfigError) as info:
        DataSource({"items": "abc"})
    assert info.value.context["location"] == "config.items"


# ---------------------------------------------------------------------------------------------
# DataValidator
# ---------------------------------------------------------------------------------------------
async def test_validator_splits_valid_and_invalid_items_with_every_error() -> None:
    flow = make_flow(
        {
            "v": ("DataValidator", {"type": "number", "min": 0, "max": 10}),
            "ok": "DataSink",
            "bad": "DataSink",
        },
        [("v.valid", "ok.input"), ("v.invalid", "bad.input")],
    )
    job = await run_flow(flow, entries("v", "input", [5, -1, "x", None, 10, 0]))
    assert job.status is JobStatus.COMPLETED
    assert data_of(job, "ok") == [5, 10, 0]
    bad = results(job, "bad")
    assert [i["data"] for i in bad] == [-1, "x", None]
    assert bad[0]["errors"] == ["data -1 is less than min 0"]
    assert bad[1]["errors"] == [
        "data must be of type number, got string",
        "data must be a number to check min/max, got string",
    ]
    assert bad[2]["errors"][0] == "data is empty"


async def test_validator_default_rejects_only_empty_data() -> None:
    flow = make_flow(
        {"v": "DataValidator", "ok": "DataSink", "bad": "DataSink"},
        [("v.valid", "ok.input"), ("v.invalid", "bad.input")],
    )
    values = ["a", 0, False, [0], {"k": None}, None, "", [], {}]
    job = await run_flow(flow, entries("v", "input", values))
    assert data_of(job, "ok") == ["a", 0, False, [0], {"k": None}]
    assert data_of(job, "bad") == [None, "", [], {}]
    assert all(i["errors"] == ["data is empty"] for i in results(job, "bad"))


@pytest.mark.parametrize(
    ("config", "data", "errors"),
    [
        ({}, "x", []),
        ({"not_empty": False}, None, []),
        ({"type": "integer"}, 1.5, ["data must be of type integer, got number"]),
        ({"type": "integer"}, True, ["data must be of type integer, got boolean"]),
        ({"type": "number"}, 2, []),
        ({"type": "boolean"}, False, []),
        ({"type": "list"}, [1], []),
        ({"type": "object"}, [1], ["data must be of type object, got list"]),
        ({"type": "string"}, "s", []),
        ({"max": 3}, 3.5, ["data 3.5 is greater than max 3"]),
        ({"min_length": 2, "max_length": 3}, "abcd", ["data length 4 is greater than max_length 3"]),
        ({"min_length": 2}, [1], ["data length 1 is less than min_length 2"]),
        ({"min_length": 2}, 12, ["data must be a string, list or object to check its length, got integer"]),
        ({"required_keys": ["a", "b"]}, {"a": 1}, ["data is missing required keys: b"]),
        ({"required_keys": ["a"]}, "a", ["data must be an object to have required keys, got string"]),
        ({"pattern": r"^\d+$"}, "123", []),
        ({"pattern": r"^\d+$"}, "12a", ["data does not match pattern '^\\\\d+$'"]),
        ({"pattern": "b"}, "abc", []),  # re.search: a match anywhere
        ({"pattern": "b"}, 5, ["data must be a string to match pattern, got integer"]),
    ],
)
def test_validator_rules(config: dict[str, Any], data: Any, errors: list[str]) -> None:
    assert DataValidator(config).errors(data) == errors


# ---------------------------------------------------------------------------------------------
# DataTransformer
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("transformation", "data", "expected"),
    [
        ("identity", {"a": [1]}, {"a": [1]}),
        ("upper", "abc", "ABC"),
        ("upper", {"Key": ["a", {"b": "c"}], "n": 1}, {"Key": ["A", {"b": "C"}], "n": 1}),
        ("lower", ["AbC", 3, None], ["abc", 3, None]),
        ("title", "hello world", "Hello World"),
        ("strip", {"x": "  pad  "}, {"x": "pad"}),
        ("reverse", "abc", "cba"),
        ("reverse", [1, 2, 3], [3, 2, 1]),
        ("length", "four", 4),
        ("length", {"a": 1, "b": 2}, 2),
        ("to_string", 12, "12"),
        ("to_string", [1, "a"], '[1,"a"]'),
        ("to_string", "as is", "as is"),
        ("to_number", " 42 ", 42),
        ("to_number", "2.5", 2.5),
        ("to_number", 7, 7),
        ("sort", [3, 1, 2], [1, 2, 3]),
    ],
)
async def test_transformer(transformation: str, data: Any, expected: Any) -> None:
    job = await run_flow(
        _through("DataTransformer", {"transformation": transformation}), [Entry("r", "input", {"data": data, "id": 7})]
    )
    assert job.status is JobStatus.COMPLETED, job.error
    assert results(job) == [{"data": expected, "id": 7}]  # other keys are kept


@pytest.mark.parametrize(
    ("transformation", "data", "message"),
    [
        ("to_number", "abc", "to_number: 'abc' is not a number"),
        ("to_number", "nan", "to_number: 'nan' is not a number"),
        ("to_number", None, "to_number needs a number or a numeric string, got null"),
        ("to_number", True, "to_number needs a number or a numeric string, got boolean"),
        ("reverse", 5, "reverse needs a string or a list, got integer"),
        ("length", 5, "length needs a string, list or object, got integer"),
        ("sort", [1, "a"], "sort: the list's elements cannot be compared"),
        ("sort", "cba", "sort needs a list, got string"),
    ],
)
async def test_transformer_bad_input_fails_the_job_with_a_clear_error(
    transformation: str, data: Any, message: str
) -> None:
    job = await run_flow(_through("DataTransformer", {"transformation": transformation}), entries("r", "input", [data]))
    assert job.status is JobStatus.FAILED
    assert job.error["type"] == "ValueError"
    assert job.error["message"].startswith(message)
    assert results(job) == []


async def test_transformer_error_emits_nothing_of_the_activation_and_continue_goes_on() -> None:
    flow = make_flow(
        {"r": ("DataTransformer", {"transformation": "to_number"}), "sink": "DataSink"},
        [("r.output", "sink.input")],
        error_handlers={"r": ErrorHandler(strategy="continue")},
    )
    # "1" runs alone (it starts the first activation); "2", "x", "3" form the second one.
    job = await run_flow(flow, entries("r", "input", ["1", "2", "x", "3"]))
    assert job.status is JobStatus.COMPLETED
    assert data_of(job) == [1]  # the failing activation emitted nothing, not a partial "2"
    assert job.routine_states["r"].error_count == 1


def test_transformer_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        DataTransformer({"transformation": "shout"})
    assert info.value.context["location"] == "config.transformation"


# ---------------------------------------------------------------------------------------------
# DataMultiplier
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("factor", "data", "expected"),
    [
        (2, 21, 42),
        (0.5, 3, 1.5),
        (3, "ab", "ababab"),
        (2, [1, None], [1, None, 1, None]),
        (0, "x", ""),
        (10, {"n": 2, "f": 0.5, "s": "keep", "b": True}, {"n": 20, "f": 5.0, "s": "keep", "b": True}),
        (-1, 5, -5),
    ],
)
async def test_multiplier(factor: float, data: Any, expected: Any) -> None:
    job = await run_flow(_through("DataMultiplier", {"factor": factor}), entries("r", "input", [data]))
    assert job.status is JobStatus.COMPLETED, job.error
    assert data_of(job) == [expected]


@pytest.mark.parametrize(
    ("factor", "data", "message"),
    [
        (1.5, "ab", "repeating a string needs an integer factor >= 0, but factor is 1.5"),
        (-2, [1], "repeating a list needs an integer factor >= 0, but factor is -2"),
        (2, None, "cannot multiply data of type null"),
        (2, True, "cannot multiply data of type boolean"),
    ],
)
async def test_multiplier_bad_input(factor: float, data: Any, message: str) -> None:
    job = await run_flow(_through("DataMultiplier", {"factor": factor}), entries("r", "input", [data]))
    assert job.status is JobStatus.FAILED
    assert (job.error["type"], job.error["message"]) == ("ValueError", message)


# ---------------------------------------------------------------------------------------------
# DataAggregator
# ---------------------------------------------------------------------------------------------
async def test_aggregator_pairs_items_in_order() -> None:
    flow = make_flow(
        {
            "left": ("DataSource", {"items": [1, 2, 3]}),
            "right": ("DataSource", {"items": ["a", "b", "c", "d"]}),
            "agg": "DataAggregator",
            "sink": "DataSink",
        },
        [("left.output", "agg.input1"), ("right.output", "agg.input2"), ("agg.output", "sink.input")],
    )
    job = await run_flow(flow, [Entry("left", "trigger"), Entry("right", "trigger")])
    assert job.status is JobStatus.COMPLETED
    assert data_of(job) == [[1, "a"], [2, "b"], [3, "c"]]
    first = results(job)[0]
    assert first["items"] == [{"data": 1, "index": 0}, {"data": "a", "index": 0}]
    # The unpaired "d" stays queued (all_slots_ready never fires on half a pair).
    assert [q.unconsumed for q in job.queue_status("agg") if q.slot == "input2"] == [1]


# ---------------------------------------------------------------------------------------------
# SlowProcessor
# ---------------------------------------------------------------------------------------------
async def test_slow_processor_waits_per_item_and_passes_items_on() -> None:
    started = anyio.current_time()
    job = await run_flow(_through("SlowProcessor", {"delay": 0.02}), entries("r", "input", ["a", "b", "c"]))
    elapsed = anyio.current_time() - started
    assert job.status is JobStatus.COMPLETED
    assert data_of(job) == ["a", "b", "c"]
    assert elapsed >= 0.06


async def test_slow_processor_is_cancelled_with_its_job(registry) -> None:
    async with Engine(registry=registry) as engine:
        job = await engine.start_job(_through("SlowProcessor", {"delay": 30}), entries=entries("r", "input", [1]))
        await anyio.sleep(0.01)
        with anyio.fail_after(1):
            job.cancel("test")
            assert await job.wait() is JobStatus.CANCELLED
    assert results(job) == []


@pytest.mark.parametrize("delay", [-0.1, 1e9, "1"])
def test_slow_processor_config_errors(delay: Any) -> None:
    with pytest.raises(ConfigError) as info:
        SlowProcessor({"delay": delay})
    assert info.value.context["location"] == "config.delay"


# ---------------------------------------------------------------------------------------------
# ErrorGenerator
# ---------------------------------------------------------------------------------------------
def _expected_failures(seed: int, rate: float, n: int) -> list[bool]:
    return [random.Random(f"{seed}:{i}").random() < rate for i in range(n)]


def _generator_flow(config: dict[str, Any], *, slow: float | None = None):
    routines: dict[str, Any] = {
        "src": ("DataSource", {"items": list(range(20))}),
        "gen": ("ErrorGenerator", config),
        "ok": "DataSink",
        "err": "DataSink",
    }
    connections = [("gen.output", "ok.input"), ("gen.error", "err.input")]
    if slow is None:
        connections.append(("src.output", "gen.input"))
    else:  # one item at a time, so concurrent jobs interleave their draws
        routines["slow"] = ("SlowProcessor", {"delay": slow})
        connections += [("src.output", "slow.input"), ("slow.output", "gen.input")]
    return make_flow(routines, connections)


async def test_error_generator_passes_items_by_default() -> None:
    job = await run_flow(_through("ErrorGenerator"), entries("r", "input", [1, 2]))
    assert job.status is JobStatus.COMPLETED
    assert data_of(job) == [1, 2]


async def test_error_generator_should_fail_raises() -> None:
    job = await run_flow(
        _through("ErrorGenerator", {"should_fail": True, "message": "kaput"}), entries("r", "input", [1])
    )
    assert job.status is JobStatus.FAILED
    assert (job.error["type"], job.error["message"]) == ("GeneratedError", "kaput")
    assert results(job) == []


async def test_error_generator_emit_mode_sends_failures_to_error() -> None:
    flow = _generator_flow({"error_rate": 0.5, "seed": 3, "on_fail": "emit", "message": "bad luck"})
    job = await run_flow(flow, [Entry("src", "trigger")])
    assert job.status is JobStatus.COMPLETED
    expected = _expected_failures(3, 0.5, 20)
    assert data_of(job, "err") == [i for i, fails in enumerate(expected) if fails]
    assert data_of(job, "ok") == [i for i, fails in enumerate(expected) if not fails]
    assert all(item["error"] == "bad luck" for item in results(job, "err"))
    assert 0 < len(results(job, "err")) < 20
    assert job.shared_data["__random__"]["gen"] == {"seed": 3, "draws": 20}


async def test_error_generator_is_deterministic_per_job_and_jobs_do_not_share_a_stream(registry) -> None:
    seeded = _generator_flow({"error_rate": 0.5, "seed": 11, "on_fail": "emit"}, slow=0.001)
    other = _generator_flow({"error_rate": 0.5, "seed": 12, "on_fail": "emit"}, slow=0.001)
    async with Engine(registry=registry) as engine:
        plan = engine.compile(seeded)
        before = dict(vars(plan.routines["gen"]))
        jobs = [
            await engine.start_job(plan, entries=[Entry("src", "trigger")], complete_when_idle=True),
            await engine.start_job(plan, entries=[Entry("src", "trigger")], complete_when_idle=True),
            await engine.start_job(other, entries=[Entry("src", "trigger")], complete_when_idle=True),
        ]
        for job in jobs:
            assert await job.wait(5) is JobStatus.COMPLETED
        assert vars(plan.routines["gen"]) == before  # the shared instance keeps no job state
    expected = [i for i, fails in enumerate(_expected_failures(11, 0.5, 20)) if fails]
    # The two jobs of seed 11 ran at the same time and drew in turns, yet each saw its own stream.
    assert data_of(jobs[0], "err") == expected
    assert data_of(jobs[1], "err") == expected
    assert data_of(jobs[2], "err") == [i for i, fails in enumerate(_expected_failures(12, 0.5, 20)) if fails]
    assert data_of(jobs[2], "err") != expected


async def test_error_generator_without_seed_still_has_a_stream_per_job(registry) -> None:
    flow = _generator_flow({"error_rate": 0.5, "on_fail": "emit"})
    async with Engine(registry=registry) as engine:
        plan = engine.compile(flow)
        jobs = [
            await engine.start_job(plan, entries=[Entry("src", "trigger")], complete_when_idle=True) for _ in range(2)
        ]
        for job in jobs:
            assert await job.wait(5) is JobStatus.COMPLETED
    seeds = [job.shared_data["__random__"]["gen"]["seed"] for job in jobs]
    assert seeds[0] != seeds[1]
    for job, seed in zip(jobs, seeds, strict=True):
        assert data_of(job, "err") == [i for i, fails in enumerate(_expected_failures(seed, 0.5, 20)) if fails]


async def test_error_generator_raise_mode_with_retry_draws_again() -> None:
    # seed 5 at rate 0.5: find how many draws fail before the first pass, to know the outcome.
    draws = _expected_failures(5, 0.5, 10)
    first_pass = draws.index(False)
    assert first_pass >= 1, "pick a seed whose first draw fails"
    flow = make_flow(
        {"r": ("ErrorGenerator", {"error_rate": 0.5, "seed": 5}), "sink": "DataSink"},
        [("r.output", "sink.input")],
        error_handlers={"r": ErrorHandler(strategy="retry", max_retries=5, retry_delay=0.001)},
    )
    job = await run_flow(flow, entries("r", "input", ["x"]))
    assert job.status is JobStatus.COMPLETED
    assert data_of(job) == ["x"]
    assert job.routine_states["r"].error_count == first_pass


@pytest.mark.parametrize(
    ("config", "location"),
    [
        ({"error_rate": 1.5}, "config.error_rate"),
        ({"error_rate": -0.1}, "config.error_rate"),
        ({"on_fail": "log"}, "config.on_fail"),
        ({"seed": "x"}, "config.seed"),
        ({"should_fail": "yes"}, "config.should_fail"),
    ],
)
def test_error_generator_config_errors(config: dict[str, Any], location: str) -> None:
    with pytest.raises(ConfigError) as info:
        ErrorGenerator(config)
    assert info.value.context["location"] == location


# ---------------------------------------------------------------------------------------------
# DataSink
# ---------------------------------------------------------------------------------------------
async def test_sink_keeps_every_item_whole_and_in_order() -> None:
    flow = make_flow({"sink": "DataSink"})
    values = [{"data": i, "tag": f"t{i}"} for i in range(5)]
    job = await run_flow(flow, [Entry("sink", "input", value) for value in values])
    assert job.status is JobStatus.COMPLETED
    assert results(job) == values
    assert job.state()["shared_data"]["results"]["sink"] == values


async def test_sink_over_max_items_raises_instead_of_dropping() -> None:
    flow = make_flow(
        {"src": ("DataSource", {"items": [1, 2, 3]}), "sink": ("DataSink", {"max_items": 2})},
        [("src.output", "sink.input")],
    )
    job = await run_flow(flow, [Entry("src", "trigger")])
    assert job.status is JobStatus.FAILED
    assert job.error["type"] == "SinkLimitExceeded"
    assert "max_items is 2" in job.error["message"]


async def test_sink_at_max_items_is_fine() -> None:
    flow = make_flow(
        {"src": ("DataSource", {"items": [1, 2]}), "sink": ("DataSink", {"max_items": 2})},
        [("src.output", "sink.input")],
    )
    job = await run_flow(flow, [Entry("src", "trigger")])
    assert job.status is JobStatus.COMPLETED
    assert data_of(job) == [1, 2]


# ---------------------------------------------------------------------------------------------
# Config validation, directly and through a flow
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("class_name", "config", "location"),
    [
        ("DataValidator", {"pattern": "(unclosed"}, "config.pattern"),
        ("DataValidator", {"min": 5, "max": 1}, "config.min"),
        ("DataValidator", {"min_length": 3, "max_length": 1}, "config.min_length"),
        ("DataValidator", {"min_length": -1}, "config.min_length"),
        ("DataValidator", {"type": "float"}, "config.type"),
        ("DataValidator", {"required_keys": "a"}, "config.required_keys"),
        ("DataValidator", {"nope": 1}, "config.nope"),
        ("DataMultiplier", {"factor": "2"}, "config.factor"),
        ("DataMultiplier", {"factor": float("inf")}, "config.factor"),
        ("DataSink", {"max_items": -1}, "config.max_items"),
        ("DataSource", {"items": 3}, "config.items"),
    ],
)
def test_bad_config_is_a_config_error_naming_the_field(
    registry, class_name: str, config: dict[str, Any], location: str
) -> None:
    cls = registry.get(class_name)
    with pytest.raises(ConfigError) as info:
        cls(config)
    assert info.value.context["location"] == location
    assert str(info.value).startswith(f"{location}: ")
    # Through a flow, the same problem is reported at the routine's config field.
    flow = make_flow({"r": (class_name, config)})
    with pytest.raises(FlowValidationError) as flow_info:
        compile_flow(flow, registry)
    assert [p.location for p in flow_info.value.problems] == [f"routines.r.{location}"]

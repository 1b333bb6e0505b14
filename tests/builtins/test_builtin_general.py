"""The general routines (routilux.builtins.general), run through real jobs."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from routilux.builtins.general import Batcher, Filter, Mapper, Router
from routilux.engine import (
    BatchSize,
    ConfigError,
    Engine,
    Entry,
    FlowValidationError,
    JobStatus,
    PolicySpec,
    compile_flow,
)
from tests.support.builtin_flows import data_of, entries, make_flow, results, run_flow

PEOPLE = [
    {"name": "ada", "age": 36, "tags": ["math"]},
    {"name": "bob", "age": 17},
    {"name": "cy", "age": 70, "tags": []},
]


def _source(items: list[Any]) -> tuple[str, dict[str, Any]]:
    return ("DataSource", {"items": items})


# ---------------------------------------------------------------------------------------------
# Mapper
# ---------------------------------------------------------------------------------------------
async def test_mapper_builds_new_items_from_paths() -> None:
    flow = make_flow(
        {
            "src": _source(PEOPLE),
            "map": ("Mapper", {"mapping": {"who": "data.name", "first_tag": "data.tags.0", "n": "index"}}),
            "sink": "DataSink",
        },
        [("src.output", "map.input"), ("map.output", "sink.input")],
    )
    job = await run_flow(flow, [Entry("src", "trigger")])
    assert job.status is JobStatus.COMPLETED
    assert results(job) == [
        {"who": "ada", "first_tag": "math", "n": 0},
        {"who": "bob", "first_tag": None, "n": 1},  # missing paths give None unless strict
        {"who": "cy", "first_tag": None, "n": 2},
    ]


async def test_mapper_keep_merges_into_the_item() -> None:
    flow = make_flow(
        {"map": ("Mapper", {"mapping": {"age": "data.age", "data": "data.name"}, "keep": True}), "sink": "DataSink"},
        [("map.output", "sink.input")],
    )
    job = await run_flow(flow, [Entry("map", "input", {"data": PEOPLE[0], "id": "x"})])
    assert results(job) == [{"data": "ada", "id": "x", "age": 36}]


async def test_mapper_strict_fails_on_a_missing_path_and_emits_nothing() -> None:
    flow = make_flow(
        {
            "src": _source(PEOPLE),
            "map": ("Mapper", {"mapping": {"tag": "data.tags.0"}, "strict": True}),
            "sink": "DataSink",
        },
        [("src.output", "map.input"), ("map.output", "sink.input")],
    )
    job = await run_flow(flow, [Entry("src", "trigger")])
    assert job.status is JobStatus.FAILED
    assert job.error["type"] == "MissingPathError"
    assert "path 'data.tags.0' (for key 'tag') is missing" in job.error["message"]


@pytest.mark.parametrize(
    ("config", "location"),
    [
        ({}, "config.mapping"),
        ({"mapping": {}}, "config.mapping"),
        ({"mapping": {"x": "data..y"}}, "config.mapping"),
        ({"mapping": {"x": 3}}, "config.mapping"),
        ({"mapping": {"x": "data"}, "strict": "no"}, "config.strict"),
    ],
)
def test_mapper_config_errors(config: dict[str, Any], location: str) -> None:
    with pytest.raises(ConfigError) as info:
        Mapper(config)
    assert info.value.context["location"].startswith(location)
    assert str(info.value).startswith(info.value.context["location"] + ": ")


# ---------------------------------------------------------------------------------------------
# Filter
# ---------------------------------------------------------------------------------------------
async def test_filter_splits_output_and_rejected() -> None:
    flow = make_flow(
        {
            "src": _source(PEOPLE),
            "adults": (
                "Filter",
                {"where": [{"path": "data.age", "op": "ge", "value": 18}, {"path": "data.tags", "op": "exists"}]},
            ),
            "ok": "DataSink",
            "no": "DataSink",
        },
        [("src.output", "adults.input"), ("adults.output", "ok.input"), ("adults.rejected", "no.input")],
    )
    job = await run_flow(flow, [Entry("src", "trigger")])
    assert job.status is JobStatus.COMPLETED
    assert [i["data"]["name"] for i in results(job, "ok")] == ["ada", "cy"]
    assert [i["data"]["name"] for i in results(job, "no")] == ["bob"]
    assert results(job, "ok")[0] == {"data": PEOPLE[0], "index": 0}  # unchanged


async def test_filter_takes_a_single_predicate_and_incomparable_values_are_rejected() -> None:
    flow = make_flow(
        {"f": ("Filter", {"where": {"path": "data", "op": "gt", "value": 2}}), "ok": "DataSink", "no": "DataSink"},
        [("f.output", "ok.input"), ("f.rejected", "no.input")],
    )
    job = await run_flow(flow, entries("f", "input", [1, 3, "text", None, 2.5]))
    assert job.status is JobStatus.COMPLETED
    assert data_of(job, "ok") == [3, 2.5]
    assert data_of(job, "no") == [1, "text", None]


def test_filter_with_an_empty_list_passes_everything() -> None:
    assert Filter({"where": []}).config.where == []


@pytest.mark.parametrize(
    ("config", "location"),
    [
        ({}, "config.where"),
        ({"where": {"path": "data", "op": "near", "value": 1}}, "config.where.op"),
        ({"where": [{"path": "data", "op": "eq"}]}, "config.where[0].value"),
        ({"where": [{"path": "data", "op": "truthy"}, {"path": "a.", "op": "truthy"}]}, "config.where[1].path"),
        ({"where": {"path": "data", "op": "in", "value": 3}}, "config.where.value"),
        ({"where": {"op": "truthy"}}, "config.where.path"),
    ],
)
def test_filter_config_errors(config: dict[str, Any], location: str) -> None:
    with pytest.raises(ConfigError) as info:
        Filter(config)
    assert info.value.context["location"] == location


# ---------------------------------------------------------------------------------------------
# Router
# ---------------------------------------------------------------------------------------------
ROUTER = {
    "routes": [
        {"event": "minor", "when": {"path": "data.age", "op": "lt", "value": 18}},
        {"event": "senior", "when": [{"path": "data.age", "op": "ge", "value": 65}]},
        {"event": "tagged", "when": {"path": "data.tags", "op": "truthy"}},
        {"event": "minor", "when": {"path": "data.name", "op": "eq", "value": "kid"}},
    ]
}


def test_router_declares_its_events_from_config() -> None:
    assert list(Router(ROUTER).event_names) == ["minor", "senior", "tagged", "default"]
    assert list(Router({**ROUTER, "default": None}).event_names) == ["minor", "senior", "tagged"]
    assert list(Router({**ROUTER, "default": "senior"}).event_names) == ["minor", "senior", "tagged"]
    assert list(Router().event_names) == ["default"]


async def test_router_first_matching_route_wins_and_the_rest_go_to_default() -> None:
    people = [
        *PEOPLE,
        {"name": "kid", "age": 30},
        {"name": "dee", "age": 40},
        {"name": "old", "age": 80, "tags": ["x"]},
    ]
    flow = make_flow(
        {
            "src": _source(people),
            "r": ("Router", ROUTER),
            **{n: "DataSink" for n in ("minor", "senior", "tagged", "other")},
        },
        [
            ("src.output", "r.input"),
            ("r.minor", "minor.input"),
            ("r.senior", "senior.input"),
            ("r.tagged", "tagged.input"),
            ("r.default", "other.input"),
        ],
    )
    job = await run_flow(flow, [Entry("src", "trigger")])
    assert job.status is JobStatus.COMPLETED

    def names(sink: str) -> list[str]:
        return [i["data"]["name"] for i in results(job, sink)]

    assert names("minor") == ["bob", "kid"]
    assert names("senior") == ["cy", "old"]  # "old" is also tagged: the first route wins
    assert names("tagged") == ["ada"]
    assert names("other") == ["dee"]


async def test_router_without_default_fails_on_an_unrouted_item_and_emits_nothing_of_it() -> None:
    flow = make_flow(
        {"r": ("Router", {**ROUTER, "default": None}), "minor": "DataSink"},
        [("r.minor", "minor.input")],
    )
    # "bob" runs alone (the first entry starts an activation); "kim" and "dee" form the second.
    people = [{"name": "bob", "age": 17}, {"name": "kim", "age": 10}, {"name": "dee", "age": 40}]
    job = await run_flow(flow, entries("r", "input", people))
    assert job.status is JobStatus.FAILED
    assert job.error["type"] == "NoRouteError"
    assert "no route matches item" in job.error["message"] and "'dee'" in job.error["message"]
    assert [i["data"]["name"] for i in results(job, "minor")] == ["bob"]  # not "kim": nothing half sent


async def test_router_connection_to_an_undeclared_event_is_a_flow_error(registry) -> None:
    flow = make_flow({"r": ("Router", {**ROUTER, "default": None}), "sink": "DataSink"}, [("r.default", "sink.input")])
    with pytest.raises(FlowValidationError) as info:
        compile_flow(flow, registry)
    assert [p.location for p in info.value.problems] == ["connections[0].from"]
    assert "Its events: minor, senior, tagged" in info.value.problems[0].message


@pytest.mark.parametrize(
    ("config", "location"),
    [
        ({"routes": [{"event": "not-an-identifier"}]}, "config.routes[0].event"),
        ({"routes": [{"event": "ok"}, {"event": "class"}]}, "config.routes[1].event"),
        ({"routes": [{"when": {"path": "a", "op": "truthy"}}]}, "config.routes[0].event"),
        ({"routes": [{"event": "a", "when": {"path": "a", "op": "lt"}}]}, "config.routes[0].when.value"),
        ({"default": "has space"}, "config.default"),
        ({"default": None}, "config.routes"),
        ({"routes": {"event": "a"}}, "config.routes"),
    ],
)
def test_router_config_errors(config: dict[str, Any], location: str) -> None:
    with pytest.raises(ConfigError) as info:
        Router(config)
    assert info.value.context["location"] == location


# ---------------------------------------------------------------------------------------------
# Batcher
# ---------------------------------------------------------------------------------------------
def test_batcher_policy_comes_from_its_config(registry) -> None:
    assert Batcher({"size": 3}).policy == BatchSize(3)
    assert Batcher().policy == BatchSize(10)
    plan = compile_flow(make_flow({"b": ("Batcher", {"size": 4})}), registry)
    assert plan.policies["b"] == BatchSize(4)
    # A DSL policy block still wins.
    plan = compile_flow(
        make_flow({"b": ("Batcher", {"size": 4})}, policies={"b": PolicySpec(type="batch_size", n=2)}), registry
    )
    assert plan.policies["b"] == BatchSize(2)
    # The catalogue shows the default.
    assert registry.interface("Batcher").policy == {"type": "batch_size", "n": 10}


async def test_batcher_emits_full_batches_and_flushes_leftovers_when_the_job_drains() -> None:
    flow = make_flow(
        {"src": _source(list("abcdefg")), "b": ("Batcher", {"size": 3}), "sink": "DataSink"},
        [("src.output", "b.input"), ("b.output", "sink.input")],
    )
    job = await run_flow(flow, [Entry("src", "trigger")])
    assert job.status is JobStatus.COMPLETED
    assert data_of(job) == [["a", "b", "c"], ["d", "e", "f"], ["g"]]
    assert [i["count"] for i in results(job)] == [3, 3, 1]
    assert results(job)[2]["items"] == [{"data": "g", "index": 6}]


@pytest.mark.parametrize("size", [0, -3, 2.5, "3"])
def test_batcher_config_errors(size: Any) -> None:
    with pytest.raises(ConfigError) as info:
        Batcher({"size": size})
    assert info.value.context["location"] == "config.size"


# ---------------------------------------------------------------------------------------------
# Delay
# ---------------------------------------------------------------------------------------------
async def test_delay_waits_once_per_activation_and_passes_items_on() -> None:
    flow = make_flow(
        {"src": _source([1, 2, 3]), "d": ("Delay", {"seconds": 0.03}), "sink": "DataSink"},
        [("src.output", "d.input"), ("d.output", "sink.input")],
    )
    started = anyio.current_time()
    job = await run_flow(flow, [Entry("src", "trigger")])
    elapsed = anyio.current_time() - started
    assert job.status is JobStatus.COMPLETED
    assert data_of(job) == [1, 2, 3]
    assert 0.03 <= elapsed < 0.5


async def test_delay_is_cancelled_with_its_job(registry) -> None:
    async with Engine(registry=registry) as engine:
        job = await engine.start_job(make_flow({"d": ("Delay", {"seconds": 30})}), entries=[Entry("d", "input", 1)])
        await anyio.sleep(0.01)
        with anyio.fail_after(1):
            job.cancel()
            assert await job.wait() is JobStatus.CANCELLED


@pytest.mark.parametrize("seconds", [-1, 1e6, "soon"])
def test_delay_config_errors(seconds: Any) -> None:
    from routilux.builtins.general import Delay

    with pytest.raises(ConfigError) as info:
        Delay({"seconds": seconds})
    assert info.value.context["location"] == "config.seconds"

"""The builtins together: the catalogue, and DSL flows run end to end."""

from __future__ import annotations

import msgspec
import pytest

from routilux.builtins import data, general, register_builtins
from routilux.engine import Engine, Entry, JobStatus, Registry, compile_flow, default_registry
from routilux.engine.dsl import dump_flow, load_flow
from tests.support.builtin_flows import data_of, results

NAMES = [
    "DataSource",
    "DataValidator",
    "DataTransformer",
    "DataMultiplier",
    "DataAggregator",
    "SlowProcessor",
    "ErrorGenerator",
    "DataSink",
    "Mapper",
    "Filter",
    "Router",
    "Batcher",
    "Delay",
]


def test_every_builtin_is_registered(registry: Registry) -> None:
    assert sorted(registry.names()) == sorted(NAMES)
    assert [cls.__name__ for cls in (*data.ROUTINES, *general.ROUTINES)] == NAMES
    assert all(name in default_registry() for name in NAMES)
    register_builtins(registry)  # registering again is a no-op


@pytest.mark.parametrize("name", NAMES)
def test_catalogue_entry(registry: Registry, name: str) -> None:
    info = registry.interface(name)
    assert info.description and "\n" not in info.description and info.description.endswith(".")
    expected_category = "data" if registry.get(name) in data.ROUTINES else ("control", "transform")
    assert info.category in expected_category
    assert info.config_schema.get("type") == "object"
    assert info.is_async
    msgspec.json.encode(info)  # the API can serve it as is


def test_routines_keep_no_per_job_state_beyond_their_config() -> None:
    """Instance attributes are the base's ports and config, plus values derived from config."""
    allowed = {"config", "_slots", "_events", "_pattern", "_rules", "policy"}
    for cls in (*data.ROUTINES, *general.ROUTINES):
        routine = cls(
            {"mapping": {"a": "data"}} if cls is general.Mapper else {"where": []} if cls is general.Filter else None
        )
        assert set(vars(routine)) <= allowed, cls


ETL = """
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


async def test_design_dsl_example_runs_end_to_end(registry: Registry) -> None:
    flow = load_flow(ETL)
    assert flow.execution.timeout == 300
    async with Engine(registry=registry) as engine:
        job = await engine.start_job(flow, entries=[Entry("source", "trigger")], complete_when_idle=True)
        assert await job.wait(5) is JobStatus.COMPLETED
    assert results(job) == [{"data": "a", "index": 0}, {"data": "b", "index": 1}, {"data": "c", "index": 2}]


PIPELINE = """
flow_id: orders
routines:
  source:
    class: DataSource
    config:
      items:
        - {id: 1, customer: {name: ada}, total: 120.5, lines: [x, y]}
        - {id: 2, customer: {name: bob}, total: 15}
        - {id: 3, customer: {}, total: -4}
        - {id: 4, customer: {name: cy}, total: 990, lines: [z]}
        - {id: 5, customer: {}, total: 500, lines: [w]}
        - 7
  check:
    class: DataValidator
    config: {type: object, required_keys: [id, total]}
  route:
    class: Router
    config:
      routes:
        - event: refund
          when: {path: data.total, op: lt, value: 0}
        - event: big
          when: [{path: data.total, op: ge, value: 100}, {path: data.lines, op: exists}]
      default: small
  shape:
    class: Mapper
    config:
      mapping: {data: data.id, who: data.customer.name, first_line: data.lines.0}
  named:
    class: Filter
    config:
      where: {path: who, op: truthy}
  batch:
    class: Batcher
    config: {size: 2}
  pause:
    class: Delay
    config: {seconds: 0.001}
  batches: {class: DataSink}
  small: {class: DataSink}
  refunds: {class: DataSink}
  invalid: {class: DataSink}
connections:
  - {from: source.output, to: check.input}
  - {from: check.valid, to: route.input}
  - {from: check.invalid, to: invalid.input}
  - {from: route.big, to: shape.input}
  - {from: route.small, to: small.input}
  - {from: route.refund, to: refunds.input}
  - {from: shape.output, to: named.input}
  - {from: named.output, to: pause.input}
  - {from: pause.output, to: batch.input}
  - {from: batch.output, to: batches.input}
"""


async def test_a_pipeline_of_builtins_from_yaml(registry: Registry) -> None:
    flow = load_flow(PIPELINE)
    assert load_flow(dump_flow(flow)) == flow  # the configs round-trip through the DSL
    assert load_flow(dump_flow(flow, "json")) == flow
    compile_flow(flow, registry)
    async with Engine(registry=registry) as engine:
        job = await engine.start_job(flow, entries=[Entry("source", "trigger")], complete_when_idle=True)
        assert await job.wait(5) is JobStatus.COMPLETED, job.error
    assert [i["data"]["id"] for i in results(job, "small")] == [2]
    assert [i["data"]["id"] for i in results(job, "refunds")] == [3]
    assert data_of(job, "invalid") == [7]
    assert results(job, "invalid")[0]["errors"] == [
        "data must be of type object, got integer",
        "data must be an object to have required keys, got integer",
    ]
    # Order 5 is big but has no customer name: the Filter rejects it.
    assert data_of(job, "batches") == [[1, 4]]
    assert results(job, "batches")[0]["items"] == [
        {"data": 1, "who": "ada", "first_line": "x"},
        {"data": 4, "who": "cy", "first_line": "z"},
    ]
    assert results(job, "batches")[0]["count"] == 2

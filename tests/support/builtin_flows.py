"""Helpers for the builtin routine tests: build flows tersely and run them as real jobs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from routilux.builtins import register_builtins
from routilux.engine import Connection, Engine, Entry, ErrorHandler, Flow, Job, PolicySpec, Registry, RoutineSpec


def builtin_registry() -> Registry:
    registry = Registry()
    register_builtins(registry)
    return registry


def make_flow(
    routines: Mapping[str, str | tuple[str, dict[str, Any]]],
    connections: Iterable[tuple[str, str]] = (),
    *,
    flow_id: str = "test",
    error_handlers: Mapping[str, ErrorHandler] | None = None,
    policies: Mapping[str, PolicySpec] | None = None,
) -> Flow:
    """``{"rid": "Class"}`` or ``{"rid": ("Class", config)}`` plus ``[("a.out", "b.in")]``."""
    error_handlers = error_handlers or {}
    policies = policies or {}
    specs = {}
    for rid, value in routines.items():
        class_name, config = (value, {}) if isinstance(value, str) else value
        specs[rid] = RoutineSpec(
            class_name=class_name,
            config=config,
            error_handler=error_handlers.get(rid),
            policy=policies.get(rid),
        )
    return Flow(
        flow_id=flow_id,
        routines=specs,
        connections=[Connection(source, target) for source, target in connections],
    )


def entries(routine_id: str, slot: str, values: Iterable[Any]) -> list[Entry]:
    """One entry per value, each posted as the item ``{"data": value}`` (dicts included)."""
    return [Entry(routine_id, slot, {"data": value}) for value in values]


async def run_flow(
    flow: Flow,
    start: Iterable[Entry],
    *,
    registry: Registry | None = None,
    timeout: float = 5.0,
) -> Job:
    """Run one job of ``flow`` with ``complete_when_idle`` and return it once it has ended."""
    async with Engine(registry=registry or builtin_registry()) as engine:
        job = await engine.start_job(flow, entries=list(start), complete_when_idle=True)
        await job.wait(timeout)
        assert job.is_terminal, f"job did not end within {timeout}s: {job.status}"
        return job


def results(job: Job, sink: str = "sink") -> list[dict[str, Any]]:
    """What DataSink ``sink`` kept."""
    return job.shared_data.get("results", {}).get(sink, [])


def data_of(job: Job, sink: str = "sink") -> list[Any]:
    return [item.get("data") for item in results(job, sink)]

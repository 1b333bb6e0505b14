"""Small routines the engine tests are written with; each does one obvious thing."""

from __future__ import annotations

from typing import Any

import anyio
import msgspec

from routilux.engine import Connection, Flow, Registry, Routine, RoutineSpec


class Relay(Routine):
    """Async: passes every item on, in order."""

    slots = ["input"]
    events = ["output"]

    async def logic(self, ctx: Any, input: list[dict]) -> None:
        for item in input:
            await ctx.emit("output", **item)


class SyncRelay(Routine):
    """Sync (worker thread): passes every item on, in order."""

    slots = ["input"]
    events = ["output"]

    def logic(self, ctx: Any, input: list[dict]) -> None:
        for item in input:
            ctx.emit("output", **item)


class Collect(Routine):
    """Keeps every activation's items in ``state["batches"][routine_id]``."""

    slots = ["input"]

    async def logic(self, ctx: Any, input: list[dict]) -> None:
        ctx.state.setdefault("batches", {}).setdefault(ctx.routine_id, []).append([i.get("data") for i in input])


class Pair(Routine):
    """Two inputs; records what each activation took from each slot."""

    slots = ["left", "right"]
    events = ["output"]

    async def logic(self, ctx: Any, left: list[dict], right: list[dict]) -> None:
        ctx.state.setdefault("pairs", []).append(([i["data"] for i in left], [i["data"] for i in right]))


class FlakyConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    failures: int = 1


class Flaky(Routine):
    """Raises on its first ``failures`` attempts of every activation, then passes items on."""

    slots = ["input"]
    events = ["output"]
    Config = FlakyConfig

    async def logic(self, ctx: Any, input: list[dict]) -> None:
        attempts = ctx.state.setdefault("attempts", [])
        attempts.append((ctx.attempt, anyio.current_time()))
        if ctx.attempt <= ctx.config.failures:
            raise ValueError(f"flaky failure {ctx.attempt}")
        for item in input:
            await ctx.emit("output", **item)


class Boom(Routine):
    """Always raises."""

    slots = ["input"]
    events = ["output"]

    async def logic(self, ctx: Any, input: list[dict]) -> None:
        raise RuntimeError("boom")


class SlowConfig(msgspec.Struct, frozen=True):
    delay: float = 0.05


class Slow(Routine):
    """Async: sleeps ``delay`` per activation, records start/end, passes items on."""

    slots = ["input"]
    events = ["output"]
    Config = SlowConfig

    async def logic(self, ctx: Any, input: list[dict]) -> None:
        ctx.state.setdefault("slow_started", []).append([i["data"] for i in input])
        try:
            await anyio.sleep(ctx.config.delay)
        except BaseException:
            ctx.state["slow_cancelled"] = True
            raise
        ctx.state.setdefault("slow_done", []).append([i["data"] for i in input])
        for item in input:
            await ctx.emit("output", **item)


class SyncSlow(Routine):
    """Sync: blocks its worker thread for ``delay`` then tries to emit."""

    slots = ["input"]
    events = ["output"]
    Config = SlowConfig

    def logic(self, ctx: Any, input: list[dict]) -> None:
        import time

        ctx.state["sync_started"] = True
        time.sleep(ctx.config.delay)
        ctx.state["sync_finished_sleep"] = True
        for item in input:
            ctx.emit("output", **item)
        ctx.state["sync_emitted"] = True


class Chatty(Routine):
    """Sync: logs and reports progress around each emit (to check event order)."""

    slots = ["input"]
    events = ["output"]

    def logic(self, ctx: Any, input: list[dict]) -> None:
        for n, item in enumerate(input):
            ctx.log("before", n=n)
            ctx.progress((n + 1) / len(input), "step")
            ctx.emit("output", **item)


class Loop(Routine):
    """Emits to its own input (cycles are allowed) until ``data`` reaches 0."""

    slots = ["input"]
    events = ["output", "done"]

    async def logic(self, ctx: Any, input: list[dict]) -> None:
        for item in input:
            n = item["data"]
            if n > 0:
                await ctx.emit("output", data=n - 1)
            else:
                await ctx.emit("done", data=n)


ALL = [Relay, SyncRelay, Collect, Pair, Flaky, Boom, Slow, SyncSlow, Chatty, Loop]


def make_registry() -> Registry:
    registry = Registry()
    for cls in ALL:
        registry.register(cls)
    return registry


def chain(flow_id: str, *classes: str, configs: dict[str, dict] | None = None, **spec_extra: Any) -> Flow:
    """A linear flow r0 -> r1 -> ... with routines of the given classes."""
    configs = configs or {}
    routines = {
        f"r{i}": RoutineSpec(class_name=name, config=configs.get(f"r{i}", {}), **spec_extra.get(f"r{i}", {}))
        for i, name in enumerate(classes)
    }
    connections = [Connection(f"r{i}.output", f"r{i + 1}.input") for i in range(len(classes) - 1)]
    return Flow(flow_id=flow_id, routines=routines, connections=connections)

"""An agent-style flow's routines: plan sub-questions, ask a (mocked) search service about all of
them at once, then write an answer from what came back.

Register them with ``ROUTILUX_ROUTINE_MODULES=agent_routines`` (this folder on ``PYTHONPATH``)
and run ``agent.yaml``::

    PYTHONPATH=examples/agent ROUTILUX_ROUTINE_MODULES=agent_routines \
        routilux run examples/agent/agent.yaml --data '"event-driven workflows"'

Everything here is ``async def``: the routines run on the event loop, and waiting on the service
holds no thread, so ten slow calls in flight cost what one does.
"""

from __future__ import annotations

from typing import Any

import anyio
import msgspec

from routilux import Context, Routine

Item = dict[str, Any]


async def mock_search(query: str, latency: float) -> str:
    """Stands in for a remote API (an LLM, a search engine): slow, and fine to call concurrently."""
    await anyio.sleep(latency)
    return f"notes on {query}"


class PlannerConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    aspects: list[str] = msgspec.field(default_factory=lambda: ["definition", "history", "use cases", "pitfalls"])


class Planner(Routine):
    """Splits each question into one sub-question per aspect, so they can be researched in parallel."""

    slots = ("question",)
    events = ("task",)
    Config = PlannerConfig
    config: PlannerConfig

    async def logic(self, ctx: Context, question: list[Item]) -> None:
        for item in question:
            topic = str(item.get("data"))
            aspects = self.config.aspects
            for aspect in aspects:
                await ctx.emit("task", data=f"{topic}: {aspect}", topic=topic, total=len(aspects))


class ResearcherConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    latency: float = 0.3


class Researcher(Routine):
    """Calls the service for every task it was given at once, in one task group.

    ``max_concurrency`` lets later tasks start while earlier calls are still out, too. The number
    of calls in flight is tracked in the job's state (``ctx.state``), never on the instance, which
    every job of the flow shares.
    """

    slots = ("task",)
    events = ("finding",)
    Config = ResearcherConfig
    config: ResearcherConfig
    max_concurrency = 8

    async def logic(self, ctx: Context, task: list[Item]) -> None:
        stats: dict[str, int] = ctx.state.setdefault("service", {"calls": 0, "in_flight": 0, "max_in_flight": 0})
        findings: list[Item] = []

        async def ask(item: Item) -> None:
            stats["calls"] += 1
            stats["in_flight"] += 1
            stats["max_in_flight"] = max(stats["max_in_flight"], stats["in_flight"])
            try:
                answer = await mock_search(item["data"], self.config.latency)
            finally:
                stats["in_flight"] -= 1
            findings.append({**item, "data": answer})

        async with anyio.create_task_group() as tg:
            for item in task:
                tg.start_soon(ask, item)
        for finding in findings:
            await ctx.emit("finding", **finding)


class Writer(Routine):
    """Collects the findings per topic in job state and writes the answer once all are in."""

    slots = ("finding",)
    events = ("answer",)

    async def logic(self, ctx: Context, finding: list[Item]) -> None:
        pending: dict[str, list[str]] = ctx.state.setdefault("findings", {})
        for item in finding:
            notes = pending.setdefault(item["topic"], [])
            notes.append(item["data"])
            if len(notes) == item["total"]:
                await ctx.emit("answer", data=f"{item['topic']}: " + "; ".join(sorted(notes)))

"""A routine that sets its policy from its config (what the Batcher builtin does)."""

from typing import Any

import msgspec

from routilux.engine import BatchSize, Registry, Routine


class BatchConfig(msgspec.Struct, frozen=True):
    size: int = 2


class ConfigBatch(Routine):
    slots = ["input"]
    Config = BatchConfig

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self.policy = BatchSize(self.config.size)

    async def logic(self, ctx: Any, input: list[dict]) -> None:
        pass


def make_batching_registry() -> Registry:
    registry = Registry()
    registry.register(ConfigBatch)
    return registry

"""Routines only the WebSocket tests need (loaded with ``ROUTILUX_ROUTINE_MODULES``)."""

from __future__ import annotations

from typing import Any

import anyio.lowlevel
import msgspec

from routilux.engine import Routine


class FirehoseConfig(msgspec.Struct, frozen=True):
    count: int = 1000
    size: int = 3000


class Firehose(Routine):
    """Per input item, emits ``count`` events of about ``size`` bytes each, one per loop turn
    (so the stream is steady, never a burst), on an ``output`` that may go nowhere."""

    slots = ("input",)
    events = ("output",)
    Config = FirehoseConfig

    async def logic(self, ctx: Any, input: list[dict]) -> None:
        pad = "x" * ctx.config.size
        for _item in input:
            for n in range(ctx.config.count):
                await ctx.emit("output", n=n, pad=pad)
                await anyio.lowlevel.checkpoint()

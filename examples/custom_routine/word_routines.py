"""A custom routine written in Python, registered with ``ROUTILUX_ROUTINE_MODULES``.

Serve it (this folder on ``PYTHONPATH``, the module named in the variable)::

    PYTHONPATH=examples/custom_routine ROUTILUX_ROUTINE_MODULES=word_routines routilux serve
    curl -s localhost:20555/api/factory/objects/WordCount     # it is in the catalogue

then post ``wordcount.yaml`` as a flow. Every ``Routine`` subclass defined in a listed module is
registered under its class name (a module may define ``register(registry)`` to choose instead).
Flows name it as ``class: WordCount``; a flow can never import code by path.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec

from routilux import Routine, ThreadContext


class WordCountConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    #: How many of the most common words to emit.
    top: int = 3
    #: Words shorter than this are ignored.
    min_length: int = 1


class WordCount(Routine):
    """Counts the words of each text and emits the most common ones.

    ``logic`` is a plain ``def``: it runs in a worker thread (CPU work never blocks the event
    loop), and ``ctx.emit`` is then a plain call.
    """

    slots = ("text",)
    events = ("counts",)
    Config = WordCountConfig
    config: WordCountConfig

    def logic(self, ctx: ThreadContext, text: list[dict[str, Any]]) -> None:
        for item in text:
            words = [w.strip(".,;:!?\"'()").lower() for w in str(item.get("data", "")).split()]
            counts = Counter(w for w in words if len(w) >= self.config.min_length)
            ctx.emit("counts", data=dict(counts.most_common(self.config.top)))

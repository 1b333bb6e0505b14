"""Debugger tests run with the cyclic garbage collector paused.

The expression time limit is wall-clock (``time.perf_counter``), so a full collection that starts
during an evaluation counts against it: in this test process gen-2 collections take 60-250 ms,
and a trivial expression like ``[0] * 3`` then fails with a ``limit`` error (a condition that
errs counts as not hit, so a breakpoint is missed). That bug has its own deterministic tests
(``test_expressions.py::test_time_limit_does_not_count_*``); every other test here is about
semantics, so collections are kept out of the way. Remove this once the limit measures only the
evaluation itself.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _no_collection_during_a_test() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()

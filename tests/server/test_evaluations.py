"""``evaluate`` requests run a few at a time: one past the limit is refused at once (503
``evaluations_busy`` at the edge), never queued; a slot frees as soon as its evaluation ends,
refused or not; and each answers within its wall-clock bound."""

from __future__ import annotations

import time

import anyio
import pytest

from routilux.debug.expressions import ExpressionError
from routilux.server.errors import Unavailable
from routilux.server.evaluations import Evaluations

HEAVY = " + ".join(["sum(xs * 33000)"] * 12)


async def test_one_past_the_limit_is_refused_at_once_and_slots_free_again() -> None:
    evaluations = Evaluations(2)
    outcomes: list[str] = []

    async def one() -> None:
        try:
            await evaluations.evaluate(HEAVY, {"xs": [1, 2, 3]})
            outcomes.append("ran")
        except ExpressionError:
            outcomes.append("ran")  # stopped by its own bound: it ran
        except Unavailable as exc:
            assert exc.code == "evaluations_busy" and exc.retry_after == 1
            outcomes.append("refused")

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for _ in range(6):
                tg.start_soon(one)
    assert sorted(outcomes) == ["ran", "ran", "refused", "refused", "refused", "refused"]
    assert evaluations.refused == 4
    assert await evaluations.evaluate("1 + 1", {}) == 2  # both slots are free again
    with pytest.raises(ExpressionError):
        await evaluations.evaluate("1 +", {})
    assert await evaluations.evaluate("2 * 2", {}) == 4  # a refusal frees its slot too


async def test_an_evaluation_answers_within_its_wall_bound() -> None:
    evaluations = Evaluations(1, wall_limit=0.002)
    started = time.perf_counter()
    with pytest.raises(ExpressionError) as caught:
        await evaluations.evaluate(" + ".join(["sum(xs * 33000)"] * 16), {"xs": [1, 2, 3]})
    assert caught.value.kind == "limit" and "took more than 2 ms" in caught.value.message
    assert time.perf_counter() - started < 0.5

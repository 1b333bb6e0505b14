"""Many ``evaluate`` callers at once, from a process of their own (``python -m
tests.support.evaluate_burst URL JOB_ID ROUNDS AT_ONCE``): the client's own CPU must not be
counted in the latency of another client the test or bench measures meanwhile.

Prints one JSON line: ``[[status, error code, seconds], ...]`` for every request.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import httpx

#: Legal but as heavy as the bounds allow: twelve lists of 99,000 items built and summed.
HEAVY = " + ".join(["sum(data.items * 33000)"] * 12)
#: Refused or stopped by a bound once running (not when compiled), and one that is legal but heavy.
RUNNING_HOSTILE = [HEAVY, "data.value ** 99999", "data.items * 100000",
                   "(data.value ** 999) ** 64 * (data.value ** 999) ** 64", "sum([data.items] * 1000, [])"]
VARIABLES = {"data": {"value": 2, "items": [1, 2, 3], "name": "abc"}}


async def burst(url: str, job_id: str, rounds: int, at_once: int) -> list[tuple[int, str, float]]:
    answers: list[tuple[int, str, float]] = []
    limits = httpx.Limits(max_connections=at_once, max_keepalive_connections=at_once)
    async with httpx.AsyncClient(base_url=url, timeout=10, limits=limits) as http:

        async def one(expression: str) -> None:
            started = time.perf_counter()
            response = await http.post(f"/api/debug/{job_id}/evaluate",
                                       json={"expression": expression, "variables": VARIABLES})
            elapsed = time.perf_counter() - started
            detail = response.json().get("detail", {}) if response.status_code != 200 else {}
            answers.append((response.status_code, detail.get("error", ""), elapsed))

        await one("1 + 1")  # connect first
        answers.clear()
        for _ in range(rounds):
            await asyncio.gather(*(one(RUNNING_HOSTILE[n % len(RUNNING_HOSTILE)]) for n in range(at_once)))
    return answers


if __name__ == "__main__":
    target, job, n_rounds, n_at_once = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    print(json.dumps(asyncio.run(burst(target, job, n_rounds, n_at_once))))

"""Measuring in the cluster bench: CPU by party (servers, redis, clients, the rest) and retries while
other work on the machine disturbs a measurement.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from tests.support.processes import machine_busy_seconds

from bench.cluster.nodes import Node
from bench.cluster.redis_server import Redis
from bench.cluster.settings import Settings
from bench.report import (
    wait_quiet,
)


# =============================================================================================
# Measuring: quiet machine, CPU, retries
# =============================================================================================
@dataclass
class Cpu:
    """CPU seconds used during one measurement: servers, redis-server, clients, everything else."""

    server: float = 0.0
    redis: float = 0.0
    client: float = 0.0
    other: float = 0.0
    seconds: float = 0.0

    def cores(self, what: str) -> float:
        return getattr(self, what) / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, float]:
        return {f"{k}_cpu_cores": round(self.cores(k), 3) for k in ("server", "redis", "client", "other")}


class CpuMeter:
    """Started on creation; :meth:`result` is the CPU used since."""

    def __init__(self, servers: list[Node], redis: Redis | None) -> None:
        self.servers = servers
        self.redis = redis
        self.s0 = sum(s.cpu_seconds() for s in self.servers)
        self.r0 = self.redis.cpu_seconds() if self.redis else 0.0
        self.c0 = time.process_time()
        self.m0 = machine_busy_seconds()
        self.t0 = time.perf_counter()

    def result(self, client_cpu: float | None = None, seconds: float | None = None) -> Cpu:
        """``client_cpu``: the client processes' CPU if not this process's."""
        cpu = Cpu(server=sum(s.cpu_seconds() for s in self.servers) - self.s0,
                  redis=(self.redis.cpu_seconds() if self.redis else 0.0) - self.r0,
                  client=client_cpu if client_cpu is not None else time.process_time() - self.c0,
                  seconds=seconds if seconds is not None else time.perf_counter() - self.t0)
        busy = machine_busy_seconds() - self.m0
        cpu.other = max(0.0, busy - cpu.server - cpu.redis - cpu.client)
        return cpu


def _noisy(cpu: Cpu, settings: Settings) -> bool:
    return cpu.seconds > 0 and cpu.other / cpu.seconds > settings.max_other


def _measured(settings: Settings, run: Any) -> Any:
    """``run()`` after waiting for a quiet machine; again (up to ``attempts``) while other work
    took more than ``max_other`` of a core during it. ``run`` returns an object with ``.cpu``."""
    tries = 0
    while True:
        if settings.quiet_wait > 0:
            wait_quiet(settings.quiet_wait)
        result = run()
        tries += 1
        if settings.quiet_wait <= 0 or tries >= settings.attempts or not _noisy(result.cpu, settings):
            result.attempts = tries
            return result



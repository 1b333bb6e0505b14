"""The cluster bench's settings: sizes of every scenario, and how hard to wait for a quiet machine."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Settings:
    jobs: int = 10_000
    connections: int = 32
    clients: int = 50
    rate: float = 1_000.0
    seconds: float = 10.0
    capacity_rate: float = 4_000.0  # 0: no capacity rows
    capacity_seconds: float = 4.0
    hop_rate: float = 500.0
    hop_seconds: float = 5.0
    hop_capacity_rate: float = 5_000.0  # 0: no second hop row
    hop_capacity_seconds: float = 3.0
    relay_rate: float = 2_500.0  # issue 17: the idle node while the owner runs this many events/s
    relay_seconds: float = 5.0
    client_procs: int = 1
    client: str = "raw"
    only: str = "post,fanout,hop,relay"
    #: Shared machine: wait up to this long for an idle machine before each measurement, and
    #: measure again (up to ``attempts``) when other work took more than ``max_other`` of a core.
    quiet_wait: float = 30.0
    attempts: int = 3
    max_other: float = 0.15

    @classmethod
    def quick(cls) -> Settings:
        return cls(jobs=1_000, clients=20, rate=300.0, seconds=3.0, capacity_rate=0.0, hop_rate=300.0,
                   hop_seconds=2.0, hop_capacity_rate=0.0, relay_rate=2_500.0, relay_seconds=2.0, quiet_wait=0.0)

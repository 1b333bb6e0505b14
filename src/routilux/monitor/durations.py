"""Duration statistics in constant memory: count, total, min, max and quantiles.

Durations land in logarithmic buckets, each 2^(1/8) (about 9%) wider than the last, kept sparse
(only buckets that were hit exist). A quantile is read as the geometric middle of its bucket, so it
is within about 4.5% of the true value, whatever the number of samples; two sets merge by adding
their buckets, which is how a flow's figures are the sum of its jobs'. Prometheus histograms need
fixed bounds instead: :data:`PROMETHEUS_BOUNDS` with cumulative counts kept alongside when asked.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from typing import Any, Final

_PER_OCTAVE: Final[int] = 8
_SCALE: Final[float] = _PER_OCTAVE / math.log(2)
_FLOOR: Final[float] = 1e-7  # shorter durations share the first bucket
#: the seconds at which activation-duration histograms are cut for Prometheus
PROMETHEUS_BOUNDS: Final[tuple[float, ...]] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)


def _middle(bucket: int) -> float:
    return math.exp((bucket + 0.5) / _SCALE)


class Durations:
    """Statistics of a set of durations (seconds). ``prometheus=True`` also keeps fixed-bound
    bucket counts for export."""

    __slots__ = ("buckets", "count", "maximum", "minimum", "prometheus", "total")

    def __init__(self, *, prometheus: bool = False) -> None:
        self.count = 0
        self.total = 0.0
        self.minimum = math.inf
        self.maximum = 0.0
        self.buckets: dict[int, int] = {}
        self.prometheus: list[int] | None = [0] * (len(PROMETHEUS_BOUNDS) + 1) if prometheus else None

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        if seconds < self.minimum:
            self.minimum = seconds
        if seconds > self.maximum:
            self.maximum = seconds
        bucket = math.floor(math.log(seconds if seconds > _FLOOR else _FLOOR) * _SCALE)
        buckets = self.buckets
        buckets[bucket] = buckets.get(bucket, 0) + 1
        if self.prometheus is not None:
            self.prometheus[bisect_left(PROMETHEUS_BOUNDS, seconds)] += 1

    def merge(self, other: Durations) -> None:
        if not other.count:
            return
        self.count += other.count
        self.total += other.total
        self.minimum = min(self.minimum, other.minimum)
        self.maximum = max(self.maximum, other.maximum)
        for bucket, n in other.buckets.items():
            self.buckets[bucket] = self.buckets.get(bucket, 0) + n

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile (0..1), ``None`` without samples; clamped to [min, max]."""
        if not self.count:
            return None
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for bucket in sorted(self.buckets):
            seen += self.buckets[bucket]
            if seen >= rank:
                return min(max(_middle(bucket), self.minimum), self.maximum)
        return self.maximum  # pragma: no cover - the buckets hold every sample

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def summary(self) -> dict[str, float | int | None]:
        """What the API shows: count, total, avg, min, max, p50, p95. The sums are shown to the
        nanosecond: in a cluster each node adds the same durations in its own order (its own jobs
        as they end, the others' as they are folded in), and float sums differ in the last bits."""
        mean = self.mean
        return {
            "count": self.count,
            "total": round(self.total, 9),
            "avg": None if mean is None else round(mean, 9),
            "min": self.minimum if self.count else None,
            "max": self.maximum if self.count else None,
            "p50": self.quantile(0.50),
            "p95": self.quantile(0.95),
        }

    # -- persistence (finished jobs' metrics are stored compactly) ----------------------------
    def to_builtins(self) -> dict[str, Any]:
        return {"n": self.count, "t": self.total, "lo": self.minimum if self.count else None,
                "hi": self.maximum, "b": [[b, n] for b, n in self.buckets.items()]}

    @classmethod
    def from_builtins(cls, data: dict[str, Any]) -> Durations:
        made = cls()
        made.count = int(data.get("n", 0))
        made.total = float(data.get("t", 0.0))
        made.minimum = math.inf if data.get("lo") is None else float(data["lo"])
        made.maximum = float(data.get("hi", 0.0))
        made.buckets = {int(b): int(n) for b, n in data.get("b", [])}
        return made

"""Duration statistics: exact count/total/min/max, quantiles within 5%, mergeable, storable."""

from __future__ import annotations

import math
import random

import pytest

from routilux.monitor.durations import PROMETHEUS_BOUNDS, Durations


def exact_quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


@pytest.mark.parametrize("spread", ["narrow", "wide"])
def test_quantiles_are_within_5_percent_and_the_rest_is_exact(spread: str) -> None:
    rng = random.Random(7)
    values = ([rng.uniform(0.010, 0.012) for _ in range(5000)] if spread == "narrow"
              else [rng.lognormvariate(-6, 2) for _ in range(5000)])
    d = Durations()
    for v in values:
        d.add(v)
    assert d.count == len(values)
    assert d.total == pytest.approx(sum(values))
    assert (d.minimum, d.maximum) == (min(values), max(values))
    for q in (0.5, 0.95, 0.99):
        assert d.quantile(q) == pytest.approx(exact_quantile(values, q), rel=0.05)


def test_an_empty_set_has_no_quantiles_and_one_sample_is_its_own_quantile() -> None:
    assert Durations().quantile(0.95) is None and Durations().mean is None
    one = Durations()
    one.add(0.123)
    assert one.quantile(0.5) == one.quantile(0.95) == 0.123  # clamped to [min, max]


def test_merging_is_the_same_as_adding_everything_to_one() -> None:
    rng = random.Random(3)
    a, b, both = Durations(), Durations(), Durations()
    for i in range(2000):
        v = rng.expovariate(100)
        (a if i % 3 else b).add(v)
        both.add(v)
    a.merge(b)
    assert (a.count, a.minimum, a.maximum, a.buckets) == (both.count, both.minimum, both.maximum, both.buckets)
    assert a.total == pytest.approx(both.total)


def test_stored_and_read_back_they_are_the_same() -> None:
    d = Durations()
    for v in (0.001, 0.002, 0.5, 3.0):
        d.add(v)
    back = Durations.from_builtins(d.to_builtins())
    assert (back.count, back.total, back.minimum, back.maximum, back.buckets) == (
        d.count, d.total, d.minimum, d.maximum, d.buckets)
    assert Durations.from_builtins(Durations().to_builtins()).quantile(0.5) is None


def test_prometheus_buckets_count_each_sample_under_the_first_bound_it_does_not_exceed() -> None:
    d = Durations(prometheus=True)
    for v in (0.0005, 0.0006, 0.3, 1000.0):
        d.add(v)
    counts = d.prometheus
    assert counts is not None and len(counts) == len(PROMETHEUS_BOUNDS) + 1
    assert counts[PROMETHEUS_BOUNDS.index(0.0005)] == 1  # le=0.0005 includes 0.0005
    assert counts[PROMETHEUS_BOUNDS.index(0.001)] == 1
    assert counts[PROMETHEUS_BOUNDS.index(0.5)] == 1
    assert counts[-1] == 1  # +Inf

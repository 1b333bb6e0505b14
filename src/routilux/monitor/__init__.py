"""Metrics of flows, jobs, routines and slots, computed from the event bus alone.

:class:`MetricsAggregator` subscribes to the bus like any observer (a
:class:`~routilux.bus.consumer.BatchConsumer`); it never reads engine state.
"""

from routilux.monitor.aggregator import MetricsAggregator
from routilux.monitor.durations import Durations
from routilux.monitor.views import FlowMetrics, JobMetrics, RoutineMetrics, SlotMetrics

__all__ = ["Durations", "FlowMetrics", "JobMetrics", "MetricsAggregator", "RoutineMetrics", "SlotMetrics"]

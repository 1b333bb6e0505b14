"""``GET /metrics``: the server's figures in Prometheus' text format (prometheus-client).

Nothing here is updated per event: a scrape asks the metrics aggregator, the bus, the sockets,
the rate limiter and the HTTP counters for their current figures and writes them out (a custom
collector), so monitoring costs the engine nothing between scrapes. The HTTP counters are kept
by :class:`HTTPMetricsMiddleware` in plain dictionaries (by method, route template and status;
never by raw path, so ids do not explode the series).

Series (all prefixed ``routilux_``): ``jobs{flow_id,status}``, ``activations_total`` and
``activation_errors_total{flow_id,routine_id}``, ``activation_duration_seconds{flow_id,
routine_id}`` (histogram), ``slot_queue_depth{flow_id,routine_id,slot}`` (summed over the flow's
live jobs), ``event_bus_published_total``, ``event_bus_dropped_total{subscriber}`` and
``event_bus_lag_events{subscriber}`` (events waiting in a subscriber's buffer),
``websocket_clients``, ``runtime_active_jobs{runtime_id}``, ``runtime_threads{runtime_id,state}``
(``total``/``busy``), ``runtime_queued_activations{runtime_id}``,
``http_requests_total{method,route,status}``,
``http_request_duration_seconds{method,route}`` (histogram), ``rate_limited_total``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from routilux.api.middleware.http_metrics import HTTP_BOUNDS, HTTPStats
from routilux.api.services import services
from routilux.monitor.durations import PROMETHEUS_BOUNDS
from routilux.server.metrics import runtime_pools

if TYPE_CHECKING:
    from routilux.api.ws.session import Sessions
    from routilux.server.services import Services

def _cumulative(counts: list[int] | list[float], bounds: tuple[float, ...]) -> list[tuple[str, float]]:
    running = 0.0
    buckets = []
    for bound, n in zip(bounds, counts, strict=False):
        running += n
        buckets.append((repr(bound), running))
    running += counts[len(bounds)]
    buckets.append(("+Inf", running))
    return buckets


class RoutiluxCollector:
    """Builds every series from the live objects at scrape time."""

    def __init__(self, services: Services, sessions: Sessions, http: HTTPStats, limiter: Any | None) -> None:
        self.services = services
        self.sessions = sessions
        self.http = http
        self.limiter = limiter

    def describe(self) -> list[Metric]:
        return []  # the series are built at collect time; nothing to describe up front

    def collect(self) -> Iterator[Metric]:
        svc = self.services
        metrics = svc.metrics

        jobs = GaugeMetricFamily("routilux_jobs", "Jobs by flow and status (live, and ended since start-up "
                                 "or kept in the store).", labels=["flow_id", "status"])
        for (flow_id, status), n in sorted(metrics.jobs_by_flow_and_status().items()):
            jobs.add_metric([flow_id, status], n)
        yield jobs

        activations = CounterMetricFamily("routilux_activations", "Routine activations (attempts) ended.",
                                          labels=["flow_id", "routine_id"])
        errors = CounterMetricFamily("routilux_activation_errors", "Activations that raised (retried or not).",
                                     labels=["flow_id", "routine_id"])
        durations = HistogramMetricFamily("routilux_activation_duration_seconds", "How long activations took.",
                                          labels=["flow_id", "routine_id"])
        for flow_id, routine_id, figures in sorted(metrics.flow_routine_durations(), key=lambda t: t[:2]):
            labels = [flow_id, routine_id]
            activations.add_metric(labels, figures.executions)
            errors.add_metric(labels, figures.errors)
            counts = figures.durations.prometheus or [0] * (len(PROMETHEUS_BOUNDS) + 1)
            durations.add_metric(labels, _cumulative(counts, PROMETHEUS_BOUNDS), figures.durations.total)
        yield activations
        yield errors
        yield durations

        depth = GaugeMetricFamily("routilux_slot_queue_depth", "Items waiting in a slot, summed over the "
                                  "flow's live jobs.", labels=["flow_id", "routine_id", "slot"])
        for (flow_id, routine_id, slot), n in sorted(metrics.queue_depths().items()):
            depth.add_metric([flow_id, routine_id, slot], n)
        yield depth

        runtime_jobs = GaugeMetricFamily("routilux_runtime_active_jobs", "Jobs of a runtime not yet ended.",
                                         labels=["runtime_id"])
        threads = GaugeMetricFamily("routilux_runtime_threads", "A runtime's thread pool: size and threads busy "
                                    "(the shared pool's, for runtimes on it).", labels=["runtime_id", "state"])
        queued = GaugeMetricFamily("routilux_runtime_queued_activations", "Sync activations waiting for a "
                                   "thread (the shared pool's, for runtimes on it).", labels=["runtime_id"])
        for runtime in metrics.runtimes(runtime_pools(svc.engine)):
            runtime_jobs.add_metric([runtime.runtime_id], runtime.active_jobs)
            threads.add_metric([runtime.runtime_id, "total"], runtime.threads_total)
            threads.add_metric([runtime.runtime_id, "busy"], runtime.threads_busy)
            queued.add_metric([runtime.runtime_id], runtime.queued_activations)
        yield runtime_jobs
        yield threads
        yield queued

        bus = svc.engine.bus
        yield CounterMetricFamily("routilux_event_bus_published", "Events published on the bus.",
                                  value=bus.published)
        sessions = list(self.sessions)
        subscribers = {
            "recorder": (svc.recorder.dropped, svc.recorder.pending),
            "metrics": (metrics.dropped, metrics.pending),
            "websockets": (sum(s.reader.dropped + s.stream.dropped for s in sessions),
                           sum(s.reader.pending() for s in sessions)),
        }
        dropped = CounterMetricFamily("routilux_event_bus_dropped", "Events a subscriber's full buffer could "
                                      "not take (it was told which, with a gap).", labels=["subscriber"])
        lag = GaugeMetricFamily("routilux_event_bus_lag_events", "Events waiting in a subscriber's buffer.",
                                labels=["subscriber"])
        for name, (lost, pending) in subscribers.items():
            dropped.add_metric([name], lost)
            lag.add_metric([name], pending)
        yield dropped
        yield lag
        yield GaugeMetricFamily("routilux_websocket_clients", "Open WebSocket connections.", value=len(sessions))
        node = svc.cluster_node
        if node is not None:  # the relay of other servers' jobs, which this server follows only while watched
            yield CounterMetricFamily("routilux_cluster_relayed_events", "Other servers' job events relayed to "
                                      "this server's bus (for its sockets).", value=node.bridge.relayed)
            yield GaugeMetricFamily("routilux_cluster_followed_jobs", "Other servers' jobs whose event streams "
                                    "this server reads now.", value=node.bridge.followed)

        requests = CounterMetricFamily("routilux_http_requests", "HTTP requests by route template and status.",
                                       labels=["method", "route", "status"])
        for (method, route, status), n in sorted(self.http.counts.items()):
            requests.add_metric([method, route, status], n)
        yield requests
        latency = HistogramMetricFamily("routilux_http_request_duration_seconds", "HTTP request latency.",
                                        labels=["method", "route"])
        for (method, route), histogram in sorted(self.http.latency.items()):
            latency.add_metric([method, route], _cumulative(histogram[:-1], HTTP_BOUNDS), histogram[-1])
        yield latency
        yield CounterMetricFamily("routilux_rate_limited", "Requests refused by the rate limiter.",
                                  value=self.limiter.limited if self.limiter is not None else 0)


def metrics_registry(
    services: Services, sessions: Sessions, http: HTTPStats, limiter: Any | None
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RoutiluxCollector(services, sessions, http, limiter))  # type: ignore[arg-type]
    return registry


async def prometheus_metrics(request: Request) -> Response:
    await services(request).metrics.refreshed()  # in a cluster, the other servers' jobs too
    registry: CollectorRegistry = request.app.state.prometheus
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


routes = [Route("/metrics", prometheus_metrics, methods=["GET"])]

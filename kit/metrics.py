"""Prometheus metrics: one registry, every metric defined here so names stay consistent.

Served at /metrics (gateway/http/metrics.py). Labels are low-cardinality by design:
operation names, provider names, outcomes — never ids or tenants.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

REGISTRY = CollectorRegistry(auto_describe=True)

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

http_requests = Counter(
    "switchboard_http_requests_total",
    "HTTP requests by route and status class.",
    ["route", "method", "status"],
    registry=REGISTRY,
)
http_latency = Histogram(
    "switchboard_http_request_seconds",
    "HTTP request latency by route.",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
graphql_operations = Counter(
    "switchboard_graphql_operations_total",
    "GraphQL operations by name, type and outcome.",
    ["operation", "type", "outcome"],
    registry=REGISTRY,
)
graphql_latency = Histogram(
    "switchboard_graphql_operation_seconds",
    "GraphQL operation latency by name and type.",
    ["operation", "type"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
graphql_response_cache_hits = Counter(
    "switchboard_graphql_response_cache_hits_total",
    "GraphQL operations answered from the response cache (also counted as operations).",
    ["operation"],
    registry=REGISTRY,
)
rate_limit_rejections = Counter(
    "switchboard_rate_limit_rejections_total",
    "Requests refused by a rate limit, by budget.",
    ["budget"],
    registry=REGISTRY,
)


class _Latency:
    """One (provider, operation)'s latency histogram: a count per bucket (not cumulative;
    the last bucket is +Inf) and the sum."""

    __slots__ = ("counts", "created", "total")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * buckets
        self.total = 0.0
        self.created = time.time()


class OutboundTally:
    """The books of one (provider, operation, outcome): its call count and the latency
    histogram of its (provider, operation). `observe` is a few plain additions."""

    __slots__ = ("_bounds", "calls", "created", "latency")

    def __init__(self, latency: _Latency, bounds: tuple[float, ...]) -> None:
        self.calls = 0
        self.latency = latency
        self.created = time.time()
        self._bounds = bounds

    def observe(self, seconds: float) -> None:
        self.calls += 1
        latency = self.latency
        latency.total += seconds
        # The first bucket whose bound is >= the value, as prometheus_client files it.
        latency.counts[bisect_left(self._bounds, seconds)] += 1


class OutboundCalls:
    """`switchboard_outbound_calls_total` (provider, operation, outcome) and
    `switchboard_outbound_call_seconds` (provider, operation), kept as plain numbers and
    read at scrape time.

    Why not a Counter and a Histogram: every call to a vendor counts once and observes
    once, and prometheus_client's children take a lock per increment (three per call,
    plus the label lookups) — measurable against a ~60 us outbound call
    (bench_provider_overhead). The numbers are only written from the event loop's
    thread; a scrape reads them as they are. Exposition is the same as the two metrics
    it replaces (samples, labels, `_created`)."""

    CALLS = "switchboard_outbound_calls"
    LATENCY = "switchboard_outbound_call_seconds"

    def __init__(self, registry: CollectorRegistry, buckets: tuple[float, ...]) -> None:
        self._bounds = (*buckets, math.inf)
        self._tallies: dict[tuple[str, str, str], OutboundTally] = {}
        self._latencies: dict[tuple[str, str], _Latency] = {}
        registry.register(self)

    def tally(self, provider: str, operation: str, outcome: str) -> OutboundTally:
        """The books of one (provider, operation, outcome); callers keep it."""
        key = (provider, operation, outcome)
        tally = self._tallies.get(key)
        if tally is None:
            latency = self._latencies.get((provider, operation))
            if latency is None:
                latency = self._latencies[provider, operation] = _Latency(len(self._bounds))
            tally = self._tallies[key] = OutboundTally(latency, self._bounds)
        return tally

    def describe(self) -> list[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        calls, latency = self._families()
        for (provider, operation, outcome), tally in list(self._tallies.items()):
            calls.add_metric([provider, operation, outcome], tally.calls, created=tally.created)
        for (provider, operation), hist in list(self._latencies.items()):
            cumulative, buckets = 0, []
            for bound, count in zip(self._bounds, hist.counts, strict=True):
                cumulative += count
                buckets.append((floatToGoString(bound), cumulative))
            latency.add_metric([provider, operation], buckets, hist.total)
            latency.samples.append(
                Sample(
                    f"{self.LATENCY}_created",
                    {"provider": provider, "operation": operation},
                    hist.created,
                )
            )
        return [calls, latency]

    def _families(self) -> tuple[CounterMetricFamily, HistogramMetricFamily]:
        return (
            CounterMetricFamily(
                self.CALLS,
                "Calls to third parties by provider, operation and outcome.",
                labels=["provider", "operation", "outcome"],
            ),
            HistogramMetricFamily(
                self.LATENCY,
                "Latency of calls to third parties.",
                labels=["provider", "operation"],
            ),
        )


outbound_calls = OutboundCalls(REGISTRY, LATENCY_BUCKETS)
outbound_retries = Counter(
    "switchboard_outbound_retries_total",
    "Retries of calls to third parties.",
    ["provider", "operation"],
    registry=REGISTRY,
)
ws_shared_executions = Gauge(
    "switchboard_ws_shared_executions",
    "Shared subscription executions running (one per operation, variables, tenant and "
    "role with subscribers; gateway/http/fanout.py).",
    registry=REGISTRY,
)
ws_shared_subscribers = Gauge(
    "switchboard_ws_shared_subscribers",
    "Socket operations served by a shared subscription execution.",
    registry=REGISTRY,
)
breaker_state = Gauge(
    "switchboard_breaker_state",
    "Circuit breaker state per provider (0 closed, 1 half-open, 2 open).",
    ["provider"],
    registry=REGISTRY,
)

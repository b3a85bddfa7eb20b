"""Prometheus metrics: one registry, every metric defined here so names stay consistent.

Served at /metrics (gateway/http/metrics.py). Labels are low-cardinality by design:
operation names, provider names, outcomes — never ids or tenants.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
outbound_calls = Counter(
    "switchboard_outbound_calls_total",
    "Calls to third parties by provider, operation and outcome.",
    ["provider", "operation", "outcome"],
    registry=REGISTRY,
)
outbound_latency = Histogram(
    "switchboard_outbound_call_seconds",
    "Latency of calls to third parties.",
    ["provider", "operation"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
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

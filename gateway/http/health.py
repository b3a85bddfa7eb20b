"""Liveness and readiness.

`/health` says the process answers. `/health/ready` says whether it should get traffic,
in the product's words (`resolvers/health.py` has the rule): `healthy`, `degraded` (a
provider is degraded, down or unconfigured: still 200) or `unhealthy` (the store, Redis
or the migrations check fails: 503), with each check and each provider that has a
client. It reads counters and the background probe's last outcome: no vendor is called.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from resolvers.context import Services
from resolvers.health import HealthStatus, readiness
from resolvers.integrations import ProbeResult, ProviderHealthReport


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat()


def _probe(probe: ProbeResult | None) -> dict[str, Any] | None:
    if probe is None:
        return None
    return {
        "ok": probe.ok,
        "latency_ms": round(probe.latency * 1000, 2),
        "at": _iso(probe.at),
        "error": probe.error,
        "failures_in_a_row": probe.failures_in_a_row,
    }


def _provider(report: ProviderHealthReport) -> dict[str, Any]:
    return {
        "status": report.status.value.lower(),
        "credential_source": report.source.value.lower() if report.source else None,
        "breaker": report.breaker_state,
        "latency_ms": report.latency_ms,
        "last_error": report.last_error,
        "probe": _probe(report.probe),
    }


def routes(services: Services) -> list[BaseRoute]:
    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def ready(_: Request) -> JSONResponse:
        report = await readiness(services)
        body = {
            "status": report.status.value.lower(),
            "checks": {check.name: check.ok for check in report.checks},
            "providers": {p.provider.value: _provider(p) for p in report.providers},
        }
        unhealthy = report.status is HealthStatus.UNHEALTHY
        return JSONResponse(body, status_code=503 if unhealthy else 200)

    return [Route("/health", health), Route("/health/ready", ready)]

"""Liveness and readiness."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from gateway.db import pending_migrations, store_ready
from resolvers.context import Services
from resolvers.integrations import provider_summary


def routes(services: Services) -> list[BaseRoute]:
    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def ready(_: Request) -> JSONResponse:
        checks = {"store": await store_ready()}
        if services.pending_migrations:
            services.pending_migrations = await pending_migrations(services.settings)
        checks["migrations"] = not services.pending_migrations
        if services.settings.redis_url:
            try:
                checks["redis"] = await services.limiter.check_storage()
            except Exception:
                checks["redis"] = False
        ok = all(checks.values())
        # Each provider's status (live/sandbox/degraded/down/unconfigured): informative, a
        # vendor outage does not make this process unready. No vendor is called.
        providers = await provider_summary(services)
        return JSONResponse(
            {"status": "ready" if ok else "unavailable", "checks": checks, "providers": providers},
            status_code=200 if ok else 503,
        )

    return [Route("/health", health), Route("/health/ready", ready)]

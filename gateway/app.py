"""The app factory: Starlette, the store in its lifespan, GraphQL at /graphql."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Route, WebSocketRoute

from gateway.http import files as file_routes
from gateway.http import graphiql, health
from gateway.http import identity as identity_routes
from gateway.http import mail as mail_routes
from gateway.http import metrics as metrics_routes
from gateway.http import sandbox as sandbox_routes
from gateway.http import webhooks as webhook_routes
from gateway.http.graphql import GatewayGraphQL
from gateway.http.middleware import GatewayMiddleware
from gateway.worker import Runtime
from kit.logging import configure_logging
from kit.ratelimit import RateLimiter
from kit.settings import Environment, Settings, get_settings
from models import store as db
from providers.registry import build_registry
from resolvers import authority
from resolvers.context import Services
from resolvers.integrations import install_error_log
from schema.build import build_schema

log = logging.getLogger("switchboard")


def build_services(settings: Settings) -> Services:
    limiter = RateLimiter(settings.redis_url, prefix=settings.redis_key_prefix)
    # The outbound HTTP layer: one pooled session, breaker and limit per provider.
    providers = build_registry(settings, limiter)
    install_error_log(providers)  # failed calls -> integration error log
    return Services(settings=settings, limiter=limiter, providers=providers)


def create_app(settings: Settings | None = None, *, configure_logs: bool = True) -> Starlette:
    settings = settings or get_settings()
    if configure_logs:
        configure_logging(settings.log_level, settings.log_json)
    services = build_services(settings)
    graphql = GatewayGraphQL(build_schema(settings), services)

    graphql_route = Route("/graphql", graphql, methods=["GET", "POST"])
    routes: list[BaseRoute] = [
        # First: the router tries routes in order, and nearly every request is GraphQL.
        graphql_route,
        WebSocketRoute("/graphql", graphql),
        *health.routes(services),
        *metrics_routes.routes(services),
        *webhook_routes.routes(services),
        *mail_routes.routes(),
        *identity_routes.routes(services),
        *file_routes.routes(services),
        *sandbox_routes.routes(services),
        *(graphiql.routes() if settings.graphiql_enabled else []),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        auto_migrate = settings.switchboard_env is Environment.DEVELOPMENT
        if not auto_migrate:
            services.pending_migrations = await db.pending_migrations(settings)
            if services.pending_migrations and settings.is_production:
                raise db.MigrationsPending(services.pending_migrations)
        await db.open_store(settings, apply_migrations=auto_migrate)
        if settings.gc_freeze:
            # Objects alive after start-up (schema, modules) move to the permanent
            # generation, so collections stop re-scanning them on every request.
            gc.collect()
            gc.freeze()
        # Event bus, outbox relay, health probes, job worker (RUN_WORKER).
        runtime = Runtime(settings, services=services)
        await runtime.start()
        app.state.runtime = runtime
        authority.start_listening(services)  # other processes' role changes and removals
        log.info("switchboard ready", extra={"env": settings.switchboard_env.value})
        try:
            yield
        finally:
            await authority.stop_listening(services)
            await runtime.stop()
            await sandbox_routes.aclose(services)  # their webhook callbacks in flight
            if services.providers is not None:
                await services.providers.aclose()  # SDK clients, sessions, breakers
            if services.storage is not None:
                await services.storage.aclose()
            await db.close_store()

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(GatewayMiddleware, services=services, direct=graphql_route)],
    )
    app.state.services = services
    return app

"""The request context every resolver function receives, GraphQL or HTTP alike."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiodataloader import DataLoader

from kit.errors import Forbidden, Unauthenticated
from kit.ratelimit import RateLimiter
from kit.roles import allowed
from kit.security import Principal
from kit.settings import Settings


@dataclass
class Services:
    """Process-wide collaborators, built once by the app factory."""

    settings: Settings
    limiter: RateLimiter
    extras: dict[str, Any] = field(default_factory=dict)
    # Migrations the store lacked at start-up (production refuses to serve then); /health/ready
    # looks again until none is left.
    pending_migrations: list[str] = field(default_factory=list)


@dataclass
class Context:
    services: Services
    request_id: str
    principal: Principal | None = None
    client_ip: str = "unknown"
    user_agent: str = ""
    request: Any = None  # starlette HTTPConnection, when there is one
    response: Any = None  # strawberry's sub-response (headers, cookies) on HTTP
    connection_params: dict[str, Any] | None = None  # graphql-transport-ws connection_init payload
    _loaders: dict[str, DataLoader] = field(default_factory=dict)

    @property
    def settings(self) -> Settings:
        return self.services.settings

    def require_principal(self) -> Principal:
        if self.principal is None:
            raise Unauthenticated()
        return self.principal

    def require(self, permission: str) -> Principal:
        principal = self.require_principal()
        if not allowed(principal.role, permission):
            raise Forbidden()
        return principal

    @property
    def tenant_id(self) -> int:
        return self.require_principal().tenant_id

    def loader(
        self,
        name: str,
        batch: Callable[[list[Any]], Awaitable[list[Any]]],
    ) -> DataLoader:
        """One DataLoader per name per request, so lists batch their relations."""
        existing = self._loaders.get(name)
        if existing is None:
            existing = DataLoader(batch_load_fn=batch)  # type: ignore[arg-type]
            self._loaders[name] = existing
        return existing

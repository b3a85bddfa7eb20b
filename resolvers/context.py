"""The request context every resolver function receives, GraphQL or HTTP alike."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from aiodataloader import DataLoader

from kit.errors import Forbidden, GatewayError, Unauthenticated
from kit.ratelimit import RateLimiter
from kit.response_cache import ResponseCache
from kit.roles import allowed
from kit.security import Principal
from kit.settings import Settings
from kit.ttl_cache import TTLCache
from providers.registry import ProviderHealth, ProviderRegistry

if TYPE_CHECKING:  # the areas' own state types; those modules import this one
    from resolvers.ai.state import AiState
    from resolvers.authority import Authority
    from resolvers.credentials import ResolvedCredential
    from resolvers.identity.connections import ConnectionsState
    from resolvers.storage import Storage
    from resolvers.viewer_cache import ViewerCache


def _one_entry() -> TTLCache[str, dict[str, ProviderHealth]]:
    return TTLCache(max_entries=1)


@dataclass
class Services:
    """Process-wide collaborators, built once by the app factory (`gateway.app.build_services`).

    One typed field per collaborator, so a reader finds where each lives and mypy checks
    every use. The caches hang here rather than in module globals so that apps over
    different stores (tests build many) never share them. State that belongs to one area
    and is a type of that area's module is made on first use by the area's accessor
    (`authority_of`, `viewer_cache.cache_of`, `ai.state.ai_state`), as that module
    imports this one.
    """

    settings: Settings
    limiter: RateLimiter
    # The outbound HTTP layer: one pooled session, breaker and limit per provider. None
    # only in a bare Services of a script or test that calls no provider.
    providers: ProviderRegistry | None = None
    # The emulators mounted under /sandbox/<provider> (gateway/http/sandbox.py), by provider.
    sandboxes: dict[str, Any] = field(default_factory=dict)
    # provider -> the secret those sandboxes sign their webhook callbacks with, accepted at
    # /webhooks/<provider> besides WEBHOOK_SYSTEM_SECRETS (resolvers/webhooks_in.py).
    sandbox_webhook_secrets: dict[str, str] = field(default_factory=dict)
    # Whole answers of cache-hinted queries, per viewer (kit/response_cache.py).
    response_cache: ResponseCache = field(default_factory=ResponseCache)
    # Resolved credentials, (tenant, user whose own key may apply, provider) -> credential
    # (resolvers/credentials.py, CREDENTIAL_CACHE_SECONDS).
    credential_cache: TTLCache[tuple[int, int | None, str], ResolvedCredential] = field(
        default_factory=TTLCache
    )
    # The providers' health snapshot (resolvers/integrations.py, HEALTH_CACHE_SECONDS).
    health_cache: TTLCache[str, dict[str, ProviderHealth]] = field(default_factory=_one_entry)
    viewer_cache: ViewerCache | None = None  # resolvers.viewer_cache.cache_of
    authority: Authority | None = None  # resolvers.authority.authority_of
    ai: AiState | None = None  # resolvers.ai.state.ai_state
    storage: Storage | None = None  # resolvers.storage.storage_of
    connections: ConnectionsState | None = None  # resolvers.identity.connections.state_of
    # Migrations the store lacked at start-up (production refuses to serve then); /health/ready
    # looks again until none is left.
    pending_migrations: list[str] = field(default_factory=list)


class Audience(Protocol):
    """The subscribers one shared subscription execution serves (gateway/http/fanout.py).

    They all have the execution's tenant and role (`Context.principal` is a principal of
    that tenant and role and no user); checks that depend on the individual caller (is
    this user still a member?) are made on `principals()`, and those who fail them are
    `refuse`d: their subscription ends with `error`, the others' goes on.
    """

    def principals(self) -> Iterable[Principal]: ...

    def refuse(self, principals: Collection[Principal], error: GatewayError) -> None: ...


# Slots: an open WebSocket keeps its Context for the socket's whole life.
@dataclass(slots=True)
class Context:
    services: Services
    request_id: str
    principal: Principal | None = None
    client_ip: str = "unknown"
    user_agent: str = ""
    request: Any = None  # starlette HTTPConnection, when there is one
    response: Any = None  # strawberry's sub-response (headers, cookies) on HTTP
    connection_params: dict[str, Any] | None = None  # graphql-transport-ws connection_init payload
    # Set on the context of a shared subscription execution: whom it serves.
    audience: Audience | None = None
    # Made on first use: most socket contexts never load anything.
    _loaders: dict[str, DataLoader] | None = None

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
        if self._loaders is None:
            self._loaders = {}
        existing = self._loaders.get(name)
        if existing is None:
            existing = DataLoader(batch_load_fn=batch)  # type: ignore[arg-type]
            self._loaders[name] = existing
        return existing

    def known_loader(self, name: str) -> DataLoader | None:
        """The request's loader `name` if one was made (callers that build it themselves)."""
        return None if self._loaders is None else self._loaders.get(name)

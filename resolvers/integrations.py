"""The integration error log and the health of each provider.

- `record_failure` is the `on_failure` hook installed on the provider registry: one
  `IntegrationError` row per failed outbound call made for a tenant (message
  scrubbed of secrets). Counting in `kit.metrics.outbound_calls` is the HTTP
  layer's job; this hook does not count again.
- `resolvers.credentials.call_labels(ctx, credential)` is what a resolver passes to a
  provider client (`labels=`) so that a failure can be attributed to its tenant and request.
- `integration_health` / `provider_summary` read the registry's snapshot (breaker
  state, recent failures, last error and latency, the last background probe) and the
  credential chain; they never call a vendor. The snapshot is cached for a few seconds
  per process, in the one TTL cache (`kit.ttl_cache`) kept on the app's Services. Only
  providers with a client are listed (`providers.registry.CLIENTS`):
  a vendor the gateway cannot call has no health to report.

A provider's status (`provider_status`, the product's words):

- `unconfigured`: no credential reaches it (none stored, no system key, no emulator);
- `down`: its breaker is open (calls fail fast), or the last `DOWN_AFTER_PROBES` health
  probes of the system credential failed in a row;
- `degraded`: the breaker is probing (half open), calls failed since the last success, or
  the last probe failed;
- otherwise `sandbox` when the built-in emulator answers, `operational` for a real
  credential;
- `needs_reconnection` (`integrationHealth` only, for providers reached through connected
  accounts: Google Calendar, Zoom): the account the caller's calls use was refused by the
  provider (its grant revoked) and waits for someone to connect it again.

Probe results count only where the caller's calls use the system credential (that is
the credential probed); a tenant's or user's own key is judged by its own breaker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from kit.errors import UpstreamUnavailable
from kit.logging import request_id_var, scrub
from kit.ttl_cache import read_through
from models.credentials import TENANT_SLOT, user_slot
from models.identity import ConnectedAccount, ConnectionStatus
from models.integrations import IntegrationError
from models.tenancy import scoped
from providers.breaker import BreakerState
from providers.errors import FailureEvent
from providers.registry import ProbeResult, ProviderHealth, ProviderRegistry
from resolvers.context import Context, Services
from resolvers.credentials import (
    LABEL_PURPOSE,
    PROVIDERS,
    PURPOSE_VERIFY,
    CredentialSource,
    IntegrationProvider,
    ResolvedCredential,
    parse_provider,
    providers_with_client,
    resolve_credential,
)
from resolvers.operations import operation
from resolvers.pagination import Page, page_of

log = logging.getLogger("switchboard.integrations")

LABEL_TENANT = "tenant_id"
LABEL_REQUEST = "request_id"
LABEL_SOURCE = "credential_source"

MAX_MESSAGE = 1000
# Fast failures that repeat at the caller's rate while a vendor is out: one row per
# tenant, provider and kind per window is enough to see it; metrics count them all.
_REPEATING_CODES = frozenset({"circuit_open", "outbound_rate_limit", "local_concurrency"})
REPEAT_WINDOW = 30.0
_last_repeat: dict[tuple[int, str, str], float] = {}

HEALTH_CACHE_SECONDS = 5.0
# Providers reached through connected accounts (resolvers/identity/connections.py).
CONNECTED_PROVIDERS = frozenset({"google_calendar", "zoom"})


DOWN_AFTER_PROBES = 2  # failed probes in a row before a provider is `down`


class ProviderStatus(StrEnum):
    OPERATIONAL = "OPERATIONAL"
    SANDBOX = "SANDBOX"
    DEGRADED = "DEGRADED"
    DOWN = "DOWN"
    UNCONFIGURED = "UNCONFIGURED"
    NEEDS_RECONNECTION = "NEEDS_RECONNECTION"


def registry_of(services: Services) -> ProviderRegistry | None:
    return services.providers


# -- the error log ----------------------------------------------------------------------


async def record_failure(event: FailureEvent) -> None:
    """The `on_failure` hook: log the failure, and keep a row when a tenant made the call."""
    message = scrub(event.message or "")[:MAX_MESSAGE]
    labels = event.labels or {}
    request_id = labels.get(LABEL_REQUEST) or request_id_var.get()
    caller_error = event.status is not None and 400 <= event.status < 500
    caller_error = caller_error and event.status not in (401, 403, 408, 429)
    log.log(
        logging.INFO if caller_error else logging.WARNING,
        "outbound call failed: %s.%s %s",
        event.provider,
        event.operation,
        event.status if event.status is not None else event.vendor_code,
        extra={
            "provider": event.provider,
            "operation": event.operation,
            "status": event.status,
            "vendor_code": event.vendor_code,
            "attempts": event.attempts,
            "duration_ms": round(event.duration * 1000, 1),
        },
    )
    if labels.get(LABEL_PURPOSE) == PURPOSE_VERIFY and event.status == 404:
        return  # a key check that probes an id that cannot exist: 404 means the key works
    raw_tenant = labels.get(LABEL_TENANT)
    if not raw_tenant or not raw_tenant.isdigit():
        return  # a system call (no tenant): logs and metrics only
    if event.provider not in IntegrationProvider._value2member_map_:
        return  # not a provider tenants configure (rows name only IntegrationProvider values)
    tenant_id = int(raw_tenant)
    if event.vendor_code in _REPEATING_CODES:
        key = (tenant_id, event.provider, event.vendor_code or "")
        now = time.monotonic()
        if now - _last_repeat.get(key, -REPEAT_WINDOW) < REPEAT_WINDOW:
            return
        _last_repeat[key] = now
    source = labels.get(LABEL_SOURCE)
    await IntegrationError.create(
        tenant_id=tenant_id,
        provider=event.provider[:32],
        operation=event.operation[:120],
        status=event.status,
        vendor_code=(event.vendor_code or None) and str(event.vendor_code)[:120],
        message=message,
        credential_source=source if source in CredentialSource.__members__ else None,
        duration_ms=round(event.duration * 1000, 3),
        request_id=(request_id or None) and request_id[:128],
    )


def install_error_log(registry: ProviderRegistry) -> None:
    """Attach `record_failure` to every provider of the registry (once)."""
    if record_failure not in registry.hooks:
        registry.add_failure_hook(record_failure)


@operation("integrations:read")
async def list_errors(
    ctx: Context, *, first: int | None, after: str | None, provider: str | None
) -> Page[IntegrationError]:
    ctx.require_principal()
    query = scoped(IntegrationError, ctx.tenant_id)
    if provider is not None:
        query = query.filter(provider=parse_provider(provider).value)
    return await page_of(ctx, query, first=first, after=after)


# -- health -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProviderHealthReport:
    provider: IntegrationProvider
    status: ProviderStatus
    source: CredentialSource | None
    breaker_state: str  # closed | half_open | open
    consecutive_failures: int
    recent_failures: int
    last_error: str | None
    last_error_at: float | None
    latency_ms: float | None
    last_success_at: float | None
    probe: ProbeResult | None  # the last probe, when the calls use the probed credential


_Snapshot = dict[str, ProviderHealth]


async def _snapshot(services: Services, registry: ProviderRegistry) -> _Snapshot:
    """The registry's health for every provider, at most HEALTH_CACHE_SECONDS old
    (concurrent misses share one read)."""

    async def load() -> _Snapshot:
        return await registry.health([p.value for p in providers_with_client()])

    snapshot = await read_through(services.health_cache, "all", HEALTH_CACHE_SECONDS, load)
    assert snapshot is not None  # load() always answers
    return snapshot


def forget_snapshot(services: Services) -> None:
    """Drop the cached snapshot, so news (a probe's outcome) shows at the next request."""
    services.health_cache.forget("all")


def provider_status(
    source: CredentialSource | None, health: ProviderHealth | None
) -> ProviderStatus:
    """The rule in the module docstring."""
    if source is None:
        return ProviderStatus.UNCONFIGURED
    if health is not None:
        probe = health.probe if source is CredentialSource.SYSTEM else None
        if health.breaker_state is BreakerState.OPEN or (
            probe is not None and probe.failures_in_a_row >= DOWN_AFTER_PROBES
        ):
            return ProviderStatus.DOWN
        if (
            health.breaker_state is BreakerState.HALF_OPEN
            or health.consecutive_failures > 0
            or (probe is not None and not probe.ok)
        ):
            return ProviderStatus.DEGRADED
    if source is CredentialSource.SANDBOX:
        return ProviderStatus.SANDBOX
    return ProviderStatus.OPERATIONAL


async def _source(ctx: Context, provider: IntegrationProvider) -> CredentialSource | None:
    resolved = await _resolved(ctx, provider)
    return resolved.source if resolved is not None else None


async def _resolved(ctx: Context, provider: IntegrationProvider) -> ResolvedCredential | None:
    try:
        return await resolve_credential(ctx, provider)
    except UpstreamUnavailable:
        return None


async def _health_for(
    registry: ProviderRegistry | None,
    snapshot: dict[str, ProviderHealth],
    provider: IntegrationProvider,
    resolved: ResolvedCredential | None,
) -> ProviderHealth | None:
    """The health the caller's calls see: a tenant's or user's own credential has a
    breaker of its own (the provider's counts the shared credentials only)."""
    secret = resolved.secrets.get(PROVIDERS[provider].primary) if resolved else None
    if registry is None or resolved is None or not resolved.own or not secret:
        return snapshot.get(provider.value)
    return await registry.health_of(provider.value, credential=secret)


def _report(
    provider: IntegrationProvider, source: CredentialSource | None, health: ProviderHealth | None
) -> ProviderHealthReport:
    return ProviderHealthReport(
        provider=provider,
        status=provider_status(source, health),
        source=source,
        breaker_state=str(health.breaker_state) if health else BreakerState.CLOSED.value,
        consecutive_failures=health.consecutive_failures if health else 0,
        recent_failures=health.recent_failures if health else 0,
        last_error=scrub(health.last_error) if health and health.last_error else None,
        last_error_at=health.last_error_at if health else None,
        latency_ms=round(health.last_latency * 1000, 2)
        if health and health.last_latency is not None
        else None,
        last_success_at=health.last_success_at if health else None,
        probe=health.probe if health and source is CredentialSource.SYSTEM else None,
    )


@operation("integrations:read")
async def integration_health(
    ctx: Context, providers: Iterable[str] | None = None
) -> list[ProviderHealthReport]:
    """Each provider's status as the caller's requests would see it (their credential chain)."""
    ctx.require_principal()
    listed = providers_with_client()
    wanted = (
        [p for p in map(parse_provider, providers) if p in listed]
        if providers is not None
        else listed
    )
    registry = registry_of(ctx.services)
    snapshot = await _snapshot(ctx.services, registry) if registry is not None else {}
    # Gathered, so the per-request credential loader answers all of them in one query.
    chains = await asyncio.gather(*(_resolved(ctx, p) for p in wanted))
    refused = await _refused_connections(ctx, wanted)
    reports = []
    for provider, resolved in zip(wanted, chains, strict=True):
        health = await _health_for(registry, snapshot, provider, resolved)
        report = _report(provider, resolved.source if resolved else None, health)
        if provider in refused:
            report = dataclasses.replace(report, status=ProviderStatus.NEEDS_RECONNECTION)
        reports.append(report)
    return reports


async def _refused_connections(
    ctx: Context, wanted: list[IntegrationProvider]
) -> set[IntegrationProvider]:
    """The providers whose connected account the caller's calls use (their own, else the
    organization's) needs reconnecting."""
    principal = ctx.require_principal()
    names = [p.value for p in wanted if p.value in CONNECTED_PROVIDERS]
    if not names:
        return set()
    own = None
    if principal.user_id is not None and principal.api_key_id is None:
        own = user_slot(principal.user_id)
    slots = [s for s in (own, TENANT_SLOT) if s]
    rows = await scoped(ConnectedAccount, principal.tenant_id).filter(
        provider__in=names, slot__in=slots
    )
    used: dict[str, ConnectedAccount] = {}
    for row in sorted(rows, key=lambda r: slots.index(r.slot)):
        used.setdefault(row.provider, row)
    return {
        IntegrationProvider(p)
        for p, row in used.items()
        if row.status == ConnectionStatus.NEEDS_RECONNECTION.value
    }


async def provider_summary(services: Services) -> list[ProviderHealthReport]:
    """For /health/ready: each listed provider's status without a tenant (the shared view:
    system key or sandbox). No vendor is called."""
    ctx = Context(services=services, request_id=request_id_var.get() or "health")
    registry = registry_of(services)
    snapshot = await _snapshot(services, registry) if registry is not None else {}
    listed = providers_with_client()
    sources = await asyncio.gather(*(_source(ctx, p) for p in listed))
    return [
        _report(provider, source, snapshot.get(provider.value))
        for provider, source in zip(listed, sources, strict=True)
    ]

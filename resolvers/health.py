"""The gateway's health in the product's words, and the background probe that feeds it.

Overall status (`overall_status`), one rule for `/health/ready` and `serviceHealth`:

- `unhealthy`: a readiness check fails: the store answers no query, Redis (when
  `REDIS_URL` is set) does not answer, or migrations are pending. `/health/ready`
  answers 503, so a load balancer sends this process no traffic.
- `degraded`: every check passes, but a listed provider (one the gateway has a client
  for) is `degraded`, `down` or `unconfigured`. Each of them backs operations of the API
  (sending mail, completions), which fail or may fail meanwhile; an unconfigured one
  counts because its operations cannot work at all — unless it stands in for another
  that works (`ALTERNATIVES`: Resend and SendGrid, or the SMTP relay, for mail). The
  process still serves: 200.
- `healthy`: every check passes and every listed provider is `operational` or `sandbox`.

Provider statuses are `resolvers.integrations.provider_status`. `/health/ready` judges the
shared view (system key or sandbox); `serviceHealth` judges the providers as the caller's
organization reaches them (its own keys first).

The probe (`probe_providers`): health requests never call a vendor, so something else
must find out whether a live system credential still works while no traffic flows. The
background runtime of each serving process (gateway/worker.py) runs, every
`HEALTH_PROBE_SECONDS`, the provider module's `verify_key` (dispatched through
`resolvers.credentials.KEY_CHECKS`: one cheap authenticated call, e.g. OpenAI's model
list) with the system credential of every provider that has a client, a key check and a
system credential set (never the sandbox, never an unconfigured one), and records
ok/failed with the latency on the registry. The call goes through the shared outbound
layer, so a failing vendor also feeds the provider's breaker, as a real call would.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from kit.logging import scrub
from kit.settings import Settings
from models.store import pending_migrations, store_ready
from providers.errors import ProviderError
from providers.registry import ProbeResult
from resolvers.context import Context, Services
from resolvers.credentials import (
    KEY_CHECKS,
    VERIFY_TIMEOUT,
    IntegrationProvider,
    providers_with_client,
    system_credential,
)
from resolvers.integrations import (
    ProviderHealthReport,
    ProviderStatus,
    forget_snapshot,
    integration_health,
    provider_summary,
    registry_of,
)
from resolvers.operations import operation

log = logging.getLogger("switchboard.health")

MAX_PROBE_ERROR = 300
_FINE = frozenset({ProviderStatus.OPERATIONAL, ProviderStatus.SANDBOX})


class HealthStatus(StrEnum):
    HEALTHY = "HEALTHY"
    DEGRADED = "DEGRADED"
    UNHEALTHY = "UNHEALTHY"


@dataclass(frozen=True, slots=True)
class HealthCheck:
    name: str  # store | migrations | redis
    ok: bool


@dataclass(frozen=True)
class ServiceHealthReport:
    status: HealthStatus
    checks: list[HealthCheck]
    providers: list[ProviderHealthReport]


def overall_status(checks: Mapping[str, bool], providers: Iterable[ProviderStatus]) -> HealthStatus:
    """The rule in the module docstring."""
    if not all(checks.values()):
        return HealthStatus.UNHEALTHY
    if any(status not in _FINE for status in providers):
        return HealthStatus.DEGRADED
    return HealthStatus.HEALTHY


async def readiness_checks(services: Services) -> dict[str, bool]:
    """What this process needs to serve at all: the store, its migrations, Redis if set."""
    checks = {"store": await store_ready()}
    if services.pending_migrations:
        services.pending_migrations = await pending_migrations(services.settings)
    checks["migrations"] = not services.pending_migrations
    if services.settings.redis_url:
        try:
            checks["redis"] = await services.limiter.check_storage()
        except Exception:
            checks["redis"] = False
    return checks


# Providers that stand in for one another: mail leaves through whichever of the chain is
# set up (resolvers/mail/chain.py), so one that is not set up is no fault while another
# one of the group (or the operator's SMTP relay, which has no HTTP client to list) works.
# Payments likewise: an organization pays through Stripe or PayPal, and a gateway set up
# for one of them only is not at fault for the other.
ALTERNATIVES = (
    frozenset({IntegrationProvider.RESEND, IntegrationProvider.SENDGRID}),
    frozenset({IntegrationProvider.STRIPE, IntegrationProvider.PAYPAL}),
)
# Providers reached with each user's own key (Notion: `connectNotion`): no system key is
# expected, so one not set up is no fault.
OWN_KEYS_ONLY = frozenset({IntegrationProvider.NOTION})


def _judged(
    providers: list[ProviderHealthReport], settings: Settings
) -> list[ProviderHealthReport]:
    """The providers the overall status weighs: all but unconfigured stand-ins."""
    skipped = {
        p.provider
        for p in providers
        if p.provider in OWN_KEYS_ONLY and p.status == ProviderStatus.UNCONFIGURED
    }
    for group in ALTERNATIVES:
        members = [p for p in providers if p.provider in group]
        relay = IntegrationProvider.RESEND in group and bool(settings.smtp_host)
        if relay or any(p.status in _FINE for p in members):
            skipped |= {p.provider for p in members if p.status == ProviderStatus.UNCONFIGURED}
    return [p for p in providers if p.provider not in skipped]


def _report(
    checks: dict[str, bool], providers: list[ProviderHealthReport], settings: Settings
) -> ServiceHealthReport:
    return ServiceHealthReport(
        status=overall_status(checks, (p.status for p in _judged(providers, settings))),
        checks=[HealthCheck(name, ok) for name, ok in checks.items()],
        providers=providers,
    )


async def readiness(services: Services) -> ServiceHealthReport:
    """For /health/ready: the checks and the shared view of every listed provider."""
    checks = await readiness_checks(services)
    return _report(checks, await provider_summary(services), services.settings)


@operation("integrations:read")
async def service_health(ctx: Context) -> ServiceHealthReport:
    """For `serviceHealth`: the checks, and the providers as the caller's calls see them."""
    ctx.require_principal()
    checks = await readiness_checks(ctx.services)
    return _report(checks, await integration_health(ctx), ctx.settings)


# -- the probe ----------------------------------------------------------------------------


async def probe_providers(services: Services) -> dict[str, ProbeResult]:
    """One probe round: each provider with a client, a key check and a system credential,
    concurrently. Returns what was recorded, by provider."""
    registry = registry_of(services)
    if registry is None:
        return {}
    ctx = Context(services=services, request_id=f"probe-{uuid.uuid4().hex[:12]}")
    results: dict[str, ProbeResult] = {}

    async def probe(provider: str) -> None:
        check = KEY_CHECKS.get(listed[provider])
        credential = system_credential(services.settings, provider)
        if check is None or credential is None:
            return
        started = time.perf_counter()
        error: str | None = None
        try:
            await asyncio.wait_for(check(ctx, credential), VERIFY_TIMEOUT)
        except ProviderError as err:
            error = scrub(str(err))[:MAX_PROBE_ERROR]
        except TimeoutError:
            error = f"{provider}: no answer within {VERIFY_TIMEOUT:g} s"
        except Exception as exc:  # a bug in a check must not end the probing of the rest
            log.exception("health probe of %s raised", provider)
            error = f"{provider}: {type(exc).__name__}"
        latency = time.perf_counter() - started
        result = registry.record_probe(provider, ok=error is None, latency=latency, error=error)
        if error is not None:
            log.warning(
                "health probe failed: %s",
                error,
                extra={"provider": provider, "failures_in_a_row": result.failures_in_a_row},
            )
        results[provider] = result

    listed = {p.value: p for p in providers_with_client()}
    await asyncio.gather(*(probe(name) for name in listed))
    if results:
        forget_snapshot(services)
    return results

"""The integration error log, each provider's health and the gateway's overall health."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, ClassVar

import strawberry
from strawberry import relay
from strawberry.types import Info

from models.integrations import IntegrationError as IntegrationErrorRow
from resolvers import health, integrations
from resolvers.credentials import CredentialSource, IntegrationProvider
from resolvers.health import HealthStatus, ServiceHealthReport
from resolvers.integrations import ProbeResult, ProviderHealthReport, ProviderStatus
from schema.permissions import query
from schema.relay import After, Connection, First, ModelNode

strawberry.enum(
    ProviderStatus,
    description="How a provider is doing. OPERATIONAL: a real credential, a closed breaker, "
    "no failure since the last success and (for the operator's system key) a good last "
    "probe. SANDBOX: the same, served by the built-in emulator. DEGRADED: calls failed "
    "since the last success, the breaker is probing (half open), or the last probe failed. "
    "DOWN: the breaker is open (calls fail fast), or the last two probes failed. "
    "UNCONFIGURED: no credential reaches it (none stored, no system key, no emulator). "
    "NEEDS_RECONNECTION (Google Calendar, Zoom): the connected account your calls use was "
    "refused by the provider (its grant revoked); connect it again.",
)
strawberry.enum(
    HealthStatus,
    description="The gateway's overall health. HEALTHY: every check passes and every "
    "provider is OPERATIONAL or SANDBOX. DEGRADED: every check passes but a provider is "
    "DEGRADED, DOWN or UNCONFIGURED (the operations it backs fail or may fail). UNHEALTHY: "
    "the store, Redis (when configured) or the migrations check fails (/health/ready "
    "answers 503).",
)


def _at(epoch: float | None) -> dt.datetime | None:
    return None if epoch is None else dt.datetime.fromtimestamp(epoch, dt.UTC)


@strawberry.type(description="One failed call to a third party made for this organization.")
class IntegrationError(ModelNode):
    _model: ClassVar[type] = IntegrationErrorRow
    _permission: ClassVar[str] = "integrations:read"
    id: relay.NodeID[int]
    provider: IntegrationProvider = strawberry.field(description="The service called.")
    operation: str = strawberry.field(description="What was attempted, e.g. `send_email`.")
    status: int | None = strawberry.field(
        description="The vendor's HTTP status; null when no answer came (network, timeout, "
        "breaker open)."
    )
    vendor_code: str | None = strawberry.field(
        description="The vendor's error code, or ours (`timeout`, `circuit_open`…)."
    )
    message: str = strawberry.field(description="What went wrong, with secrets removed.")
    credential_source: CredentialSource | None = strawberry.field(
        description="Which credential the call used."
    )
    duration_ms: float | None = strawberry.field(
        description="How long the call took, retries included, in milliseconds."
    )
    request_id: str | None = strawberry.field(
        description="The request that made the call (see the logs under the same id)."
    )
    created_at: dt.datetime = strawberry.field(description="When it failed.")

    @classmethod
    def from_row(cls, row: Any) -> IntegrationError:
        source = row.credential_source
        return cls(
            id=row.id,
            provider=IntegrationProvider(row.provider),
            operation=row.operation,
            status=row.status,
            vendor_code=row.vendor_code,
            message=row.message,
            credential_source=CredentialSource(source) if source else None,
            duration_ms=row.duration_ms,
            request_id=row.request_id,
            created_at=row.created_at,
        )


@strawberry.type(
    description="The last background probe of a provider's system credential: one cheap "
    "authenticated call (e.g. listing models) every HEALTH_PROBE_SECONDS, by this process."
)
class ProviderProbe:
    ok: bool = strawberry.field(description="Whether the vendor accepted the call.")
    latency_ms: float = strawberry.field(description="How long it took, in milliseconds.")
    at: dt.datetime = strawberry.field(description="When it ended.")
    error: str | None = strawberry.field(description="What failed, secrets removed.")
    failures_in_a_row: int = strawberry.field(
        description="Failed probes since the last good one (0 when this one was good)."
    )

    @classmethod
    def of(cls, probe: ProbeResult | None) -> ProviderProbe | None:
        if probe is None:
            return None
        return cls(
            ok=probe.ok,
            latency_ms=round(probe.latency * 1000, 2),
            at=dt.datetime.fromtimestamp(probe.at, dt.UTC),
            error=probe.error,
            failures_in_a_row=probe.failures_in_a_row,
        )


@strawberry.type(description="How a provider is doing, as this organization's calls see it.")
class ProviderHealth:
    provider: IntegrationProvider = strawberry.field(description="The service.")
    status: ProviderStatus = strawberry.field(description="The summary.")
    credential_source: CredentialSource | None = strawberry.field(
        description="Which credential your calls would use; null when none is available."
    )
    breaker_state: str = strawberry.field(
        description="The circuit breaker: `closed`, `half_open` or `open`."
    )
    consecutive_failures: int = strawberry.field(
        description="Failures since the last success, as the breaker counts them."
    )
    recent_failures: int = strawberry.field(
        description="Failed calls in the last five minutes (this gateway process)."
    )
    last_error: str | None = strawberry.field(description="The last failure, secrets removed.")
    last_error_at: dt.datetime | None = strawberry.field(description="When it happened.")
    latency_ms: float | None = strawberry.field(
        description="Duration of the last completed call, in milliseconds."
    )
    last_success_at: dt.datetime | None = strawberry.field(
        description="When a call last succeeded (this gateway process)."
    )
    probe: ProviderProbe | None = strawberry.field(
        description="The last background probe, when your calls use the operator's system "
        "key (the credential probed); null otherwise or before the first probe."
    )

    @classmethod
    def of(cls, report: ProviderHealthReport) -> ProviderHealth:
        return cls(
            provider=report.provider,
            status=report.status,
            credential_source=report.source,
            breaker_state=report.breaker_state,
            consecutive_failures=report.consecutive_failures,
            recent_failures=report.recent_failures,
            last_error=report.last_error,
            last_error_at=_at(report.last_error_at),
            latency_ms=report.latency_ms,
            last_success_at=_at(report.last_success_at),
            probe=ProviderProbe.of(report.probe),
        )


@strawberry.type(description="One thing the gateway needs in order to serve at all.")
class HealthCheck:
    name: str = strawberry.field(
        description="`store` (the database answers), `migrations` (none pending) or "
        "`redis` (answers; only when REDIS_URL is set)."
    )
    ok: bool = strawberry.field(description="Whether it passed.")


@strawberry.type(description="The gateway's overall health, its checks and its providers.")
class ServiceHealth:
    status: HealthStatus = strawberry.field(
        description="HEALTHY, DEGRADED or UNHEALTHY (see the enum for the rule)."
    )
    checks: list[HealthCheck] = strawberry.field(description="The readiness checks.")
    providers: list[ProviderHealth] = strawberry.field(
        description="Every provider the gateway has a client for, as your calls see it."
    )

    @classmethod
    def of(cls, report: ServiceHealthReport) -> ServiceHealth:
        return cls(
            status=report.status,
            checks=[HealthCheck(name=c.name, ok=c.ok) for c in report.checks],
            providers=[ProviderHealth.of(p) for p in report.providers],
        )


@strawberry.type
class Query:
    @query(
        operation=integrations.list_errors,
        description="Failed calls to third parties made for this organization, newest first.",
    )
    async def integration_errors(
        self,
        info: Info,
        first: First = None,
        after: After = None,
        provider: Annotated[
            IntegrationProvider | None,
            strawberry.argument(description="Only errors of this provider."),
        ] = None,
    ) -> Connection[IntegrationError]:
        page = await integrations.list_errors(
            info.context, first=first, after=after, provider=provider
        )
        return Connection.of(page, IntegrationError.from_row)

    @query(
        operation=integrations.integration_health,
        description="Each provider the gateway has a client for: its status (operational, "
        "sandbox, degraded, down, unconfigured), last error, latency and last probe. Read "
        "from the gateway's own counters and the background probe: no vendor is called.",
    )
    async def integration_health(self, info: Info) -> list[ProviderHealth]:
        reports = await integrations.integration_health(info.context)
        return [ProviderHealth.of(r) for r in reports]

    @query(
        operation=health.service_health,
        description="The gateway's overall health (healthy, degraded, unhealthy), its "
        "readiness checks and each provider as your calls see it. No vendor is called.",
    )
    async def service_health(self, info: Info) -> ServiceHealth:
        return ServiceHealth.of(await health.service_health(info.context))

"""The integration error log and each provider's health."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, ClassVar

import strawberry
from strawberry import relay
from strawberry.types import Info

from models.integrations import IntegrationError as IntegrationErrorRow
from resolvers import integrations
from resolvers.credentials import CredentialSource, IntegrationProvider
from resolvers.integrations import ProviderHealthReport, ProviderStatus
from schema.permissions import query
from schema.relay import After, Connection, First, ModelNode

strawberry.enum(
    ProviderStatus,
    description="LIVE: a real credential and a closed breaker. SANDBOX: served by the "
    "built-in emulator. DEGRADED: recent failures or the breaker is probing. DOWN: the "
    "breaker is open and calls fail fast. UNCONFIGURED: no credential and no sandbox.",
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
        )


@strawberry.type
class Query:
    @query(
        permission="integrations:read",
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
        permission="integrations:read",
        description="Each provider's status (live, sandbox, degraded, down, unconfigured), "
        "last error and latency. Read from the gateway's own counters: no vendor is called.",
    )
    async def integration_health(self, info: Info) -> list[ProviderHealth]:
        reports = await integrations.integration_health(info.context)
        return [ProviderHealth.of(r) for r in reports]

"""The one error every provider client raises, and the failure event the layer reports.

`ProviderError` carries what a caller needs to decide: the provider and operation,
the vendor's HTTP status and error code (when it answered), a message fit for a
log line (never a credential), whether trying again later can help, and how long
to wait. `resolvers/upstream.py` turns it into a coded gateway error.

`FailureEvent` is what `providers.http` hands to every `on_failure` hook for each
failed call (after its retries): the integration error log is written from it by
a hook the app installs, because providers/ must not import models/.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Caller errors: the vendor refused the caller's data. Retrying the same call
# cannot help and says nothing about the vendor's health.
_NOT_CALLER_ERRORS = frozenset({401, 403, 408, 429})
AUTH_STATUSES = frozenset({401, 403})


class ProviderError(Exception):
    """A call to a third party failed (after retries, or without touching the network)."""

    def __init__(
        self,
        provider: str,
        operation: str,
        status: int | None = None,
        vendor_code: str | None = None,
        message: str = "",
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        self.provider = provider
        self.operation = operation
        self.status = status
        self.vendor_code = vendor_code
        self.message = message or (f"HTTP {status}" if status else "call failed")
        self.retryable = retryable
        self.retry_after = retry_after
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = f"{self.provider}.{self.operation}"
        status = f" {self.status}" if self.status is not None else ""
        code = f" [{self.vendor_code}]" if self.vendor_code else ""
        return f"{where}:{status}{code} {self.message}"

    def __repr__(self) -> str:
        return (
            f"ProviderError(provider={self.provider!r}, operation={self.operation!r}, "
            f"status={self.status!r}, vendor_code={self.vendor_code!r}, "
            f"retryable={self.retryable!r}, retry_after={self.retry_after!r})"
        )

    @property
    def is_caller_error(self) -> bool:
        """The vendor rejected the caller's data (a 4xx other than 401/403/408/429)."""
        return (
            self.status is not None
            and 400 <= self.status < 500
            and (self.status not in _NOT_CALLER_ERRORS)
        )

    @property
    def is_auth_error(self) -> bool:
        """The credential was refused (missing, invalid, revoked, not allowed)."""
        return self.status in AUTH_STATUSES


class CircuitOpen(ProviderError):
    """The breaker is open: the call failed fast without touching the network."""

    def __init__(
        self, provider: str, operation: str, retry_after: float | None, *, scope: str
    ) -> None:
        super().__init__(
            provider,
            operation,
            status=None,
            vendor_code="circuit_open",
            message=f"{provider} is failing; calls are paused ({scope} breaker open)",
            retryable=True,
            retry_after=retry_after,
        )
        self.scope = scope


class RateLimitedLocally(ProviderError):
    """Our own outbound budget for the provider is spent for longer than we wait."""

    def __init__(self, provider: str, operation: str, retry_after: float) -> None:
        super().__init__(
            provider,
            operation,
            status=None,
            vendor_code="outbound_rate_limit",
            message=f"outbound rate limit for {provider} reached",
            retryable=True,
            retry_after=retry_after,
        )


@dataclass(frozen=True, slots=True)
class FailureEvent:
    """One failed call, as reported to `on_failure` hooks (after all its attempts)."""

    provider: str
    operation: str
    status: int | None
    vendor_code: str | None
    message: str
    duration: float  # seconds, the whole call including retries
    attempts: int = 1
    retryable: bool = False
    credential_fingerprint: str | None = None  # sha256 prefix, never the secret
    labels: dict[str, str] = field(default_factory=dict)  # e.g. tenant id, set by the caller

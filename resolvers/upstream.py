"""From provider failures to coded gateway errors, and the way resolvers reach providers.

`to_gateway_error(err)`:
- the vendor refused the caller's data (a 4xx other than 401/403/408/429) →
  `BadUserInput` (BAD_USER_INPUT), details naming `field` with the vendor's message;
- anything else (5xx, timeouts, cut connections, 429s, refused credentials, an open
  breaker, our own outbound limit) → `UpstreamUnavailable` (UPSTREAM_UNAVAILABLE)
  with `provider` and `retryAfter` when known.

Vendor messages pass through `kit.logging.scrub` so an echoed key never
reaches an answer. Resolvers catch `ProviderError` where they have something to do
about it (bill the failed call, undo what they stored) and raise this mapping.
"""

from __future__ import annotations

from kit.errors import BadUserInput, GatewayError, UpstreamUnavailable
from kit.logging import scrub
from providers.errors import CircuitOpen, ProviderError
from providers.registry import ProviderRegistry
from resolvers.context import Services

_MESSAGE_LIMIT = 300


def to_gateway_error(err: ProviderError, *, field: str = "input") -> GatewayError:
    vendor_message = scrub(err.message)[:_MESSAGE_LIMIT]
    if err.is_caller_error:
        return BadUserInput(
            f"{err.provider} rejected the request: {vendor_message}",
            details={field: vendor_message},
            provider=err.provider,
            vendorCode=err.vendor_code,
        )
    if isinstance(err, CircuitOpen):
        message = f"{err.provider} is unavailable right now; try again later."
    elif err.is_auth_error:
        message = f"{err.provider} refused the configured credential."
    else:
        message = f"{err.provider} is unavailable right now; try again later."
    return UpstreamUnavailable(
        message,
        provider=err.provider,
        retry_after=err.retry_after,
        vendorCode=err.vendor_code,
    )


def provider_registry(services: Services) -> ProviderRegistry:
    """The app's registry (`Services.providers`, built by gateway/app.py)."""
    registry = services.providers
    if registry is None:
        raise RuntimeError("the provider registry is not configured (see gateway/app.py)")
    return registry

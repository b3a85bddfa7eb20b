"""The error types every layer raises; GraphQL and HTTP turn them into coded answers.

Each carries a stable `code` (DESIGN.md's list) and extra `extensions`. Anything that
is not a `GatewayError` is unexpected: masked in answers, logged with the request id.
"""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    code = "INTERNAL_SERVER_ERROR"
    http_status = 500

    def __init__(self, message: str, **extensions: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extensions = {k: v for k, v in extensions.items() if v is not None}

    def as_extensions(self) -> dict[str, Any]:
        return {"code": self.code, **self.extensions}


class Unauthenticated(GatewayError):
    code = "UNAUTHENTICATED"
    http_status = 401

    def __init__(self, message: str = "Authentication required.", **extensions: Any) -> None:
        super().__init__(message, **extensions)


class Forbidden(GatewayError):
    code = "FORBIDDEN"
    http_status = 403

    def __init__(self, message: str = "You are not allowed to do this.", **ext: Any) -> None:
        super().__init__(message, **ext)


class NotFound(GatewayError):
    code = "NOT_FOUND"
    http_status = 404

    def __init__(self, message: str = "Not found.", **extensions: Any) -> None:
        super().__init__(message, **extensions)


class BadUserInput(GatewayError):
    """Invalid input; `details` maps each offending field to what is wrong with it."""

    code = "BAD_USER_INPUT"
    http_status = 400

    def __init__(
        self, message: str = "Invalid input.", details: dict[str, str] | None = None, **ext: Any
    ) -> None:
        super().__init__(message, details=details or None, **ext)
        self.details = details or {}


class Conflict(GatewayError):
    code = "CONFLICT"
    http_status = 409


class RateLimited(GatewayError):
    code = "RATE_LIMITED"
    http_status = 429

    def __init__(self, retry_after: int, message: str = "Too many requests.", **ext: Any) -> None:
        super().__init__(message, retryAfter=max(1, int(retry_after)), **ext)
        self.retry_after = max(1, int(retry_after))


class QuotaExceeded(GatewayError):
    code = "QUOTA_EXCEEDED"
    http_status = 429


class UpstreamUnavailable(GatewayError):
    """A third party failed or is cut off by its breaker."""

    code = "UPSTREAM_UNAVAILABLE"
    http_status = 503

    def __init__(
        self,
        message: str,
        provider: str,
        retry_after: float | None = None,
        **ext: Any,
    ) -> None:
        super().__init__(
            message,
            provider=provider,
            retryAfter=None if retry_after is None else max(1, round(retry_after)),
            **ext,
        )
        self.provider = provider
        self.retry_after = retry_after


def require(condition: bool, field: str, problem: str) -> None:
    """Raise BAD_USER_INPUT naming `field` unless `condition` holds."""
    if not condition:
        raise BadUserInput(f"{field}: {problem}", details={field: problem})


class PayloadTooLarge(GatewayError):
    """A body or file larger than its limit (`limit`: the most bytes allowed)."""

    code = "PAYLOAD_TOO_LARGE"
    http_status = 413

"""Webhook signatures: Standard Webhooks signing (ours, outgoing) and the one registry
of verifiers for incoming webhooks.

Outgoing (https://www.standardwebhooks.com): the secret is `whsec_<base64 key>`; each
attempt carries `webhook-id`, `webhook-timestamp` (unix seconds, the attempt's time) and
`webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, several
space-separated while a rotated secret is still honoured.

Incoming: a `Verifier` turns (headers, raw body, secret) into a `VerifiedEvent` (vendor
event id, event type, parsed payload) or raises `SignatureInvalid` (401, coded). Adding a
vendor is one small class:

    @register_verifier
    class AcmeVerifier(Verifier):
        name = "acme"
        def verify(self, headers, raw_body, secret, *, now=None) -> VerifiedEvent: ...

Verifiers never raise anything else for hostile input: malformed headers, bad base64,
non-integer timestamps all become `SignatureInvalid`; a body that is authentic but not
JSON is `PayloadInvalid` (400).

Leaf module: imports nothing above `gateway/`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from gateway.errors import GatewayError

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
DEFAULT_TOLERANCE_SECONDS = 300


# Errors ---------------------------------------------------------------------------------


class SignatureInvalid(GatewayError):
    """The request is not provably from the sender: missing, forged or stale signature."""

    code = "WEBHOOK_SIGNATURE_INVALID"
    http_status = 401

    def __init__(self, reason: str, message: str = "Webhook signature is not valid.") -> None:
        super().__init__(message, reason=reason)
        self.reason = reason


class PayloadInvalid(GatewayError):
    """An authentic request whose body cannot be understood."""

    code = "WEBHOOK_PAYLOAD_INVALID"
    http_status = 400


# Secrets and signing (Standard Webhooks) -----------------------------------------------


def generate_secret(nbytes: int = SECRET_BYTES) -> str:
    """A new `whsec_…` secret: the prefix and the base64 of `nbytes` random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(nbytes)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret (base64 after the optional prefix)."""
    raw = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret must be whsec_ followed by base64") from None
    if not key:
        raise ValueError("a webhook secret must not be empty")
    return key


def new_message_id() -> str:
    return "msg_" + secrets.token_hex(16)


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature of `"{msg_id}.{timestamp}.{body}"`."""
    to_sign = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), to_sign, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(secrets_: Iterable[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one signature per live secret, space-separated."""
    return " ".join(sign(s, msg_id, timestamp, body) for s in secrets_)


def signed_headers(
    secrets_: Iterable[str], msg_id: str, body: bytes, timestamp: int | None = None
) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": signature_header(secrets_, msg_id, ts, body),
    }


# Verifiers ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerifiedEvent:
    event_id: str
    event_type: str
    payload: Any


def parse_json(raw_body: bytes) -> Any:
    try:
        return json.loads(raw_body)
    except (ValueError, UnicodeDecodeError):
        raise PayloadInvalid("Webhook body is not valid JSON.") from None


def check_timestamp(raw: str | None, tolerance: int, now: float | None) -> int:
    """Parse a unix-seconds header and refuse it outside ±tolerance (replay window)."""
    if raw is None or not raw.strip():
        raise SignatureInvalid("MISSING_TIMESTAMP")
    try:
        ts = int(raw.strip())
    except ValueError:
        raise SignatureInvalid("MALFORMED_TIMESTAMP") from None
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance:
        raise SignatureInvalid(
            "STALE_TIMESTAMP", "Webhook timestamp is outside the allowed window."
        )
    return ts


def _field(payload: Any, *names: str) -> str | None:
    if isinstance(payload, dict):
        for name in names:
            value = payload.get(name)
            if isinstance(value, str | int) and str(value):
                return str(value)
    return None


class Verifier(ABC):
    """Checks one vendor's signature scheme. Instances are stateless and shared."""

    name: ClassVar[str]
    tolerance_seconds: ClassVar[int] = DEFAULT_TOLERANCE_SECONDS
    # Headers kept with the stored event for audit (never ones carrying credentials).
    audit_headers: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def verify(
        self, headers: Mapping[str, str], raw_body: bytes, secret: str, *, now: float | None = None
    ) -> VerifiedEvent:
        """Return the authenticated event or raise SignatureInvalid / PayloadInvalid.

        `headers` is case-insensitive (Starlette's Headers) or has lower-case keys.
        """


V = TypeVar("V", bound=type[Verifier])
VERIFIERS: dict[str, Verifier] = {}


def register_verifier(cls: V) -> V:
    """Class decorator: make `cls` the verifier for provider `cls.name`."""
    if cls.name in VERIFIERS and type(VERIFIERS[cls.name]) is not cls:
        raise ValueError(f"a webhook verifier for {cls.name!r} is already registered")
    VERIFIERS[cls.name] = cls()
    return cls


def get_verifier(provider: str) -> Verifier | None:
    return VERIFIERS.get(provider)


def _get(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    return value


@register_verifier
class HmacSha256Verifier(Verifier):
    """Generic: `X-Signature: sha256=<hex>` (HMAC-SHA256 with the secret as UTF-8).

    Without `X-Webhook-Timestamp` the signed message is the raw body. With it (unix
    seconds, refused outside ±5 min) the signed message is `"{timestamp}.{raw_body}"`,
    so the timestamp cannot be changed without the secret. Several signatures may be
    sent comma-separated (secret rotation); one match is enough. The event id is
    `X-Event-Id`, else the payload's `id`, else the SHA-256 of the body (a byte-identical
    re-send is then a duplicate); the type is `X-Event-Type`, else `type` / `event`.
    """

    name = "generic"
    audit_headers = ("x-event-id", "x-event-type", "x-webhook-timestamp")

    def verify(
        self, headers: Mapping[str, str], raw_body: bytes, secret: str, *, now: float | None = None
    ) -> VerifiedEvent:
        header = _get(headers, "x-signature")
        if not header:
            raise SignatureInvalid("MISSING_SIGNATURE")
        message = raw_body
        stamp = _get(headers, "x-webhook-timestamp")
        if stamp is not None:
            ts = check_timestamp(stamp, self.tolerance_seconds, now)
            message = f"{ts}.".encode() + raw_body
        expected = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
        ok = False
        for part in header.split(","):
            algo, sep, value = part.strip().partition("=")
            if (
                sep
                and algo.lower() == "sha256"
                and hmac.compare_digest(
                    value.strip().lower().encode("ascii", "replace"), expected.encode()
                )
            ):
                ok = True
        if not ok:
            raise SignatureInvalid("SIGNATURE_MISMATCH")
        payload = parse_json(raw_body)
        event_id = (
            _get(headers, "x-event-id")
            or _field(payload, "id")
            or "sha256:" + hashlib.sha256(raw_body).hexdigest()
        )
        event_type = _get(headers, "x-event-type") or _field(payload, "type", "event") or "unknown"
        return VerifiedEvent(event_id[:255], event_type[:100], payload)


@register_verifier
class StandardWebhooksVerifier(Verifier):
    """Standard Webhooks: `webhook-id`, `webhook-timestamp` (±5 min), `webhook-signature`
    (space-separated `v1,<base64>`); the event id is `webhook-id`, the type the payload's
    `type`. Malformed headers (no comma, bad base64, other versions) are refused with 401,
    never an exception."""

    name = "standard"
    audit_headers = ("webhook-id", "webhook-timestamp")
    id_header = "webhook-id"
    timestamp_header = "webhook-timestamp"
    signature_header = "webhook-signature"

    def verify(
        self, headers: Mapping[str, str], raw_body: bytes, secret: str, *, now: float | None = None
    ) -> VerifiedEvent:
        msg_id = _get(headers, self.id_header)
        stamp = _get(headers, self.timestamp_header)
        header = _get(headers, self.signature_header)
        if not msg_id or not header:
            raise SignatureInvalid("MISSING_SIGNATURE")
        ts = check_timestamp(stamp, self.tolerance_seconds, now)
        try:
            expected = sign(secret, msg_id, ts, raw_body).partition(",")[2].encode()
        except ValueError:
            raise SignatureInvalid("BAD_SECRET", "Webhook secret is misconfigured.") from None
        ok = False
        for candidate in header.split():
            version, sep, value = candidate.partition(",")
            if (
                sep
                and version == "v1"
                and hmac.compare_digest(value.encode("ascii", "replace"), expected)
            ):
                ok = True
        if not ok:
            raise SignatureInvalid("SIGNATURE_MISMATCH")
        payload = parse_json(raw_body)
        event_type = _field(payload, "type", "event_type", "event") or "unknown"
        return VerifiedEvent(msg_id[:255], event_type[:100], payload)

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
JSON is `PayloadInvalid` (400). Every event field comes from what was signed, never from
an unsigned header. `parse_json` returns what every store accepts: nesting deeper than
`MAX_JSON_DEPTH` (or deep enough to exhaust Python's recursion), NaN and infinite numbers
are `PayloadInvalid`; NUL characters and lone surrogates in strings and keys (valid JSON
escapes that PostgreSQL's jsonb refuses, and that cannot be encoded as UTF-8) become
U+FFFD, so an authentic event is stored whole instead of failing with a 500 that the
vendor would retry for days.

Signing and the signature comparison are the `standardwebhooks` package's; SendGrid's
ECDSA signatures are checked with `cryptography`.

Vendors: `resend` (Svix: Standard Webhooks under `svix-*` header names), `sendgrid`
(the Event Webhook: ECDSA P-256 over timestamp + body; the "secret" is SendGrid's public
verification key, base64 DER; one POST is a batch of events, stored as one event),
`rossum` (HMAC-SHA256 of the body, hex, in `X-Rossum-Signature-SHA256`), `zoom`
(`x-zm-signature: v0=<hex>`, HMAC-SHA256 of `"v0:{x-zm-request-timestamp}:{body}"`; its
`endpoint.url_validation` handshake answered by `challenge`), `stripe`
(`Stripe-Signature: t=…,v1=…`, HMAC-SHA256 of `"{t}.{body}"` with the whole `whsec_`
string), `twilio` (`X-Twilio-Signature`: base64 HMAC-SHA1 with the auth token over the
full public URL and every POSTed parameter, keys sorted; the URL is part of what is
signed, so verifiers that set `signs_url` are given the public URL the request was
addressed to).

Part of kit/: imports no project package.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import hashlib
import hmac
import json
import math
import re
import secrets
import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key
from standardwebhooks.webhooks import Webhook

from kit.errors import GatewayError

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
DEFAULT_TOLERANCE_SECONDS = 300
MAX_JSON_DEPTH = 64


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


def _webhook(secret: str) -> Webhook:
    """The standardwebhooks library's signer for `secret` (checked as `secret_key` does,
    since the library pads and decodes leniently)."""
    return Webhook(secret_key(secret))


def new_message_id() -> str:
    return "msg_" + secrets.token_hex(16)


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature of `"{msg_id}.{timestamp}.{body}"` (the standardwebhooks
    library's; bodies are the JSON we encode, so always UTF-8)."""
    return _webhook(secret).sign(msg_id, _at(timestamp), body.decode())


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


def _refuse_constant(name: str) -> Any:
    raise PayloadInvalid(f"Webhook body contains {name}, which JSON stores cannot hold.")


def parse_json(raw_body: bytes) -> Any:
    """The body as JSON every store accepts (see the module docstring), or PayloadInvalid."""
    try:
        data = json.loads(raw_body, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError):
        raise PayloadInvalid("Webhook body is not valid JSON.") from None
    except RecursionError:
        raise PayloadInvalid("Webhook body is nested too deeply.") from None
    return _storable(data, 0)


def _storable(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, dict | list):
        if depth >= MAX_JSON_DEPTH:
            raise PayloadInvalid(f"Webhook body is nested deeper than {MAX_JSON_DEPTH} levels.")
        if isinstance(value, list):
            return [_storable(v, depth + 1) for v in value]
        return {_text(k): _storable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        raise PayloadInvalid("Webhook body contains a number too large to store.")
    return value


def _text(value: str) -> str:
    """`value` without NUL and lone surrogates (U+FFFD in their place)."""
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (pairs were joined by the parser)
        value = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in value)
    return value


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
    # Whether a source may be created without a secret (a `whsec_` one is generated);
    # False where the vendor hands over the key (SendGrid's public key).
    generates_secret: ClassVar[bool] = True
    # What the secret is, for a refusal's message.
    secret_hint: ClassVar[str] = "whsec_ must be followed by base64"
    # The vendor signs the URL it posted to: `verify` takes `url=` (the public URL).
    signs_url: ClassVar[bool] = False
    # The vendor signs with a certificate it names in a header (`certificate_header`, a
    # URL): the caller fetches it (after checking the URL) and `verify` takes
    # `certificate=` (PEM bytes).
    needs_certificate: ClassVar[bool] = False
    certificate_header: ClassVar[str] = ""

    def check_secret(self, secret: str) -> None:
        """Raise ValueError when `secret` cannot work with this verifier (on saving it)."""
        if secret.startswith(SECRET_PREFIX):
            secret_key(secret)

    def challenge(self, event: VerifiedEvent, secret: str) -> dict[str, Any] | None:
        """The answer to an authentic handshake (a vendor checking that the endpoint is
        ours), which is answered and not stored; None for a real event."""
        return None

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
    """Generic: HMAC-SHA256 of the raw body with the secret as UTF-8, hex, in the forms
    vendors send it: `X-Signature: sha256=<hex>`, bare hex in `X-Signature`, or
    `X-Webhook-Signature: <hex>` (with or without `sha256=`).

    Without `X-Webhook-Timestamp` the signed message is the raw body. With it (unix
    seconds, refused outside ±5 min) the signed message is `"{timestamp}.{raw_body}"`,
    so the timestamp cannot be changed without the secret. Several signatures may be
    sent comma-separated (secret rotation); one match is enough. The event id and type
    come from the signed body only (`id`; `type` / `event`): unsigned headers such as
    `X-Event-Id` / `X-Event-Type` could otherwise store one signed body many times, or
    retype it. A body without an id is known by its SHA-256 (a byte-identical re-send
    is a duplicate).
    """

    name = "generic"
    audit_headers = ("x-webhook-timestamp",)
    signature_headers = ("x-signature", "x-webhook-signature")

    def verify(
        self, headers: Mapping[str, str], raw_body: bytes, secret: str, *, now: float | None = None
    ) -> VerifiedEvent:
        sent = [v for v in (_get(headers, h) for h in self.signature_headers) if v]
        if not sent:
            raise SignatureInvalid("MISSING_SIGNATURE")
        message = raw_body
        stamp = _get(headers, "x-webhook-timestamp")
        if stamp is not None:
            ts = check_timestamp(stamp, self.tolerance_seconds, now)
            message = f"{ts}.".encode() + raw_body
        expected = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest().encode()
        ok = False
        for part in (p for header in sent for p in header.split(",")):
            algo, sep, value = part.strip().rpartition("=")
            if sep and algo.strip().lower() != "sha256":
                continue  # another algorithm's signature
            if hmac.compare_digest(value.strip().lower().encode("ascii", "replace"), expected):
                ok = True
        if not ok:
            raise SignatureInvalid("SIGNATURE_MISMATCH")
        payload = parse_json(raw_body)
        event_id = _field(payload, "id") or "sha256:" + hashlib.sha256(raw_body).hexdigest()
        event_type = _field(payload, "type", "event") or "unknown"
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
            webhook = _webhook(secret)
        except ValueError:
            raise SignatureInvalid("BAD_SECRET", "Webhook secret is misconfigured.") from None
        # Only well-formed `v1,<base64>` candidates reach the library, which would raise
        # on others (no comma, bad base64) instead of trying the next one.
        candidates = [c for c in header.split() if _well_formed(c)]
        if not candidates:
            raise SignatureInvalid("SIGNATURE_MISMATCH")
        try:
            # The library's signature of what was sent, at the timestamp checked above
            # (its own verify() reads the clock itself, which tests cannot set).
            expected = webhook.sign(msg_id, _at(ts), raw_body.decode())
        except ValueError:  # not UTF-8: it cannot carry a valid signature
            raise SignatureInvalid("SIGNATURE_MISMATCH") from None
        if not any(hmac.compare_digest(c, expected) for c in candidates):
            raise SignatureInvalid("SIGNATURE_MISMATCH")
        payload = parse_json(raw_body)
        event_type = _field(payload, "type", "event_type", "event") or "unknown"
        return VerifiedEvent(msg_id[:255], event_type[:100], payload)


@register_verifier
class ResendVerifier(StandardWebhooksVerifier):
    """Resend signs through Svix: Standard Webhooks under `svix-id`, `svix-timestamp` and
    `svix-signature`, with the `whsec_` secret Resend shows for the endpoint."""

    name = "resend"
    audit_headers = ("svix-id", "svix-timestamp")
    id_header = "svix-id"
    timestamp_header = "svix-timestamp"
    signature_header = "svix-signature"


# An ECDSA P-256 signature in DER is at most 72 bytes (96 in base64); a public key's
# DER SubjectPublicKeyInfo 91. Anything much longer is refused before decoding.
_MAX_SIGNATURE_CHARS = 200
_MAX_KEY_CHARS = 1000


@functools.lru_cache(maxsize=256)
def _sendgrid_key(secret: str) -> ec.EllipticCurvePublicKey:
    """SendGrid's verification key from its base64 DER SubjectPublicKeyInfo (a PEM
    block is accepted too); ValueError when it is not a P-256 public key."""
    text = secret.strip()
    if len(text) > _MAX_KEY_CHARS:
        raise ValueError("the key is too long")
    if text.startswith("-----BEGIN PUBLIC KEY-----"):
        text = "".join(line for line in text.splitlines() if not line.startswith("-----"))
    try:
        der = base64.b64decode("".join(text.split()), validate=True)
        key = load_der_public_key(der)
    except (binascii.Error, ValueError, UnsupportedAlgorithm):
        raise ValueError("not a base64 DER public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("not an ECDSA P-256 public key")
    return key


@register_verifier
class SendGridVerifier(Verifier):
    """SendGrid's signed Event Webhook: `X-Twilio-Email-Event-Webhook-Signature` (base64
    DER ECDSA P-256/SHA-256) over `X-Twilio-Email-Event-Webhook-Timestamp` + the raw
    body, checked with the source's public key (base64 DER, from SendGrid's Mail
    Settings or `GET /v3/user/webhooks/event/settings/signed`). The timestamp is refused
    outside ±5 min.

    One POST carries a batch of events (a JSON array), stored as one inbox event of type
    `batch` whose payload is the whole array; its id is the SHA-256 of the body, so a
    batch SendGrid posts again is recognised as a duplicate."""

    name = "sendgrid"
    audit_headers = ("x-twilio-email-event-webhook-timestamp",)
    signature_header = "X-Twilio-Email-Event-Webhook-Signature"
    timestamp_header = "X-Twilio-Email-Event-Webhook-Timestamp"
    event_type = "batch"
    generates_secret = False
    secret_hint = "must be SendGrid's verification key: base64 DER of an ECDSA P-256 public key"

    def check_secret(self, secret: str) -> None:
        _sendgrid_key(secret)

    def verify(
        self, headers: Mapping[str, str], raw_body: bytes, secret: str, *, now: float | None = None
    ) -> VerifiedEvent:
        sent = _get(headers, self.signature_header)
        stamp = _get(headers, self.timestamp_header)
        if not sent or not sent.strip():
            raise SignatureInvalid("MISSING_SIGNATURE")
        if stamp is not None and len(stamp) > 20:
            raise SignatureInvalid("MALFORMED_TIMESTAMP")
        check_timestamp(stamp, self.tolerance_seconds, now)
        try:
            key = _sendgrid_key(secret)
        except ValueError:
            raise SignatureInvalid("BAD_SECRET", "Webhook secret is misconfigured.") from None
        sent = sent.strip()
        if len(sent) > _MAX_SIGNATURE_CHARS:
            raise SignatureInvalid("SIGNATURE_MISMATCH")
        try:
            signature = base64.b64decode(sent, validate=True)
        except (binascii.Error, ValueError):
            raise SignatureInvalid("SIGNATURE_MISMATCH") from None
        # SendGrid signs the timestamp exactly as the header carries it (checked above).
        signed = (stamp or "").strip().encode() + raw_body
        try:
            key.verify(signature, signed, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):  # a forgery, or DER that does not parse
            raise SignatureInvalid("SIGNATURE_MISMATCH") from None
        payload = parse_json(raw_body)
        if not isinstance(payload, list):
            raise PayloadInvalid("A SendGrid Event Webhook body is a JSON array of events.")
        event_id = "sha256:" + hashlib.sha256(raw_body).hexdigest()
        return VerifiedEvent(event_id, self.event_type, payload)


def _well_formed(candidate: str) -> bool:
    version, sep, value = candidate.partition(",")
    if not sep or version != "v1":
        return False
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _at(timestamp: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC)


@register_verifier
class RossumVerifier(Verifier):
    """Rossum's hooks: `X-Rossum-Signature-SHA256: sha256=<hex>`, the HMAC-SHA256 of the
    raw body with the hook's secret (as UTF-8; any string Rossum accepts as a hook secret,
    a generated `whsec_…` one included, used whole). Rossum signs no timestamp, so a replay
    is caught by the event id alone: the payload's `request_id` (the SHA-256 of the body
    when absent), stored once.

    The legacy `X-Elis-Signature` (HMAC-SHA1) is not accepted: Rossum sends the SHA-256
    header with every hook, and taking the weaker one as well would let a request that
    carries only it through on SHA-1's strength alone. The event type is
    `{event}.{action}` (`annotation_status.changed`, `annotation_content.initialize`)."""

    name = "rossum"
    audit_headers = ()
    signature_header = "X-Rossum-Signature-SHA256"
    secret_hint = "any string of 8 to 1000 characters (the hook's secret in Rossum)"

    def check_secret(self, secret: str) -> None:
        """Rossum takes any string as a hook secret: it is used as it is."""

    def verify(
        self, headers: Mapping[str, str], raw_body: bytes, secret: str, *, now: float | None = None
    ) -> VerifiedEvent:
        sent = _get(headers, self.signature_header)
        if not sent or not sent.strip():
            raise SignatureInvalid("MISSING_SIGNATURE")
        algo, sep, value = sent.strip().partition("=")
        if not sep or algo.strip().lower() != "sha256" or len(value) > 128:
            raise SignatureInvalid("SIGNATURE_MISMATCH")
        expected = hmac.new(secret.encode(), raw_body, hashlib.sha256).hexdigest().encode()
        if not hmac.compare_digest(value.strip().lower().encode("ascii", "replace"), expected):
            raise SignatureInvalid("SIGNATURE_MISMATCH")
        payload = parse_json(raw_body)
        if not isinstance(payload, dict):
            raise PayloadInvalid("A Rossum hook body is a JSON object.")
        event_id = _field(payload, "request_id") or "sha256:" + hashlib.sha256(raw_body).hexdigest()
        event = _field(payload, "event") or "unknown"
        action = _field(payload, "action")
        event_type = f"{event}.{action}" if action else event
        return VerifiedEvent(event_id[:255], event_type[:100], payload)


_MAX_STRIPE_HEADER = 2000


@register_verifier
class StripeVerifier(Verifier):
    """Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]`, HMAC-SHA256 over
    `"{t}.{raw_body}"` with the endpoint's whole `whsec_…` secret as UTF-8 (not base64
    decoded), refused outside ±5 minutes (a replay of an old delivery). Several `v1`
    values come while a secret is being rolled: one match is enough; other schemes
    (`v0`, test-mode signatures) are ignored. The event id and type are the signed
    body's `id` and `type` (`evt_…`, `payment_intent.succeeded`)."""

    name = "stripe"
    audit_headers = ()
    signature_header = "Stripe-Signature"
    secret_hint = "the endpoint's signing secret (whsec_…) from Stripe"

    def check_secret(self, secret: str) -> None:
        """Stripe's secret is used as it is (a `whsec_` string, never decoded)."""
        if not secret.startswith(SECRET_PREFIX):
            raise ValueError("a Stripe signing secret starts with whsec_")

    def verify(
        self, headers: Mapping[str, str], raw_body: bytes, secret: str, *, now: float | None = None
    ) -> VerifiedEvent:
        header = _get(headers, self.signature_header)
        if not header or not header.strip():
            raise SignatureInvalid("MISSING_SIGNATURE")
        if len(header) > _MAX_STRIPE_HEADER:
            raise SignatureInvalid("SIGNATURE_MISMATCH")
        stamp: str | None = None
        sent: list[str] = []
        for item in header.split(","):
            key, sep, value = item.strip().partition("=")
            if not sep:
                continue
            if key == "t" and stamp is None:
                stamp = value
            elif key == "v1":
                sent.append(value.strip().lower())
        if stamp is None:
            raise SignatureInvalid("MISSING_TIMESTAMP")
        ts = check_timestamp(stamp, self.tolerance_seconds, now)
        if not sent:
            raise SignatureInvalid("MISSING_SIGNATURE")
        expected = hmac.new(
            secret.encode(), f"{ts}.".encode() + raw_body, hashlib.sha256
        ).hexdigest()
        if not any(
            hmac.compare_digest(s.encode("ascii", "replace"), expected.encode()) for s in sent
        ):
            raise SignatureInvalid("SIGNATURE_MISMATCH")
        payload = parse_json(raw_body)
        if not isinstance(payload, dict):
            raise PayloadInvalid("A Stripe event is a JSON object.")
        event_id = _field(payload, "id")
        if event_id is None:
            raise PayloadInvalid("A Stripe event has an id.")
        event_type = _field(payload, "type") or "unknown"
        return VerifiedEvent(event_id[:255], event_type[:100], payload)


# Twilio ---------------------------------------------------------------------------------

_MAX_TWILIO_SIGNATURE_CHARS = 100  # base64 of a 20-byte HMAC-SHA1 is 28 characters


def twilio_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """`X-Twilio-Signature` for a POST of `params` to `url`: base64 HMAC-SHA1 with the auth
    token over the URL followed by each parameter name and value, names sorted (a name
    sent several times: its distinct values sorted), as Twilio signs its requests."""
    grouped: dict[str, set[str]] = {}
    for name, value in params:
        grouped.setdefault(name, set()).add(value)
    message = url + "".join(
        name + value for name in sorted(grouped) for value in sorted(grouped[name])
    )
    digest = hmac.new(auth_token.encode(), message.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _url_variants(url: str) -> list[str]:
    """The URL as given, and with the scheme's default port added or removed: Twilio may
    sign either form (its own validator accepts both)."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return [url]
    default = {"https": 443, "http": 80}.get(parts.scheme)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    if port is None and default is not None:
        other = urlunsplit(parts._replace(netloc=f"{prefix}{host}:{default}"))
    elif port is not None and port == default:
        other = urlunsplit(parts._replace(netloc=f"{prefix}{host}"))
    else:
        return [url]
    return [url, other]


MAX_TWILIO_PARAMS = 200


def parse_form(raw_body: bytes) -> list[tuple[str, str]]:
    """An `application/x-www-form-urlencoded` body as (name, value) pairs; PayloadInvalid
    when it is not one (bad UTF-8, too many fields)."""
    from urllib.parse import parse_qsl

    try:
        text = raw_body.decode("utf-8")
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=bool(text),
            max_num_fields=MAX_TWILIO_PARAMS,
        )
    except (UnicodeDecodeError, ValueError):
        raise PayloadInvalid("Webhook body is not a form.") from None
    return pairs


@register_verifier
class TwilioVerifier(Verifier):
    """Twilio's signed requests (status callbacks and incoming messages):
    `X-Twilio-Signature`, the base64 HMAC-SHA1 with the account's auth token over the exact
    public URL the request was sent to and the form parameters (`twilio_signature`). A
    request signed for another URL (another source's token, another path) is refused.

    Twilio signs no timestamp: a replay is caught by the event id alone, from the signed
    parameters. A status callback (it carries `MessageStatus`) is `message.status` with
    the id `{MessageSid}:{MessageStatus}` (each status of a message once); an incoming
    message is `message.inbound` with its `MessageSid`. The payload is the parameters as
    an object (NUL characters replaced, as for JSON bodies)."""

    name = "twilio"
    audit_headers = ("i-twilio-idempotency-token",)
    signature_header = "X-Twilio-Signature"
    generates_secret = False
    secret_hint = "must be the Twilio account's auth token"
    signs_url = True

    def check_secret(self, secret: str) -> None:
        if not secret.strip() or any(ord(c) < 33 for c in secret):
            raise ValueError("an auth token is printable text without spaces")

    def verify(
        self,
        headers: Mapping[str, str],
        raw_body: bytes,
        secret: str,
        *,
        now: float | None = None,
        url: str | None = None,
    ) -> VerifiedEvent:
        sent = _get(headers, self.signature_header)
        if not sent or not sent.strip():
            raise SignatureInvalid("MISSING_SIGNATURE")
        sent = sent.strip()
        if len(sent) > _MAX_TWILIO_SIGNATURE_CHARS or not url:
            raise SignatureInvalid("SIGNATURE_MISMATCH")
        try:
            pairs = parse_form(raw_body)
        except PayloadInvalid:
            raise SignatureInvalid("SIGNATURE_MISMATCH") from None  # nothing Twilio signs
        given = sent.encode("ascii", "replace")
        if not any(
            hmac.compare_digest(twilio_signature(secret, variant, pairs).encode(), given)
            for variant in _url_variants(url)
        ):
            raise SignatureInvalid("SIGNATURE_MISMATCH")
        payload: dict[str, str] = {}
        for name, value in pairs:
            payload.setdefault(_text(name)[:100], _text(value)[:5000])
        sid = payload.get("MessageSid") or payload.get("SmsSid") or ""
        if not sid:
            raise PayloadInvalid("A Twilio message request carries a MessageSid.")
        status = payload.get("MessageStatus")
        if status:
            return VerifiedEvent(f"{sid}:{status}"[:255], "message.status", payload)
        return VerifiedEvent(sid[:255], "message.inbound", payload)


# PayPal ---------------------------------------------------------------------------------

_MAX_PAYPAL_HEADER = 1000
_PAYPAL_WEBHOOK_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def paypal_message(
    transmission_id: str, transmission_time: str, webhook_id: str, body: bytes
) -> bytes:
    """What PayPal signs: `"{transmission id}|{transmission time}|{webhook id}|{crc32}"`,
    the CRC32 of the raw body unsigned, in decimal."""
    crc = zlib.crc32(body) & 0xFFFFFFFF
    return f"{transmission_id}|{transmission_time}|{webhook_id}|{crc}".encode()


def _paypal_time(raw: str, tolerance: int, now: float | None) -> None:
    try:
        at = dt.datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        raise SignatureInvalid("MALFORMED_TIMESTAMP") from None
    if at.tzinfo is None:
        raise SignatureInvalid("MALFORMED_TIMESTAMP")
    current = time.time() if now is None else now
    if abs(current - at.timestamp()) > tolerance:
        raise SignatureInvalid(
            "STALE_TIMESTAMP", "Webhook timestamp is outside the allowed window."
        )


@register_verifier
class PayPalVerifier(Verifier):
    """PayPal's webhooks, checked offline as PayPal documents: RSA PKCS#1 v1.5 with SHA-256
    (`PAYPAL-AUTH-ALGO: SHA256withRSA`) over `paypal_message(...)`, the signature base64 in
    `PAYPAL-TRANSMISSION-SIG`, with the certificate named by `PAYPAL-CERT-URL` (fetched by
    the caller, who checks that URL's host first: `needs_certificate`). The "secret" is the
    webhook's id at PayPal: a delivery signed for another webhook is refused. The
    transmission time must be within ±5 minutes (a replayed delivery), and the certificate
    within its validity dates. The event id and type are the signed body's `id` and
    `event_type` (`WH-…`, `PAYMENT.CAPTURE.COMPLETED`)."""

    name = "paypal"
    audit_headers = ("paypal-transmission-id", "paypal-cert-url")
    generates_secret = False
    secret_hint = "must be the webhook's id at PayPal (letters, digits, - and _)"
    needs_certificate = True
    certificate_header = "PAYPAL-CERT-URL"

    def check_secret(self, secret: str) -> None:
        if not _PAYPAL_WEBHOOK_ID.match(secret):
            raise ValueError(self.secret_hint)

    def verify(
        self,
        headers: Mapping[str, str],
        raw_body: bytes,
        secret: str,
        *,
        now: float | None = None,
        certificate: bytes | None = None,
    ) -> VerifiedEvent:
        values = {}
        for name in ("transmission-id", "transmission-time", "transmission-sig", "auth-algo"):
            value = _get(headers, f"paypal-{name}")
            if not value or not value.strip() or len(value) > _MAX_PAYPAL_HEADER:
                raise SignatureInvalid("MISSING_SIGNATURE")
            values[name] = value.strip()
        if values["auth-algo"].upper() != "SHA256WITHRSA":
            raise SignatureInvalid("UNSUPPORTED_ALGORITHM")
        _paypal_time(values["transmission-time"], self.tolerance_seconds, now)
        if certificate is None:
            raise SignatureInvalid("CERTIFICATE_UNAVAILABLE")
        try:
            cert = x509.load_pem_x509_certificate(certificate)
            key = cert.public_key()
            signature = base64.b64decode(values["transmission-sig"], validate=True)
        except (ValueError, binascii.Error, UnsupportedAlgorithm):
            raise SignatureInvalid("SIGNATURE_MISMATCH") from None
        current = dt.datetime.fromtimestamp(time.time() if now is None else now, dt.UTC)
        if not cert.not_valid_before_utc <= current <= cert.not_valid_after_utc:
            raise SignatureInvalid("CERTIFICATE_EXPIRED")
        if not isinstance(key, rsa.RSAPublicKey):
            raise SignatureInvalid("UNSUPPORTED_ALGORITHM")
        message = paypal_message(
            values["transmission-id"], values["transmission-time"], secret, raw_body
        )
        try:
            key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise SignatureInvalid("SIGNATURE_MISMATCH") from None
        payload = parse_json(raw_body)
        if not isinstance(payload, dict):
            raise PayloadInvalid("A PayPal event is a JSON object.")
        event_id = _field(payload, "id")
        if event_id is None:
            raise PayloadInvalid("A PayPal event has an id.")
        event_type = _field(payload, "event_type") or "unknown"
        return VerifiedEvent(event_id[:255], event_type[:100], payload)


# Zoom -------------------------------------------------------------------------------------

_MAX_ZOOM_SIGNATURE_CHARS = 100  # "v0=" and 64 hex characters
ZOOM_URL_VALIDATION = "endpoint.url_validation"


def zoom_signature(secret: str, timestamp: str, raw_body: bytes) -> str:
    """`x-zm-signature` for a body sent at `timestamp`: `v0=` and the hex HMAC-SHA256 with
    the app's secret token over `v0:{timestamp}:{body}`."""
    message = f"v0:{timestamp}:".encode() + raw_body
    return "v0=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


@register_verifier
class ZoomVerifier(Verifier):
    """Zoom's event notifications: `x-zm-request-timestamp` (unix seconds, refused outside
    ±5 minutes) and `x-zm-signature: v0=<hex HMAC-SHA256(secret token,
    "v0:{timestamp}:{raw body}")>`. The event id is `{event}:{object uuid or id}:{event_ts}`
    from the signed body (a re-delivery carries the same `event_ts`; the SHA-256 of the
    body when those are missing). `endpoint.url_validation` (Zoom checking the endpoint,
    every 72 hours) is answered with `{"plainToken", "encryptedToken": hex
    HMAC-SHA256(secret token, plainToken)}` and not stored."""

    name = "zoom"
    audit_headers = ("x-zm-request-timestamp",)
    signature_header = "x-zm-signature"
    timestamp_header = "x-zm-request-timestamp"
    generates_secret = False
    secret_hint = "must be the app's Secret Token from Zoom's Marketplace (Features page)"

    def check_secret(self, secret: str) -> None:
        if not secret.strip() or any(ord(c) < 33 for c in secret):
            raise ValueError("a secret token is printable text without spaces")

    def verify(
        self, headers: Mapping[str, str], raw_body: bytes, secret: str, *, now: float | None = None
    ) -> VerifiedEvent:
        sent = _get(headers, self.signature_header)
        stamp = _get(headers, self.timestamp_header)
        if not sent or not sent.strip():
            raise SignatureInvalid("MISSING_SIGNATURE")
        if stamp is not None and len(stamp) > 20:
            raise SignatureInvalid("MALFORMED_TIMESTAMP")
        ts = check_timestamp(stamp, self.tolerance_seconds, now)
        sent = sent.strip()
        if len(sent) > _MAX_ZOOM_SIGNATURE_CHARS:
            raise SignatureInvalid("SIGNATURE_MISMATCH")
        expected = zoom_signature(secret, str(ts), raw_body)
        if not hmac.compare_digest(sent.encode("ascii", "replace"), expected.encode()):
            raise SignatureInvalid("SIGNATURE_MISMATCH")
        payload = parse_json(raw_body)
        if not isinstance(payload, dict):
            raise PayloadInvalid("A Zoom event is a JSON object.")
        event = _field(payload, "event") or "unknown"
        inner = payload.get("payload")
        obj = inner.get("object") if isinstance(inner, dict) else None
        about = _field(obj, "uuid", "id")
        stamp_ms = _field(payload, "event_ts")
        if about and stamp_ms:
            event_id = f"{event}:{about}:{stamp_ms}"
        else:
            event_id = "sha256:" + hashlib.sha256(raw_body).hexdigest()
        return VerifiedEvent(event_id[:255], event[:100], payload)

    def challenge(self, event: VerifiedEvent, secret: str) -> dict[str, Any] | None:
        if event.event_type != ZOOM_URL_VALIDATION:
            return None
        inner = event.payload.get("payload") if isinstance(event.payload, dict) else None
        plain = inner.get("plainToken") if isinstance(inner, dict) else None
        if not isinstance(plain, str) or not plain or len(plain) > 200:
            raise PayloadInvalid("A Zoom URL validation carries a plainToken.")
        encrypted = hmac.new(secret.encode(), plain.encode(), hashlib.sha256).hexdigest()
        return {"plainToken": plain, "encryptedToken": encrypted}

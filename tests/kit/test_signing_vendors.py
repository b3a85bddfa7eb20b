"""The Resend and SendGrid webhook verifiers, against requests signed the vendors' way.

Resend's are signed with the `svix` package (Resend signs through Svix); SendGrid's with
`cryptography` directly (ECDSA P-256/SHA-256 over timestamp + body), and every one the
verifier accepts is also accepted by SendGrid's own `EventWebhook.verify_signature`.
Nothing here uses the gateway's signing code.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import time

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sendgrid.helpers.eventwebhook import EventWebhook
from svix.webhooks import Webhook as SvixWebhook

from kit.signing import PayloadInvalid, SignatureInvalid, get_verifier

RESEND_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SG_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SG_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"


def public_b64(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


SG_KEY = ec.generate_private_key(ec.SECP256R1())
SG_PUBLIC = public_b64(SG_KEY)


def resend_request(
    payload: dict, *, secret: str = RESEND_SECRET, at: dt.datetime | None = None
) -> tuple[bytes, dict[str, str]]:
    msg_id = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"
    at = at or dt.datetime.now(dt.UTC)
    body = json.dumps(payload)
    signature = SvixWebhook(secret).sign(msg_id, at, body)
    return body.encode(), {
        "svix-id": msg_id,
        "svix-timestamp": str(int(at.timestamp())),
        "svix-signature": signature,
    }


def sendgrid_request(
    events: list, *, key: ec.EllipticCurvePrivateKey = SG_KEY, at: int | None = None
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(events).encode()
    ts = str(at if at is not None else int(time.time()))
    der = key.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))
    return body, {SG_SIGNATURE: base64.b64encode(der).decode(), SG_TIMESTAMP: ts}


def sendgrid_accepts(body: bytes, headers: dict[str, str], public_key: str = SG_PUBLIC) -> bool:
    return EventWebhook(public_key).verify_signature(
        body.decode(), headers[SG_SIGNATURE], headers[SG_TIMESTAMP]
    )


EVENTS = [
    {
        "email": "ada@example.com",
        "timestamp": 1700000000,
        "event": "delivered",
        "sg_event_id": "ZGVsaXZlcmVkLTAtMTIzNDU2",
        "sg_message_id": "W86EgYT6SQKk0lRflfLRsA.filterdrecv-5645d9c87f-1-0.0",
        "email_id": "42",
    }
]


# Resend -------------------------------------------------------------------------------


def test_resend_event_signed_by_svix_verifies() -> None:
    payload = {
        "type": "email.delivered",
        "created_at": "2024-02-22T23:41:12.126Z",
        "data": {"email_id": "56761188-7520-42d8-8898-ff6fc54ce618", "to": ["a@b.co"]},
    }
    body, headers = resend_request(payload)
    event = get_verifier("resend").verify(headers, body, RESEND_SECRET)  # type: ignore[union-attr]
    assert event.event_id == headers["svix-id"]
    assert event.event_type == "email.delivered"
    assert event.payload == payload


@pytest.mark.parametrize("tamper", ["forged", "stale", "body", "webhook_headers", "junk"])
def test_resend_refusals(tamper: str) -> None:
    at = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=6) if tamper == "stale" else None
    secret = "whsec_" + base64.b64encode(b"x" * 24).decode() if tamper == "forged" else None
    body, headers = resend_request({"type": "email.sent"}, secret=secret or RESEND_SECRET, at=at)
    if tamper == "body":
        body = body.replace(b"sent", b"bounced")
    if tamper == "webhook_headers":  # Standard Webhooks names are not Resend's
        headers = {k.replace("svix-", "webhook-"): v for k, v in headers.items()}
    if tamper == "junk":
        headers["svix-signature"] = "v1,@@@ ,,, v1"
    with pytest.raises(SignatureInvalid):
        get_verifier("resend").verify(headers, body, RESEND_SECRET)  # type: ignore[union-attr]


# SendGrid -----------------------------------------------------------------------------


def test_sendgrid_batch_signed_with_cryptography_verifies_as_sendgrid_does() -> None:
    body, headers = sendgrid_request(EVENTS)
    assert sendgrid_accepts(body, headers)
    event = get_verifier("sendgrid").verify(headers, body, SG_PUBLIC)  # type: ignore[union-attr]
    assert event.event_type == "batch"
    assert event.event_id == "sha256:" + hashlib.sha256(body).hexdigest()
    assert event.payload == EVENTS
    # Lower-case header names (some servers hand them over so) work the same.
    lowered = {k.lower(): v for k, v in headers.items()}
    again = get_verifier("sendgrid").verify(lowered, body, SG_PUBLIC)  # type: ignore[union-attr]
    assert again.event_id == event.event_id


def test_sendgrid_accepts_a_pem_public_key() -> None:
    pem = SG_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    body, headers = sendgrid_request(EVENTS)
    get_verifier("sendgrid").verify(headers, body, pem.decode())  # type: ignore[union-attr]


def _truncated_signature(headers: dict[str, str]) -> str:
    der = base64.b64decode(headers[SG_SIGNATURE])
    return base64.b64encode(der[: len(der) // 2]).decode()


@pytest.mark.parametrize(
    "tamper",
    [
        "other_key",
        "other_body",
        "other_timestamp",
        "stale",
        "future",
        "bad_base64",
        "truncated_der",
        "not_der",
        "empty",
        "missing_signature",
        "missing_timestamp",
        "huge_signature",
        "huge_timestamp",
        "nonnumeric_timestamp",
    ],
)
def test_sendgrid_refusals_are_signature_invalid(tamper: str) -> None:
    now = int(time.time())
    key = ec.generate_private_key(ec.SECP256R1()) if tamper == "other_key" else SG_KEY
    at = {"stale": now - 600, "future": now + 600}.get(tamper)
    body, headers = sendgrid_request(EVENTS, key=key, at=at)
    if tamper == "other_body":
        body = body.replace(b"delivered", b"bounce")
    if tamper == "other_timestamp":  # the signature covers the timestamp
        headers[SG_TIMESTAMP] = str(int(headers[SG_TIMESTAMP]) - 1)
    if tamper == "bad_base64":
        headers[SG_SIGNATURE] = "@@not base64@@"
    if tamper == "truncated_der":
        headers[SG_SIGNATURE] = _truncated_signature(headers)
    if tamper == "not_der":
        headers[SG_SIGNATURE] = base64.b64encode(b"\x00" * 64).decode()
    if tamper == "empty":
        headers[SG_SIGNATURE] = "   "
    if tamper == "missing_signature":
        del headers[SG_SIGNATURE]
    if tamper == "missing_timestamp":
        del headers[SG_TIMESTAMP]
    if tamper == "huge_signature":
        headers[SG_SIGNATURE] = "A" * 100_000
    if tamper == "huge_timestamp":
        headers[SG_TIMESTAMP] = "9" * 100_000
    if tamper == "nonnumeric_timestamp":
        headers[SG_TIMESTAMP] = "yesterday"
    with pytest.raises(SignatureInvalid):
        get_verifier("sendgrid").verify(headers, body, SG_PUBLIC)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "secret",
    [
        "not base64 at all!",
        SG_PUBLIC[:40],  # truncated DER
        base64.b64encode(b"\x30\x03\x02\x01\x01").decode(),  # DER, not a key
        public_b64(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        public_b64(ec.generate_private_key(ec.SECP384R1())),  # another curve
        "whsec_" + base64.b64encode(b"k" * 32).decode(),  # an HMAC secret
        "A" * 5000,
    ],
)
def test_sendgrid_bad_keys_are_refused_not_raised(secret: str) -> None:
    body, headers = sendgrid_request(EVENTS)
    verifier = get_verifier("sendgrid")
    assert verifier is not None
    with pytest.raises(SignatureInvalid) as caught:
        verifier.verify(headers, body, secret)
    assert caught.value.reason == "BAD_SECRET"
    with pytest.raises(ValueError):
        verifier.check_secret(secret)


def test_sendgrid_body_must_be_an_array_of_events() -> None:
    verifier = get_verifier("sendgrid")
    assert verifier is not None
    verifier.check_secret(SG_PUBLIC)
    assert not verifier.generates_secret
    body = b'{"event": "delivered"}'
    ts = str(int(time.time()))
    der = SG_KEY.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))
    headers = {SG_SIGNATURE: base64.b64encode(der).decode(), SG_TIMESTAMP: ts}
    with pytest.raises(PayloadInvalid):
        verifier.verify(headers, body, SG_PUBLIC)

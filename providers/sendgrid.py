"""SendGrid (https://www.twilio.com/docs/sendgrid/api-reference): v3 Mail Send over its HTTP API.

No SDK: SendGrid's Python library is synchronous, so the client speaks the documented
API on the shared layer (providers.http): `POST /v3/mail/send` with `Authorization:
Bearer SG.…`, answered `202 Accepted` with an empty body and the message's id in the
`X-Message-Id` header, and `GET /v3/scopes` (the key check, `verify_key`).

Error bodies are `{"errors": [{"message", "field", "help"}]}`: `parse_error` keeps the
first error's `field` as the vendor code (`personalizations.0.to.0.email`), or the
status's name when there is none (`unauthorized`), and every message in the text.

SendGrid has no idempotency key, so a send is never retried by the layer once the
request may have reached SendGrid: only a connection that could not be opened (nothing
was sent) and a 429 (refused before processing) are tried again. A timeout or a cut
connection after the request was written raises at once (`outcome_unknown(err)`): the
mail may or may not have gone, and only the caller can decide what a second try risks.

Which failures are the message's own (`permanent(err)`: 400 invalid message or address,
413 too large — no other provider or try can help) and which are the account's or the
moment's (401/403 our key, 429, 5xx, the network: another provider may do).

The event id SendGrid's Event Webhook reports (`sg_message_id`) is the `X-Message-Id`
followed by `.filter…`: `message_id_of(sg_message_id)` maps it back. Our own id for
the message travels in `custom_args`, which every event repeats at its top level.

SendGrid's documented limit for mail send is 600 requests per minute per key (with
up to 1,000 recipients each); `CONFIG.rate_limit` keeps us under it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.header import Header
from email.headerregistry import Address
from email.utils import parseaddr
from typing import Any

from providers.errors import ProviderError
from providers.http import BearerClient, ProviderConfig, Timeouts
from providers.retry import RetryPolicy

PROVIDER = "sendgrid"
API_URL = "https://api.sendgrid.com"

CONFIG = ProviderConfig(
    name=PROVIDER,
    timeouts=Timeouts(connect=5.0, read=15.0, total=20.0),
    pool_size=20,
    concurrency=20,
    rate_limit="10/second",
    rate_limit_max_wait=2.0,
    retry=RetryPolicy(max_attempts=4, base=0.5, cap=8.0, budget=30.0),
)
# The key check answers in a save or a health probe: short timeouts.
VERIFY_TIMEOUTS = Timeouts(connect=3.0, read=5.0, total=5.0)
MESSAGE_ID_HEADER = "X-Message-Id"
# The layer's codes for a failure after the request may have been written.
_MAYBE_SENT = frozenset({"timeout", "connection_lost"})
# The message itself was refused: bad request (addresses, fields), too large.
_PERMANENT_STATUSES = frozenset({400, 413})
_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}


def parse_error(status: int, headers: Mapping[str, str], body: bytes) -> tuple[str | None, str]:
    """SendGrid's error body: {"errors": [{"message": "...", "field": "from.email",
    "help": "..."}]} -> (first field, or the status's name; every "field: message")."""
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    errors = data.get("errors") if isinstance(data, dict) else None
    default = _STATUS_CODES.get(status) or ("server_error" if status >= 500 else None)
    if isinstance(errors, list) and errors:
        parts: list[str] = []
        code = None
        for item in errors[:10]:
            if not isinstance(item, dict):
                continue
            field = item.get("field")
            message = str(item.get("message") or "").strip()
            if field and code is None:
                code = str(field)
            parts.append(f"{field}: {message}" if field else message)
        return (code or default), "; ".join(p for p in parts if p)
    text = body.decode("utf-8", "replace").strip()[:500] if body else ""
    return default, text


def permanent(err: ProviderError) -> bool:
    """SendGrid refused the message itself (invalid address or field, too large):
    trying again, or through another provider, sends the same refused message."""
    return err.status in _PERMANENT_STATUSES


def outcome_unknown(err: ProviderError) -> bool:
    """The request may have reached SendGrid before the call failed (a timeout or a cut
    connection): the mail may have been sent. Never retried by the layer."""
    return err.status is None and err.vendor_code in _MAYBE_SENT


def message_id_of(sg_message_id: str) -> str:
    """The `X-Message-Id` a send answered, from an event's `sg_message_id`
    (`<X-Message-Id>.filter…`)."""
    return sg_message_id.split(".", 1)[0]


@dataclass(frozen=True, slots=True)
class SentEmail:
    id: str  # the X-Message-Id; events carry it as the start of `sg_message_id`


Recipient = str | Address


def _email_object(value: Recipient, field: str) -> dict[str, str]:
    """`{"email", "name"?}` from `"Name <a@b.co>"`, `"a@b.co"` or a headerregistry
    Address. Header-breaking characters are refused here, before anything is sent."""
    if isinstance(value, Address):
        name, email = value.display_name, value.addr_spec
    else:
        _check_line(value, field)  # parseaddr would read "A\r\nBcc: x@y <a@b>" as x@y
        name, email = parseaddr(value)
    _check_line(name, field)
    _check_line(email, field)
    if not email or "@" not in email:
        raise ValueError(f"{field}: not an email address")
    return {"email": email, "name": name} if name else {"email": email}


def _header_value(name: str, value: str) -> str:
    """A header value as SendGrid wants it: one line, and encoded (RFC 2047) when it is
    not ASCII, which SendGrid leaves to the caller."""
    _check_line(name, "headers")
    _check_line(value, "headers")
    if not name.isascii() or ":" in name or not name.strip():
        raise ValueError(f"headers: {name!r} is not a header name")
    return value if value.isascii() else Header(value, "utf-8").encode()


def _check_line(value: str, field: str) -> None:
    if any(c in value for c in "\r\n\x00"):
        raise ValueError(f"{field}: line breaks are not allowed")


class SendGridClient(BearerClient):
    """One credential's view of SendGrid. Cheap to build per call; the session is shared."""

    API_URL = API_URL

    async def send_email(
        self,
        *,
        sender: Recipient,
        to: Recipient | Sequence[Recipient],
        subject: str,
        text: str | None = None,
        html: str | None = None,
        cc: Sequence[Recipient] = (),
        bcc: Sequence[Recipient] = (),
        reply_to: Recipient | None = None,
        headers: Mapping[str, str] | None = None,
        custom_args: Mapping[str, str] | None = None,
        categories: Sequence[str] = (),
        sandbox_mode: bool = False,
    ) -> SentEmail:
        """Send one message (one personalization: every `to` sees the others, as in one
        SMTP message). Returns SendGrid's `X-Message-Id`.

        `headers`: extra headers (`Message-ID`, `List-Unsubscribe`, …), values one line
        (non-ASCII ones are RFC 2047-encoded here).
        `custom_args`: string pairs repeated in every Event Webhook event (put our email's
        id here to map events back). `sandbox_mode`: SendGrid validates and answers 200
        without sending (nor any event). Raises ValueError for a header-breaking value
        (nothing sent) and ProviderError for SendGrid's refusals (see `permanent`,
        `outcome_unknown`)."""
        recipients = [to] if isinstance(to, str | Address) else list(to)
        personalization: dict[str, Any] = {
            "to": [_email_object(r, "to") for r in recipients],
        }
        if cc:
            personalization["cc"] = [_email_object(r, "cc") for r in cc]
        if bcc:
            personalization["bcc"] = [_email_object(r, "bcc") for r in bcc]
        if custom_args:
            personalization["custom_args"] = {str(k): str(v) for k, v in custom_args.items()}
        # SendGrid wants text/plain first, then text/html.
        content = [
            {"type": kind, "value": value}
            for kind, value in (("text/plain", text), ("text/html", html))
            if value is not None
        ]
        payload: dict[str, Any] = {
            "personalizations": [personalization],
            "from": _email_object(sender, "from"),
            "subject": subject,
            "content": content,
        }
        if reply_to is not None:
            payload["reply_to"] = _email_object(reply_to, "reply_to")
        if headers:
            payload["headers"] = {
                name: _header_value(name, value) for name, value in headers.items()
            }
        if categories:
            payload["categories"] = [str(c) for c in categories]
        if sandbox_mode:
            payload["mail_settings"] = {"sandbox_mode": {"enable": True}}
        # No idempotency key exists: the layer retries only what provably sent nothing.
        response = await self.http.request(
            "POST",
            f"{self.base_url}/v3/mail/send",
            operation="send_email",
            credential=self._api_key,
            headers=self._headers(),
            json=payload,
            parse_error=parse_error,
            labels=self.labels,
            own_credential=self.own_credential,
            guard_url=self.guard_url,
        )
        message_id = response.headers.get(MESSAGE_ID_HEADER, "")
        if not message_id and not sandbox_mode:
            # Accepted (2xx) but unidentifiable: the mail went, events cannot be matched.
            raise ProviderError(
                PROVIDER, "send_email", status=response.status, vendor_code="no_message_id",
                message="accepted without an X-Message-Id", retryable=False,
            )  # fmt: skip
        return SentEmail(id=message_id)

    async def scopes(
        self, *, operation: str = "scopes", timeouts: Timeouts | None = None
    ) -> list[str]:
        """The key's permissions (`mail.send`, …)."""
        response = await self.http.request(
            "GET",
            f"{self.base_url}/v3/scopes",
            operation=operation,
            credential=self._api_key,
            headers=self._headers(),
            timeouts=timeouts,
            parse_error=parse_error,
            labels=self.labels,
            own_credential=self.own_credential,
            guard_url=self.guard_url,
        )
        data = response.json()
        scopes = data.get("scopes") if isinstance(data, dict) else None
        return [str(s) for s in scopes] if isinstance(scopes, list) else []


async def verify_key(client: SendGridClient) -> None:
    """SendGrid's cheap authenticated call, as `client`'s key: list its scopes. Raises
    ProviderError when the key was not accepted (401), or when it may not send mail
    (a 403 with SendGrid's own wording, so `refused()` treats both alike)."""
    scopes = await client.scopes(operation="verify_credential", timeouts=VERIFY_TIMEOUTS)
    if "mail.send" not in scopes:
        raise ProviderError(
            PROVIDER, "verify_credential", status=403, vendor_code="forbidden",
            message="the key has no mail.send scope", retryable=False,
        )  # fmt: skip

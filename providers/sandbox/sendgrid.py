"""SendGrid sandbox: v3 Mail Send, scopes and the signed Event Webhook, as api.sendgrid.com.

- **Auth**: `Authorization: Bearer <key>`; none → 401 `authorization required`, a key
  containing `invalid` → 401 `The provided authorization grant is invalid, expired, or
  revoked`, a key containing `restricted` has no `mail.send` scope (403 `access
  forbidden` on a send). Any other key is an account of its own.
- **`POST /v3/mail/send`**: validated as SendGrid does, every problem at once, in its
  error shape `{"errors": [{"message", "field", "help"}]}` with 400: personalizations
  (1–1,000, each with a `to`, 1,000 recipients in all, no address twice), `from.email`,
  `reply_to.email`, every address, `subject` (unless every personalization has one),
  `content` (text/plain first, then text/html; values non-empty), `headers` (strings,
  not a reserved one), `custom_args` (strings), `categories` (at most 10 strings of at
  most 255 characters). Accepted: `202`, empty body, `X-Message-Id`.
  `mail_settings.sandbox_mode.enable` is SendGrid's own dry run: `200`, nothing sent,
  no events. A body that is not JSON is 400 `Bad Request`.
- **`GET /v3/scopes`**: `{"scopes": [...]}` (the key check).
- **`GET /v3/user/webhooks/event/settings/signed`**: `{"public_key": <base64 DER
  SubjectPublicKeyInfo>}` — the key the Event Webhook's signatures verify with.
- **Event Webhook** (`configure_webhooks(url)`; the gateway sets its own
  `/webhooks/sendgrid` from settings): after a send, one POST per stage, each a JSON array
  of one event per recipient: `processed`, then what the recipient asks for. Test
  recipients are on SendGrid's sink domain `sink.sendgrid.net` (a `+label` is ignored):
  `bounced@` → `bounce` (`type: bounce`), `blocked@` → `bounce` (`type: blocked`),
  `deferred@` → `deferred` then `delivered`, `dropped@` → `dropped`, `spamreport@` →
  `delivered` then `spamreport`, `opened@` → `delivered`, `open`, `clicked@` →
  `delivered`, `open`, `click`, `unsubscribed@` → `delivered`, `unsubscribe`; any other
  address → `delivered`. Events carry `email`, `timestamp`, `event`, `sg_event_id`,
  `sg_message_id` (`<X-Message-Id>.filter…`), `smtp-id` (the `Message-ID` header when one
  was given), `category`, and the `custom_args` at top level. Each POST is signed as
  SendGrid signs it: `X-Twilio-Email-Event-Webhook-Timestamp` and
  `X-Twilio-Email-Event-Webhook-Signature` = base64 DER ECDSA P-256/SHA-256 over
  timestamp + body, with the sandbox's private key.
- Every answer carries `X-RateLimit-Limit/-Remaining/-Reset` (reset: epoch seconds); a
  429 (fault) carries them with remaining 0, and `Retry-After` when the fault sets one.
- Faults, recording and stats come from providers/sandbox/base.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import time
from collections import OrderedDict
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from providers.sandbox.base import Sandbox, bearer
from providers.sandbox.callbacks import CallbackRequest, RequestBuilder

PROVIDER = "sendgrid"
RATE_LIMIT = 600  # mail sends per minute, SendGrid's documented limit
MAX_MESSAGES = 10_000
MAX_PERSONALIZATIONS = 1000
MAX_RECIPIENTS = 1000
MAX_CATEGORIES = 10
MAX_CUSTOM_ARGS_BYTES = 10_000
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
HELP = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html"
SCOPES = ("mail.send", "user.webhooks.event.settings.read", "scopes.read")
# SendGrid documents this domain for test sends: accepted, never delivered anywhere.
TEST_DOMAIN = "sink.sendgrid.net"
# What each test recipient makes happen after `processed`: (event, extra fields) stages.
OUTCOMES: dict[str, tuple[str, ...]] = {
    "delivered": ("delivered",),
    "bounced": ("bounce",),
    "blocked": ("blocked",),
    "deferred": ("deferred", "delivered"),
    "dropped": ("dropped",),
    "spamreport": ("delivered", "spamreport"),
    "opened": ("delivered", "open"),
    "clicked": ("delivered", "open", "click"),
    "unsubscribed": ("delivered", "unsubscribe"),
}
# Headers SendGrid sets itself and refuses in `headers`.
RESERVED_HEADERS = frozenset(
    h.lower()
    for h in (
        "x-sg-id", "x-sg-eid", "received", "dkim-signature", "Content-Type",
        "Content-Transfer-Encoding", "To", "From", "Subject", "Reply-To", "CC", "BCC",
    )
)  # fmt: skip
_ADDRESS = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
_LINK = re.compile(r"""href\s*=\s*["'](https?://[^"']+)["']""", re.IGNORECASE)
_USER_AGENT = "SendGrid Event API"

_DEFAULT_MESSAGES: dict[int, str] = {
    400: "Bad Request",
    401: "authorization required",
    403: "access forbidden",
    404: "resource not found",
    405: "method not allowed",
    413: "The JSON payload you have included in your request is too large.",
    429: "too many requests",
    500: "internal error",
    502: "bad gateway",
    503: "service unavailable",
    504: "gateway timeout",
}


def _id(nbytes: int = 16) -> str:
    """SendGrid's ids: url-safe base64 without padding (`X-Message-Id`, `sg_event_id`)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(nbytes)).rstrip(b"=").decode()


def public_key_b64(key: ec.EllipticCurvePrivateKey) -> str:
    """The verification key as SendGrid shows it: base64 of the DER SubjectPublicKeyInfo."""
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def sign_event_body(key: ec.EllipticCurvePrivateKey, timestamp: str, body: bytes) -> str:
    """SendGrid's Event Webhook signature: base64 DER ECDSA P-256/SHA-256 of ts + body."""
    der = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(der).decode()


def outcome_of(address: str) -> str:
    local, _, domain = address.lower().rpartition("@")
    local = local.split("+", 1)[0]
    return local if domain == TEST_DOMAIN and local in OUTCOMES else "delivered"


class SendGridSandbox(Sandbox):
    provider = PROVIDER

    def __init__(self, signing_key: ec.EllipticCurvePrivateKey | None = None) -> None:
        # (account fingerprint, X-Message-Id) -> the accepted request, as sent
        self.messages: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        self.signing_key = signing_key or ec.generate_private_key(ec.SECP256R1())
        super().__init__()

    @property
    def public_key(self) -> str:
        """The Event Webhook's verification key (base64 DER), as SendGrid's API shows it."""
        return public_key_b64(self.signing_key)

    def configure_webhooks(
        self,
        url: str | None,
        *,
        signing_key: ec.EllipticCurvePrivateKey | None = None,
        delay: float | None = None,
    ) -> None:
        """Post signed event batches to `url` after each send (None: post nothing), signed
        with `signing_key` when given (else the sandbox's own, see `public_key`)."""
        if signing_key is not None:
            if not isinstance(signing_key.curve, ec.SECP256R1):
                raise ValueError("SendGrid signs with a P-256 key")
            self.signing_key = signing_key
        self.callbacks.configure(url, delay=delay)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v3/mail/send", self.send_mail, methods=["POST"]),
            Route("/v3/scopes", self.scopes, methods=["GET"]),
            Route("/v3/user/webhooks/event/settings/signed", self.signed_settings, methods=["GET"]),
        ]

    def reset_state(self) -> None:
        self.messages.clear()

    def error_response(
        self,
        status: int,
        *,
        code: str | None = None,
        message: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        text = message or _DEFAULT_MESSAGES.get(status, "internal error")
        return self._errors(status, [{"field": code, "message": text, "help": None}], headers)

    def _errors(
        self, status: int, errors: list[dict[str, Any]], headers: dict[str, str] | None = None
    ) -> Response:
        all_headers = _rate_headers(remaining=0 if status == 429 else RATE_LIMIT - 1)
        all_headers.update(headers or {})
        return JSONResponse({"errors": errors}, status, headers=all_headers)

    def check_key(self, key: str | None) -> Response | None:
        if not key:
            return self.error_response(401, message="authorization required")
        if "invalid" in key:
            return self.error_response(
                401, message="The provided authorization grant is invalid, expired, or revoked"
            )
        return None

    # Endpoints ----------------------------------------------------------------------

    async def send_mail(self, request: Request) -> Response:
        key = bearer(request)
        denied = self.check_key(key)
        if denied is not None:
            return denied
        if "restricted" in (key or ""):
            return self.error_response(403, message="access forbidden")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return self.error_response(400, message="Bad Request")
        if not isinstance(body, dict):
            return self.error_response(400, message="Bad Request")
        problems = _validate(body)
        if problems:
            return self._errors(400, problems)
        settings = body.get("mail_settings")
        sandbox_mode = isinstance(settings, dict) and _enabled(settings.get("sandbox_mode"))
        if sandbox_mode:  # SendGrid's dry run: validated, not sent
            return Response(status_code=200, headers=_rate_headers(RATE_LIMIT - 1))
        message_id = _id()
        self.messages[(_account(key), message_id)] = {"id": message_id, **body}
        while len(self.messages) > MAX_MESSAGES:
            self.messages.popitem(last=False)
        self._send_webhooks(message_id, body)
        return Response(
            status_code=202,
            headers={**_rate_headers(RATE_LIMIT - 1), "X-Message-Id": message_id},
        )

    async def scopes(self, request: Request) -> Response:
        key = bearer(request)
        denied = self.check_key(key)
        if denied is not None:
            return denied
        scopes = [s for s in SCOPES if s != "mail.send" or "restricted" not in (key or "")]
        return JSONResponse({"scopes": scopes}, headers=_rate_headers(RATE_LIMIT - 1))

    async def signed_settings(self, request: Request) -> Response:
        denied = self.check_bearer(request)
        if denied is not None:
            return denied
        return JSONResponse({"public_key": self.public_key}, headers=_rate_headers(RATE_LIMIT - 1))

    # Event Webhook --------------------------------------------------------------------

    def _send_webhooks(self, message_id: str, body: dict[str, Any]) -> None:
        if not self.callbacks.enabled:
            return
        # One stage list per recipient; stage n of every recipient goes in batch n.
        per_recipient: list[tuple[dict[str, Any], list[str]]] = []
        index = 0
        for personalization in body["personalizations"]:
            args = {
                **_strings(body.get("custom_args")),
                **_strings(personalization.get("custom_args")),
            }
            for kind in ("to", "cc", "bcc"):
                for recipient in personalization.get(kind) or []:
                    email = recipient["email"]
                    outcome = outcome_of(email)
                    stages = ["processed", *OUTCOMES[outcome]]
                    base = {
                        "email": email,
                        "smtp-id": _smtp_id(body, message_id),
                        "sg_message_id": _sg_message_id(message_id, index),
                        **args,
                    }
                    categories = body.get("categories")
                    if categories:
                        base["category"] = categories[0] if len(categories) == 1 else categories
                    per_recipient.append((base, stages))
                    index += 1
        html = next(
            (c["value"] for c in body.get("content") or [] if c.get("type") == "text/html"), ""
        )
        depth = max(len(stages) for _, stages in per_recipient)
        batches = [
            [_event(base, stages[n], html) for base, stages in per_recipient if n < len(stages)]
            for n in range(depth)
        ]
        self.callbacks.schedule([self._signed(batch) for batch in batches])

    def _signed(self, events: list[dict[str, Any]]) -> RequestBuilder:
        def build() -> CallbackRequest:
            ts = str(int(time.time()))
            for event in events:  # stamped when posted, as SendGrid's batches are
                event.setdefault("timestamp", int(ts))
            raw = json.dumps(events, separators=(",", ":")).encode()
            return CallbackRequest(
                raw,
                {
                    "content-type": "application/json",
                    "user-agent": _USER_AGENT,
                    TIMESTAMP_HEADER: ts,
                    SIGNATURE_HEADER: sign_event_body(self.signing_key, ts, raw),
                },
            )

        return build


def _event(base: dict[str, Any], stage: str, html: str) -> dict[str, Any]:
    event = {**base, "event": stage, "sg_event_id": _id()}
    if stage == "processed":
        pass
    elif stage == "delivered":
        event.update(response="250 2.0.0 OK", ip="192.0.2.25", tls=1)
    elif stage == "deferred":
        event.update(response="451 4.7.1 Greylisted, try again later", attempt="1", ip="192.0.2.25")
    elif stage == "bounce":
        event.update(
            type="bounce",
            status="5.1.1",
            reason="550 5.1.1 The email account that you tried to reach does not exist.",
            bounce_classification="Invalid Address",
            ip="192.0.2.25",
        )
    elif stage == "blocked":
        event.update(
            event="bounce",
            type="blocked",
            status="5.7.1",
            reason="550 5.7.1 Message rejected due to local policy",
            bounce_classification="Reputation",
            ip="192.0.2.25",
        )
    elif stage == "dropped":
        event.update(reason="Bounced Address", status="5.0.0")
    elif stage in ("open", "click"):
        event.update(
            useragent="Mozilla/5.0 (Windows NT 10.0; Win64; x64)", ip="198.51.100.7",
            sg_machine_open=False,
        )  # fmt: skip
        if stage == "click":
            del event["sg_machine_open"]
            link = _LINK.search(html)
            event.update(
                url=link.group(1) if link else "https://sendgrid.com",
                url_offset={"index": 0, "type": "html"},
            )
    return event


def _smtp_id(body: dict[str, Any], message_id: str) -> str:
    headers = body.get("headers")
    if isinstance(headers, dict):
        for name, value in headers.items():
            if name.lower() == "message-id":
                return str(value)
    return f"<{message_id}@geopod-ismtpd-sandbox>"


def _sg_message_id(message_id: str, index: int) -> str:
    node, queue = secrets.token_hex(5), secrets.token_hex(6).upper()
    return f"{message_id}.filterdrecv-{node}-1-{queue}-{index}.0"


def _account(key: str | None) -> str:
    return hashlib.sha256((key or "").encode()).hexdigest()[:16]


def _rate_headers(remaining: int) -> dict[str, str]:
    reset = int(time.time()) // 60 * 60 + 60  # the next minute, epoch seconds
    return {
        "X-RateLimit-Limit": str(RATE_LIMIT),
        "X-RateLimit-Remaining": str(max(0, remaining)),
        "X-RateLimit-Reset": str(reset),
    }


def _enabled(setting: Any) -> bool:
    return isinstance(setting, dict) and setting.get("enable") is True


def _strings(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


# Validation -------------------------------------------------------------------------------


def _problem(field: str | None, message: str, anchor: str | None) -> dict[str, Any]:
    return {"message": message, "field": field, "help": f"{HELP}#{anchor}" if anchor else None}


def _type_name(value: Any) -> str:
    return {
        bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
        dict: "object", type(None): "null",
    }.get(type(value), "unknown")  # fmt: skip


def _check_email_object(value: Any, field: str, anchor: str, out: list[dict[str, Any]]) -> None:
    if not isinstance(value, dict):
        out.append(
            _problem(field, f"Invalid type. Expected: object, given: {_type_name(value)}.", anchor)
        )
        return
    email = value.get("email")
    if not isinstance(email, str) or not _ADDRESS.match(email.strip()):
        out.append(_problem(f"{field}.email", "Does not contain a valid address.", anchor))
    name = value.get("name")
    if name is not None and not isinstance(name, str):
        out.append(
            _problem(
                f"{field}.name",
                f"Invalid type. Expected: string, given: {_type_name(name)}.",
                anchor,
            )
        )


def _check_strings(value: Any, field: str, anchor: str, out: list[dict[str, Any]]) -> None:
    if not isinstance(value, dict):
        out.append(
            _problem(field, f"Invalid type. Expected: object, given: {_type_name(value)}.", anchor)
        )
        return
    for key, item in value.items():
        if not isinstance(item, str):
            out.append(
                _problem(
                    f"{field}.{key}",
                    f"Invalid type. Expected: string, given: {_type_name(item)}.",
                    anchor,
                )
            )


def _validate(body: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    templated = isinstance(body.get("template_id"), str) and bool(body["template_id"])
    personalizations = body.get("personalizations")
    every_has_subject = False
    if not isinstance(personalizations, list) or not personalizations:
        out.append(
            _problem(
                "personalizations",
                "The personalizations field is required and must have at least one "
                "personalization.",
                "message.personalizations",
            )
        )
    elif len(personalizations) > MAX_PERSONALIZATIONS:
        out.append(
            _problem(
                "personalizations",
                "The personalizations field may not have more than 1000 personalizations.",
                "message.personalizations",
            )
        )
    else:
        total = 0
        every_has_subject = True
        for i, p in enumerate(personalizations):
            where = f"personalizations.{i}"
            if not isinstance(p, dict):
                out.append(
                    _problem(where, "Invalid type. Expected: object.", "message.personalizations")
                )
                every_has_subject = False
                continue
            if not (isinstance(p.get("subject"), str) and p["subject"]):
                every_has_subject = False
            to = p.get("to")
            if not isinstance(to, list) or not to:
                out.append(
                    _problem(
                        f"{where}.to",
                        "The to array is required for all personalization objects, and must have "
                        "at least one email object with a valid email address.",
                        "message.recipient-errors",
                    )
                )
            seen: set[str] = set()
            for kind in ("to", "cc", "bcc"):
                items = p.get(kind)
                if items is None or (kind == "to" and not isinstance(items, list)):
                    continue
                if not isinstance(items, list):
                    out.append(
                        _problem(
                            f"{where}.{kind}",
                            "Invalid type. Expected: array.",
                            "message.recipient-errors",
                        )
                    )
                    continue
                for j, item in enumerate(items):
                    _check_email_object(
                        item, f"{where}.{kind}.{j}", "message.recipient-errors", out
                    )
                    total += 1
                    email = item.get("email") if isinstance(item, dict) else None
                    if isinstance(email, str):
                        lowered = email.strip().lower()
                        if lowered in seen:
                            out.append(
                                _problem(
                                    where,
                                    "Each email address in the personalization block should be "
                                    "unique between to, cc, and bcc. We found the first duplicate "
                                    f"instance of [{email}] in the {where}.{kind} field.",
                                    "message.recipient-errors",
                                )
                            )
                        seen.add(lowered)
            if "custom_args" in p:
                _check_strings(p["custom_args"], f"{where}.custom_args", "message.custom_args", out)
        if total > MAX_RECIPIENTS:
            out.append(
                _problem(
                    "personalizations",
                    "The total number of recipients must be no more than 1000.",
                    "message.recipient-errors",
                )
            )

    sender = body.get("from")
    if not isinstance(sender, dict) or "email" not in sender:
        out.append(
            _problem(
                "from.email",
                "The from object must be provided for every email send. It is an object that "
                "requires the email parameter, but may also contain a name parameter.  "
                'e.g. {"email" '
                ': "example@example.com"}  or {"email" : "example@example.com", "name" : '
                '"Example Recipient"}.',
                "message.from",
            )
        )
    else:
        email = sender.get("email")
        if not isinstance(email, str) or not _ADDRESS.match(email.strip()):
            out.append(
                _problem(
                    "from.email", "The from email does not contain a valid address.", "message.from"
                )
            )
    reply_to = body.get("reply_to")
    if reply_to is not None:
        email = reply_to.get("email") if isinstance(reply_to, dict) else None
        if not isinstance(email, str) or not _ADDRESS.match(email.strip()):
            out.append(
                _problem(
                    "reply_to.email",
                    "The reply_to email does not contain a valid address.",
                    "message.reply_to",
                )
            )

    subject = body.get("subject")
    if subject is not None and not isinstance(subject, str):
        out.append(
            _problem(
                "subject",
                f"Invalid type. Expected: string, given: {_type_name(subject)}.",
                "message.subject",
            )
        )
    elif not subject and not templated and not every_has_subject:
        out.append(
            _problem(
                "subject",
                "The subject is required. You can get around this requirement if you use a "
                "template with a subject defined or if every personalization has a subject "
                "defined.",
                "message.subject",
            )
        )

    content = body.get("content")
    if content is None or content == []:
        if not templated:
            out.append(
                _problem(
                    "content",
                    "Unless a valid template_id is provided, the content parameter is required. "
                    "There must be at least one defined content block. We typically suggest both "
                    "text/plain and text/html blocks are included, but only one block is required.",
                    "message.content",
                )
            )
    elif not isinstance(content, list):
        out.append(_problem("content", "Invalid type. Expected: array.", "message.content"))
    else:
        types: list[str] = []
        for i, block in enumerate(content):
            block_type = block.get("type") if isinstance(block, dict) else None
            value = block.get("value") if isinstance(block, dict) else None
            if not isinstance(block_type, str) or not block_type:
                out.append(
                    _problem(
                        f"content.{i}.type",
                        "The content type cannot contain ';', or CRLF characters, and must "
                        "be at least one character in length.",
                        "message.content.type",
                    )
                )
            if not isinstance(value, str) or not value:
                out.append(
                    _problem(
                        f"content.{i}.value",
                        "The content value must be a string at least one character in length.",
                        "message.content.value",
                    )
                )
            types.append(block_type if isinstance(block_type, str) else "")
        order = [t for t in types if t in ("text/plain", "text/html")]
        if order not in ([], ["text/plain"], ["text/html"], ["text/plain", "text/html"]) or (
            "text/plain" in types and types.index("text/plain") != 0
        ):
            out.append(
                _problem(
                    "content",
                    "If present, text/plain content must be first, followed by text/html, "
                    "followed by any other content.",
                    "message.content",
                )
            )

    headers = body.get("headers")
    if headers is not None:
        _check_strings(headers, "headers", "message.headers", out)
        if isinstance(headers, dict):
            for name in headers:
                if name.lower() in RESERVED_HEADERS:
                    out.append(
                        _problem(
                            "headers",
                            f"The following header is reserved and cannot be set: {name}",
                            "message.headers",
                        )
                    )
    custom_args = body.get("custom_args")
    if custom_args is not None:
        _check_strings(custom_args, "custom_args", "message.custom_args", out)
        if (
            isinstance(custom_args, dict)
            and len(json.dumps(custom_args).encode()) > MAX_CUSTOM_ARGS_BYTES
        ):
            out.append(
                _problem(
                    "custom_args",
                    "The custom_args field must be less than 10000 bytes.",
                    "message.custom_args",
                )
            )
    categories = body.get("categories")
    if categories is not None:
        if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
            out.append(
                _problem(
                    "categories", "Invalid type. Expected: array of strings.", "message.categories"
                )
            )
        elif len(categories) > MAX_CATEGORIES:
            out.append(
                _problem(
                    "categories",
                    "Too many categories. You may only have 10 categories per request.",
                    "message.categories",
                )
            )
        elif any(len(c) > 255 for c in categories):
            out.append(
                _problem(
                    "categories",
                    "A category cannot be longer than 255 characters.",
                    "message.categories",
                )
            )
    return out


def create_app() -> SendGridSandbox:
    return SendGridSandbox()

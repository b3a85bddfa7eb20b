"""Resend sandbox: `POST /emails` and `GET /emails/{id}` as https://api.resend.com serves them.

- **Auth**: `Authorization: Bearer <key>`; no key → 401 `missing_api_key`, a key
  containing `invalid` → 403 `invalid_api_key`, any other key is a team of its own
  (an email is visible only with the key that sent it, as across Resend teams).
- **Send**: `from`, `to` (string or list, at most 50), `subject` are required (422
  `missing_required_field`); addresses are checked (422 `invalid_from_address`,
  400 `validation_error`); answers `{"id": "<uuid>"}`. Resend's test recipients
  set the outcome (a `+label` is ignored, `bounced+a@resend.dev`): `bounced@resend.dev`
  → `bounced`, `complained@resend.dev` → `complained`, otherwise `delivered`
  (`scheduled` when `scheduled_at` is given). The sandbox adds three of its own:
  `delayed@resend.dev` (delivery_delayed, then delivered), `opened@resend.dev` and
  `clicked@resend.dev` (delivered, then opened, then clicked).
- **Webhooks** (`configure_webhooks(url, secret)`; the gateway sets its own
  `/webhooks/resend` from settings): after a send, the events Resend would send, one
  POST each, in order, from a background task: `email.sent`, then `email.delivered`,
  `email.bounced`, `email.complained`, `email.delivery_delayed`, `email.opened`,
  `email.clicked` as the recipients decide, in Resend's shape `{"type", "created_at",
  "data": {"email_id", "from", "to", "subject", "created_at", "tags"?, "bounce"? |
  "click"?}}`, signed as Svix signs them for Resend: `svix-id` (kept across retries),
  `svix-timestamp`, `svix-signature: v1,<base64 HMAC-SHA256>` with the `whsec_` secret.
- **Batch**: `POST /emails/batch`, up to 100 emails checked as a whole (one invalid
  email refuses the batch with 422 naming its index), ids answered in order.
- **Idempotency** (`Idempotency-Key`, 1–256 chars else 400
  `invalid_idempotency_key`): the same key and body within 24 hours answers the
  first email's id without sending again; the same key with another body is 409
  `invalid_idempotent_request`.
- **Errors** are Resend's `{"statusCode", "message", "name"}`; every answer carries
  `ratelimit-limit/-remaining/-reset`, and a 429 (fault) also `retry-after`.
- Faults, recording and stats come from providers/sandbox/base.py.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
import uuid
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from kit.signing import secret_key, sign
from providers.sandbox.base import Sandbox, bearer
from providers.sandbox.callbacks import CallbackRequest, RequestBuilder

PROVIDER = "resend"
RATE_LIMIT = 2  # requests per second, Resend's documented default
IDEMPOTENCY_TTL = 24 * 3600
MAX_EMAILS = 10_000
MAX_RECIPIENTS = 50
MAX_BATCH = 100

# What each test recipient makes happen: the events after `email.sent`, in order.
TEST_DOMAIN = "resend.dev"
OUTCOMES: dict[str, tuple[str, ...]] = {
    "delivered": ("email.delivered",),
    "bounced": ("email.bounced",),
    "complained": ("email.delivered", "email.complained"),
    "delayed": ("email.delivery_delayed", "email.delivered"),
    "opened": ("email.delivered", "email.opened"),
    "clicked": ("email.delivered", "email.opened", "email.clicked"),
}
# When recipients differ, the email (one id for all) takes the first of these it has.
_PRECEDENCE = ("bounced", "complained", "delayed", "clicked", "opened")
_LINK = re.compile(r"""href\s*=\s*["'](https?://[^"']+)["']""", re.IGNORECASE)
_USER_AGENT = "Svix-Webhooks/1.62.0 (sender-sandbox; +https://www.svix.com/http-sender/)"

_ADDRESS = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
_NAMED_ADDRESS = re.compile(r"^[^<>]*<([^<>]+)>$")

_DEFAULT_ERRORS: dict[int, tuple[str, str]] = {
    400: ("validation_error", "We found an error with one or more fields in the request."),
    401: ("missing_api_key", "Missing API key in the authorization header."),
    403: ("invalid_api_key", "API key is invalid."),
    404: ("not_found", "The requested endpoint does not exist."),
    405: ("method_not_allowed", "Method is not allowed for the requested path."),
    409: ("invalid_idempotent_request", "Same idempotency key used with a different payload."),
    422: ("validation_error", "We found an error with one or more fields in the request."),
    429: (
        "rate_limit_exceeded",
        "Too many requests. You can only make 2 requests per second. See rate limit "
        "response headers for more information. Or contact support to increase rate limit.",
    ),
    500: ("internal_server_error", "An unexpected error occurred."),
    502: ("internal_server_error", "An unexpected error occurred."),
    503: ("internal_server_error", "The service is temporarily unavailable."),
    504: ("internal_server_error", "The request timed out."),
}


def _address(value: str) -> str | None:
    """`a@b.co` or `Name <a@b.co>` -> the address; None when malformed."""
    value = value.strip()
    named = _NAMED_ADDRESS.match(value)
    if named:
        value = named.group(1).strip()
    return value if _ADDRESS.match(value) else None


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _now_z() -> str:
    """Resend's event time: `2024-02-22T23:41:12.126Z`."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def outcome_of(recipients: list[str]) -> str:
    """The test outcome the recipients ask for (`delivered` unless one is a test address)."""
    found = set()
    for value in recipients:
        address = _address(value) or ""
        local, _, domain = address.lower().rpartition("@")
        local = local.split("+", 1)[0]
        if domain == TEST_DOMAIN and local in OUTCOMES:
            found.add(local)
    return next((o for o in _PRECEDENCE if o in found), "delivered")


class ResendSandbox(Sandbox):
    provider = PROVIDER

    def __init__(self) -> None:
        # (key fingerprint, email id) -> email
        self.emails: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        # (key fingerprint, idempotency key) -> (body hash, email id, first seen)
        self.idempotency: dict[tuple[str, str], tuple[str, str, float]] = {}
        self.webhook_secret: str | None = None
        super().__init__()

    def configure_webhooks(
        self, url: str | None, secret: str | None, *, delay: float | None = None
    ) -> None:
        """Post signed events to `url` after each send, signed with the `whsec_` `secret`
        (None: post nothing)."""
        if url is not None:
            if not secret:
                raise ValueError("Resend webhooks need a whsec_ signing secret")
            secret_key(secret)  # ValueError now rather than in the background task
        self.webhook_secret = secret if url else None
        self.callbacks.configure(url, delay=delay)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/emails", self.send_email, methods=["POST"]),
            Route("/emails/batch", self.send_batch, methods=["POST"]),
            Route("/emails/{email_id}", self.get_email, methods=["GET"]),
        ]

    def reset_state(self) -> None:
        self.emails.clear()
        self.idempotency.clear()

    def error_response(
        self,
        status: int,
        *,
        code: str | None = None,
        message: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        default_code, default_message = _DEFAULT_ERRORS.get(
            status, ("application_error", "An unexpected error occurred.")
        )
        all_headers = _rate_headers(remaining=0 if status == 429 else RATE_LIMIT - 1)
        if status == 429 and "Retry-After" not in (headers or {}):
            all_headers["retry-after"] = "1"
        all_headers.update({k.lower(): v for k, v in (headers or {}).items()})
        return JSONResponse(
            {
                "statusCode": status,
                "message": message or default_message,
                "name": code or default_code,
            },
            status,
            headers=all_headers,
        )

    def _error(self, status: int, name: str, message: str) -> Response:
        return self.error_response(status, code=name, message=message)

    # Endpoints ----------------------------------------------------------------------

    async def send_email(self, request: Request) -> Response:
        denied = self.check_bearer(request)
        if denied is not None:
            return denied
        team = _team(request)
        key = request.headers.get("idempotency-key")
        if key is not None and not 1 <= len(key) <= 256:
            return self._error(
                400, "invalid_idempotency_key", "The key must be between 1-256 chars."
            )
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            return self._error(400, "validation_error", "Invalid JSON body.")
        if not isinstance(body, dict):
            return self._error(400, "validation_error", "The body must be a JSON object.")
        problem = _validate(body)
        if problem is not None:
            return self._error(*problem)

        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        slot = (team, key) if key else None
        if slot is not None:
            self._expire_idempotency()
            seen = self.idempotency.get(slot)
            if seen is not None:
                seen_digest, seen_id, _ = seen
                if seen_digest != digest:
                    return self._error(
                        409,
                        "invalid_idempotent_request",
                        "Same idempotency key used with a different request payload. "
                        "Change your idempotency key or payload.",
                    )
                return self._ok({"id": seen_id})

        email_id = str(uuid.uuid4())
        email = self._store(team, email_id, body)
        if slot is not None:
            self.idempotency[slot] = (digest, email_id, time.time())
        if not email.get("scheduled_at"):
            self._send_webhooks(email, body)
        return self._ok({"id": email_id})

    async def send_batch(self, request: Request) -> Response:
        """`POST /emails/batch`: up to 100 emails in one request, checked as a whole first
        (Resend's default, strict validation: one invalid email refuses the batch, naming
        it); `attachments` and `scheduled_at` are not allowed in a batch. Answers
        `{"data": [{"id"}, ...]}` in the order sent."""
        denied = self.check_bearer(request)
        if denied is not None:
            return denied
        team = _team(request)
        key = request.headers.get("idempotency-key")
        if key is not None and not 1 <= len(key) <= 256:
            return self._error(
                400, "invalid_idempotency_key", "The key must be between 1-256 chars."
            )
        try:
            body = json.loads(await request.body())
        except ValueError:
            return self._error(400, "validation_error", "Invalid JSON body.")
        if not isinstance(body, list) or not 1 <= len(body) <= MAX_BATCH:
            return self._error(
                422, "validation_error", f"The batch must be a list of 1 to {MAX_BATCH} emails."
            )
        for index, item in enumerate(body):
            if not isinstance(item, dict):
                return self._error(422, "validation_error", f"emails[{index}]: not an object.")
            for unsupported in ("attachments", "scheduled_at"):
                if unsupported in item:
                    return self._error(
                        422,
                        "validation_error",
                        f"emails[{index}]: `{unsupported}` is not supported in batch emails.",
                    )
            problem = _validate(item)
            if problem is not None:
                status, name, message = problem
                return self._error(status, name, f"emails[{index}]: {message}")

        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        slot = (team, f"batch:{key}") if key else None
        if slot is not None:
            self._expire_idempotency()
            seen = self.idempotency.get(slot)
            if seen is not None:
                if seen[0] != digest:
                    return self._error(
                        409,
                        "invalid_idempotent_request",
                        "Same idempotency key used with a different request payload. "
                        "Change your idempotency key or payload.",
                    )
                return self._ok({"data": [{"id": i} for i in seen[1].split(",")]})
        ids = []
        for item in body:
            email_id = str(uuid.uuid4())
            email = self._store(team, email_id, item)
            self._send_webhooks(email, item)
            ids.append(email_id)
        if slot is not None:
            self.idempotency[slot] = (digest, ",".join(ids), time.time())
        return self._ok({"data": [{"id": i} for i in ids]})

    async def get_email(self, request: Request) -> Response:
        denied = self.check_bearer(request)
        if denied is not None:
            return denied
        email_id = request.path_params["email_id"]
        try:
            uuid.UUID(email_id)
        except ValueError:
            return self._error(422, "invalid_parameter", "The `id` must be a valid UUID.")
        email = self.emails.get((_team(request), email_id))
        if email is None:
            return self._error(404, "not_found", "Email not found")
        return self._ok(email)

    # Helpers ------------------------------------------------------------------------

    def _ok(self, data: dict[str, Any]) -> Response:
        return JSONResponse(data, 200, headers=_rate_headers(remaining=RATE_LIMIT - 1))

    def _store(self, team: str, email_id: str, body: dict[str, Any]) -> dict[str, Any]:
        to = _as_list(body["to"])
        if body.get("scheduled_at"):
            last_event = "scheduled"
        else:
            events = OUTCOMES[outcome_of(to + _as_list(body.get("cc")) + _as_list(body.get("bcc")))]
            last_event = events[-1].removeprefix("email.")
        email = self.emails[(team, email_id)] = {
            "object": "email",
            "id": email_id,
            "to": to,
            "from": body["from"],
            "created_at": _now_iso(),
            "subject": body["subject"],
            "html": body.get("html"),
            "text": body.get("text"),
            "bcc": _as_list(body.get("bcc")) or None,
            "cc": _as_list(body.get("cc")) or None,
            "reply_to": _as_list(body.get("reply_to")) or None,
            "last_event": last_event,
            "scheduled_at": body.get("scheduled_at"),
        }
        while len(self.emails) > MAX_EMAILS:
            self.emails.popitem(last=False)
        return email

    # Webhooks -----------------------------------------------------------------------

    def _send_webhooks(self, email: dict[str, Any], body: dict[str, Any]) -> None:
        secret = self.webhook_secret
        if secret is None or not self.callbacks.enabled:
            return
        recipients = email["to"] + (email["cc"] or []) + (email["bcc"] or [])
        types = ("email.sent", *OUTCOMES[outcome_of(recipients)])
        self.callbacks.schedule([self._event(secret, kind, email, body) for kind in types])

    def _event(
        self, secret: str, kind: str, email: dict[str, Any], body: dict[str, Any]
    ) -> RequestBuilder:
        data: dict[str, Any] = {
            "created_at": email["created_at"],
            "email_id": email["id"],
            "from": email["from"],
            "to": email["to"],
            "subject": email["subject"],
        }
        tags = body.get("tags")
        if isinstance(tags, list):
            data["tags"] = {
                str(t.get("name")): str(t.get("value")) for t in tags if isinstance(t, dict)
            }
        if kind == "email.bounced":
            data["bounce"] = {
                "message": "The recipient's mail server permanently rejected the email.",
                "subType": "General",
                "type": "Permanent",
            }
        elif kind == "email.clicked":
            link = _LINK.search(email.get("html") or "")
            data["click"] = {
                "ipAddress": "192.0.2.10",
                "link": link.group(1) if link else "https://resend.com",
                "timestamp": _now_z(),
                "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) Safari/605.1.15",
            }
        event = {"type": kind, "created_at": _now_z(), "data": data}
        raw = json.dumps(event, separators=(",", ":")).encode()
        msg_id = "msg_" + secrets.token_urlsafe(20).replace("-", "x").replace("_", "y")[:27]

        def build() -> CallbackRequest:
            ts = int(time.time())
            return CallbackRequest(
                raw,
                {
                    "content-type": "application/json",
                    "user-agent": _USER_AGENT,
                    "svix-id": msg_id,
                    "svix-timestamp": str(ts),
                    "svix-signature": sign(secret, msg_id, ts, raw),
                },
            )

        return build

    def _expire_idempotency(self) -> None:
        horizon = time.time() - IDEMPOTENCY_TTL
        for slot in [s for s, (_, _, at) in self.idempotency.items() if at < horizon]:
            del self.idempotency[slot]


def _team(request: Request) -> str:
    return hashlib.sha256((bearer(request) or "").encode()).hexdigest()[:16]


def _rate_headers(remaining: int) -> dict[str, str]:
    return {
        "ratelimit-limit": str(RATE_LIMIT),
        "ratelimit-remaining": str(max(0, remaining)),
        "ratelimit-reset": "1",
    }


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _validate(body: dict[str, Any]) -> tuple[int, str, str] | None:
    for name in ("from", "to", "subject"):
        if body.get(name) in (None, "", []):
            return 422, "missing_required_field", f"Missing `{name}` field."
    sender = body["from"]
    if not isinstance(sender, str) or _address(sender) is None:
        return (
            422,
            "invalid_from_address",
            "Invalid `from` field. The email address needs to follow the "
            "`email@example.com` or `Name <email@example.com>` format.",
        )
    if not isinstance(body["subject"], str):
        return 400, "validation_error", "The `subject` field must be a `string`."
    for name in ("to", "cc", "bcc", "reply_to"):
        value = body.get(name)
        if value is None:
            continue
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            return 400, "validation_error", f"The `{name}` field must be a `string` or `array`."
        if len(items) > MAX_RECIPIENTS:
            return 422, "validation_error", f"Too many recipients in `{name}` (max 50)."
        for item in items:
            if _address(item) is None:
                return (
                    422,
                    "validation_error",
                    f"Invalid `{name}` field. The email address needs to follow the "
                    "`email@example.com` or `Name <email@example.com>` format.",
                )
    for name in ("html", "text", "scheduled_at"):
        if body.get(name) is not None and not isinstance(body[name], str):
            return 400, "validation_error", f"The `{name}` field must be a `string`."
    return None


def create_app() -> ResendSandbox:
    return ResendSandbox()

"""Twilio sandbox: the 2010-04-01 Messages API as https://api.twilio.com serves it, its
signed status callbacks, and incoming messages posted to the gateway.

- **Auth**: HTTP Basic, the Account SID of the path and its auth token, or an API key
  (`SK…`) and its secret; none → 401 code 20003, a password containing `invalid` → 401
  20003, another account's SID in the user name → 403 20003 (`Authenticate`). Every
  account is an account of its own (messages are visible only to it). The first auth
  token an account is used with is its token (what its callbacks are signed with); any
  other token for it is refused with 401 20003.
- **Send**: `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`, form-encoded: `To`,
  `From` or `MessagingServiceSid`, `Body` (≤ 1,600 characters), `MediaUrl` (repeated, ≤ 10,
  http(s)), `ContentSid` + `ContentVariables` (an approved template, below),
  `StatusCallback`. Answered 201 with the Message resource (`SM…`, `MM…` with media),
  `status: queued` (`accepted` with a Messaging Service). Twilio's error codes: 21604 no
  `To`, 21603 no sender, 21602 no body, 21617 body over 1,600, 21211 `To` not a valid
  number, 21910 `From` and `To` on different channels, 21620 a bad media URL, 21655 an
  unknown `ContentSid`, 21656 `ContentVariables` missing a template's variable or not an
  object of strings, 21610 a recipient that replied STOP, 21614 not a mobile number.
- **Test numbers** (Twilio's magic numbers, and the sandbox's own): `+15005550001` →
  21211, `+15005550004` → 21610, `+15005550009` → 21614; `+15005550010` is walked to
  `undelivered` (30003), `+15005550011` to `failed` (30008); any other valid number to
  `delivered`, and a WhatsApp message on to `read`.
- **WhatsApp**: `To`/`From` carry `whatsapp:`. Free-form text or media reach a number only
  within 24 hours of its last message to the account (it is `failed` with 63016
  otherwise); templates (`ContentSid`) reach it any time. Approved templates:
  `TEMPLATES` (`HX…` SIDs, `{{1}}`… placeholders).
- **Status callbacks**: after a send, `sent`, then `delivered` | `undelivered` | `failed`,
  then `read` (WhatsApp), `STEP` seconds apart (`configure(step=…)`), each a form POST to
  the message's `StatusCallback` signed as Twilio signs (`X-Twilio-Signature`, HMAC-SHA1
  with the account's auth token over the URL and the sorted parameters), with Twilio's
  parameters (`MessageSid`, `MessageStatus`, `SmsSid`, `SmsStatus`, `AccountSid`, `From`,
  `To`, `ApiVersion`, `ErrorCode`). Only to URLs under the receiver set from Python
  (`configure(callbacks=…)`): anyone can call the sandbox's API, so it never posts to an
  address of a caller's choosing. The resource's `status` follows the walk.
- **List / fetch**: `GET …/Messages.json?To=&From=&DateSent>=&PageSize=` (newest first)
  and `GET …/Messages/{Sid}.json`; `GET /2010-04-01/Accounts/{AccountSid}.json`.
- **Incoming messages** (`POST /_sandbox/inbound`, Basic auth of the account: its SID and
  auth token; JSON `{"from", "to", "body", "mediaUrls"?, "channel": "sms"|"whatsapp"}`):
  posted to the inbound URL set from Python (`configure(inbound=…)`) with Twilio's
  parameters, signed with that token. As Twilio's Advanced Opt-Out does, STOP, STOPALL,
  UNSUBSCRIBE, CANCEL, END, QUIT, OPTOUT and REVOKE put the sender on the account's
  opt-out list (later sends to it: 21610), START, YES and UNSTOP take it off.
- Faults, recording and stats come from providers/sandbox/base.py.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import re
import secrets
import time
from collections import OrderedDict
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from kit.signing import twilio_signature
from providers.sandbox.base import CONTROL_PREFIX, Sandbox
from providers.sandbox.callbacks import CallbackRequest, RequestBuilder

PROVIDER = "twilio"
API_VERSION = "2010-04-01"
STEP = 0.2  # seconds between two statuses of a message
MAX_MESSAGES = 20_000
MAX_BODY = 1600
MAX_MEDIA = 10
WHATSAPP = "whatsapp:"
SESSION_SECONDS = 24 * 3600
USER_AGENT = "TwilioProxy/1.1"

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_ACCOUNT_SID = re.compile(r"^AC[0-9a-f]{32}$")
_SERVICE_SID = re.compile(r"^MG[0-9a-f]{32}$")
_CONTENT_SID = re.compile(r"^HX[0-9a-f]{32}$")

INVALID_NUMBER = "+15005550001"
BLOCKED_NUMBER = "+15005550004"
NOT_MOBILE_NUMBER = "+15005550009"
UNDELIVERED_NUMBER = "+15005550010"
FAILED_NUMBER = "+15005550011"

OPT_OUT = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"})
OPT_IN = frozenset({"START", "YES", "UNSTOP"})


def _content_sid(name: str) -> str:
    return "HX" + hashlib.md5(name.encode(), usedforsecurity=False).hexdigest()


# Approved templates: SID -> (name, body with {{n}} placeholders).
TEMPLATES: dict[str, tuple[str, str]] = {
    _content_sid("appointment_reminder"): (
        "appointment_reminder",
        "Your appointment is coming up on {{1}} at {{2}}.",
    ),
    _content_sid("order_update"): ("order_update", "Your order {{1}} is {{2}}."),
    _content_sid("verification_code"): (
        "verification_code",
        "{{1}} is your verification code. For your security, do not share this code.",
    ),
}
_PLACEHOLDER = re.compile(r"\{\{(\d+)\}\}")

ERRORS: dict[str, tuple[int, str]] = {
    "20003": (401, "Authenticate"),
    "20404": (404, "The requested resource was not found"),
    "20429": (429, "Too Many Requests"),
    "21211": (400, "The 'To' number {to} is not a valid phone number."),
    "21602": (400, "Message body is required."),
    "21603": (400, "A 'From' phone number is required."),
    "21604": (400, "A 'To' phone number is required."),
    "21610": (400, "Attempt to send to unsubscribed recipient"),
    "21614": (400, "'To' number is not a valid mobile number"),
    "21617": (400, "The concatenated message body exceeds the 1600 character limit."),
    "21620": (400, "Invalid media URL(s)."),
    "21655": (400, "The ContentSid is Invalid."),
    "21656": (400, "The ContentVariables Parameter is invalid."),
    "21701": (400, "The Messaging Service Sid is invalid."),
    "21910": (400, "Invalid 'From' and 'To' pair. 'From' and 'To' should be of the same channel."),
    "20001": (500, "Internal error"),
}
_STATUS_ERRORS = {500: "20001", 502: "20001", 503: "20001", 429: "20429", 401: "20003"}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _rfc2822(moment: dt.datetime) -> str:
    return format_datetime(moment, usegmt=True)


def _basic(request: Request) -> tuple[str, str] | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def _number(value: str) -> tuple[str, bool]:
    """(the number, whether it was a WhatsApp address)."""
    if value.startswith(WHATSAPP):
        return value[len(WHATSAPP) :], True
    return value, False


def _segments(body: str) -> int:
    gsm = all(ord(c) < 128 for c in body)
    single, multi = (160, 153) if gsm else (70, 67)
    return 1 if len(body) <= single else -(-len(body) // multi)


class TwilioSandbox(Sandbox):
    provider = PROVIDER

    def __init__(self) -> None:
        self.messages: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        self.tokens: dict[str, str] = {}  # account SID -> auth token seen in its requests
        self.opted_out: set[tuple[str, str]] = set()  # (account, number)
        self.sessions: dict[tuple[str, str], float] = {}  # (account, number) -> last inbound
        self.callback_base: str | None = None
        self.inbound_url: str | None = None
        super().__init__()
        self.callbacks.delay = STEP

    def configure(
        self,
        *,
        callbacks: str | None = None,
        inbound: str | None = None,
        step: float | None = None,
    ) -> None:
        """Post status callbacks only to URLs under `callbacks`, incoming messages to
        `inbound`, statuses `step` seconds apart. Set from Python only."""
        self.callback_base = callbacks
        self.inbound_url = inbound
        if step is not None:
            self.callbacks.delay = max(0.0, step)

    def routes(self) -> list[BaseRoute]:
        base = f"/{API_VERSION}/Accounts/{{account}}"
        return [
            Route(f"{base}.json", self.get_account, methods=["GET"]),
            Route(f"{base}/Messages.json", self.create_message, methods=["POST"]),
            Route(f"{base}/Messages.json", self.list_messages, methods=["GET"]),
            Route(f"{base}/Messages/{{sid}}.json", self.get_message, methods=["GET"]),
        ]

    def _control_routes(self) -> list[BaseRoute]:
        return [
            *super()._control_routes(),
            Route(f"{CONTROL_PREFIX}/inbound", self.inject_inbound, methods=["POST"]),
        ]

    def reset_state(self) -> None:
        self.messages.clear()
        self.opted_out.clear()
        self.sessions.clear()

    def error_response(
        self,
        status: int,
        *,
        code: str | None = None,
        message: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        code = code or _STATUS_ERRORS.get(status, "20001")
        default = ERRORS.get(code, (status, "Error"))[1]
        return JSONResponse(
            {
                "code": int(code) if code.isdigit() else code,
                "message": message or default,
                "more_info": f"https://www.twilio.com/docs/errors/{code}",
                "status": status,
            },
            status,
            headers=headers,
        )

    def _error(self, code: str, **values: str) -> Response:
        status, message = ERRORS[code]
        return self.error_response(status, code=code, message=message.format(**values))

    def _authenticate(self, request: Request) -> tuple[str, Response | None]:
        account = request.path_params.get("account", "")
        login = _basic(request)
        if login is None or not login[1]:
            return account, self._error("20003")
        user, password = login
        if "invalid" in password or not _ACCOUNT_SID.match(account):
            return account, self._error("20003")
        if user.startswith("SK"):
            return account, None  # an API key of the account
        if user != account:
            return account, self.error_response(403, code="20003", message="Authenticate")
        # An account has one auth token: the first one seen is it, any other is refused
        # (nobody can make the sandbox sign an account's callbacks with a token of theirs).
        if self.tokens.setdefault(account, password) != password:
            return account, self._error("20003")
        return account, None

    # Endpoints ----------------------------------------------------------------------

    async def get_account(self, request: Request) -> Response:
        account, denied = self._authenticate(request)
        if denied is not None:
            return denied
        return JSONResponse(
            {
                "sid": account,
                "friendly_name": "Switchboard sandbox account",
                "status": "active",
                "type": "Full",
                "uri": f"/{API_VERSION}/Accounts/{account}.json",
            }
        )

    async def create_message(self, request: Request) -> Response:
        account, denied = self._authenticate(request)
        if denied is not None:
            return denied
        try:
            pairs = parse_qsl((await request.body()).decode(), keep_blank_values=True)
        except (UnicodeDecodeError, ValueError):
            return self._error("21602")
        form: dict[str, str] = {}
        media: list[str] = []
        for name, value in pairs:
            if name == "MediaUrl":
                media.append(value)
            else:
                form.setdefault(name, value)
        problem = self._check(account, form, media)
        if isinstance(problem, Response):
            return problem
        to, whatsapp, body = problem
        return self._create(account, form, media, to, whatsapp, body)

    def _check(
        self, account: str, form: dict[str, str], media: list[str]
    ) -> Response | tuple[str, bool, str]:
        raw_to = form.get("To", "")
        if not raw_to:
            return self._error("21604")
        service = form.get("MessagingServiceSid", "")
        raw_from = form.get("From", "")
        if not raw_from and not service:
            return self._error("21603")
        if service and not _SERVICE_SID.match(service):
            return self._error("21701")
        to, whatsapp = _number(raw_to)
        if raw_from:
            sender, sender_whatsapp = _number(raw_from)
            if sender_whatsapp != whatsapp:
                return self._error("21910")
            if not _E164.match(sender):
                return self.error_response(
                    400, code="21212", message=f"The 'From' number {raw_from} is not valid."
                )
        if not _E164.match(to) or to == INVALID_NUMBER:
            return self._error("21211", to=raw_to)
        body = form.get("Body", "")
        content_sid = form.get("ContentSid", "")
        if content_sid:
            rendered = self._render(form)
            if isinstance(rendered, Response):
                return rendered
            body = rendered
        elif not body and not media:
            return self._error("21602")
        if len(body) > MAX_BODY:
            return self._error("21617")
        if len(media) > MAX_MEDIA or any(
            not re.match(r"^https?://[^\s/]+", url) or len(url) > 2000 for url in media
        ):
            return self._error("21620")
        if to == NOT_MOBILE_NUMBER:
            return self._error("21614")
        if to == BLOCKED_NUMBER or (account, to) in self.opted_out:
            return self._error("21610")
        return to, whatsapp, body

    def _render(self, form: dict[str, str]) -> Response | str:
        template = TEMPLATES.get(form.get("ContentSid", ""))
        if template is None or not _CONTENT_SID.match(form.get("ContentSid", "")):
            return self._error("21655")
        raw = form.get("ContentVariables") or "{}"
        try:
            variables = json.loads(raw)
        except ValueError:
            return self._error("21656")
        if not isinstance(variables, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in variables.items()
        ):
            return self._error("21656")
        wanted = set(_PLACEHOLDER.findall(template[1]))
        if not wanted <= set(variables):
            return self._error("21656")
        return _PLACEHOLDER.sub(lambda m: variables[m.group(1)], template[1])

    def _create(
        self,
        account: str,
        form: dict[str, str],
        media: list[str],
        to: str,
        whatsapp: bool,
        body: str,
    ) -> Response:
        sid = ("MM" if media else "SM") + secrets.token_hex(16)
        created = _now()
        service = form.get("MessagingServiceSid") or None
        sender = form.get("From") or (
            f"{WHATSAPP}+15005550006" if whatsapp else "+15005550006"
        )  # a Messaging Service picks a number of its pool
        message: dict[str, Any] = {
            "account_sid": account,
            "api_version": API_VERSION,
            "body": body,
            "date_created": _rfc2822(created),
            "date_sent": None,
            "date_updated": _rfc2822(created),
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": sender if not service or form.get("From") else None,
            "messaging_service_sid": service,
            "num_media": str(len(media)),
            "num_segments": str(_segments(body)),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "accepted" if service else "queued",
            "subresource_uris": {
                "media": f"/{API_VERSION}/Accounts/{account}/Messages/{sid}/Media.json"
            },
            "to": form["To"],
            "uri": f"/{API_VERSION}/Accounts/{account}/Messages/{sid}.json",
            # Not in Twilio's answer: what the sandbox keeps for tests.
            "_media": media,
            "_content_sid": form.get("ContentSid") or None,
            "_created": created.timestamp(),
            "_sender": sender,
        }
        self.messages[(account, sid)] = message
        while len(self.messages) > MAX_MESSAGES:
            self.messages.popitem(last=False)
        answer = _public(message)  # as created: the walk comes after
        self._walk(account, message, to, whatsapp, form.get("StatusCallback", ""))
        return JSONResponse(answer, 201)

    def _outcome(self, account: str, message: dict[str, Any], to: str, whatsapp: bool) -> list[str]:
        if to == UNDELIVERED_NUMBER:
            return ["sent", "undelivered"]
        if to == FAILED_NUMBER:
            return ["failed"]
        if whatsapp and not message["_content_sid"]:
            opened = self.sessions.get((account, to))
            if opened is None or time.time() - opened > SESSION_SECONDS:
                return ["failed"]  # 63016: outside the 24-hour window, only templates
        return ["sent", "delivered", "read"] if whatsapp else ["sent", "delivered"]

    def _walk(
        self, account: str, message: dict[str, Any], to: str, whatsapp: bool, callback: str
    ) -> None:
        steps = self._outcome(account, message, to, whatsapp)
        token = self.tokens.get(account)
        base = self.callback_base
        if callback and token and base and callback.startswith(base):
            self.callbacks.schedule_to(
                callback, [self._status(token, callback, message, s, to) for s in steps]
            )
            return
        for step in steps:  # no receiver: the resource is at its last status at once
            _advance(message, step, to)
        if callback:
            self.callbacks.deliveries.append(
                {"url": callback, "attempt": 0, "headers": {}, "body": None, "at": time.time(),
                 "status": None, "error": "not posted: not under the configured receiver"}
            )  # fmt: skip

    def _status(
        self, token: str, url: str, message: dict[str, Any], status: str, to: str
    ) -> RequestBuilder:
        def build() -> CallbackRequest:
            _advance(message, status, to)
            params = [
                ("AccountSid", message["account_sid"]),
                ("ApiVersion", API_VERSION),
                ("From", message["_sender"]),
                ("MessageSid", message["sid"]),
                ("MessageStatus", status),
                ("SmsSid", message["sid"]),
                ("SmsStatus", status),
                ("To", message["to"]),
            ]
            if message["messaging_service_sid"]:
                params.append(("MessagingServiceSid", message["messaging_service_sid"]))
            if message["error_code"]:
                params.append(("ErrorCode", str(message["error_code"])))
            return _signed(token, url, params)

        return build

    async def list_messages(self, request: Request) -> Response:
        account, denied = self._authenticate(request)
        if denied is not None:
            return denied
        query = request.query_params
        to, sender = query.get("To"), query.get("From")
        after = query.get("DateSent>") or query.get("DateSent>=")
        since = None
        if after:
            try:
                since = dt.datetime.fromisoformat(after[:10]).replace(tzinfo=dt.UTC).timestamp()
            except ValueError:
                return self.error_response(400, code="20001", message="Invalid DateSent")
        size = query.get("PageSize", "50")
        limit = min(int(size), 1000) if size.isdigit() and int(size) > 0 else 50
        found = [
            _public(m)
            for (acct, _), m in reversed(self.messages.items())
            if acct == account
            and (to is None or m["to"] == to)
            and (sender is None or m["_sender"] == sender)
            and (since is None or m["_created"] >= since)
        ][:limit]
        return JSONResponse(
            {
                "messages": found,
                "page": 0,
                "page_size": limit,
                "first_page_uri": f"/{API_VERSION}/Accounts/{account}/Messages.json",
                "next_page_uri": None,
                "previous_page_uri": None,
                "uri": f"/{API_VERSION}/Accounts/{account}/Messages.json",
            }
        )

    async def get_message(self, request: Request) -> Response:
        account, denied = self._authenticate(request)
        if denied is not None:
            return denied
        message = self.messages.get((account, request.path_params["sid"]))
        if message is None:
            return self._error("20404")
        return JSONResponse(_public(message))

    # Incoming messages ----------------------------------------------------------------

    async def inject_inbound(self, request: Request) -> Response:
        login = _basic(request)
        if login is None or not _ACCOUNT_SID.match(login[0]) or not login[1]:
            return self._error("20003")
        account, token = login
        if self.tokens.setdefault(account, token) != token:
            return self._error("20003")
        try:
            data = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"error": "the body is a JSON object"}, 400)
        if not isinstance(data, dict):
            return JSONResponse({"error": "the body is a JSON object"}, 400)
        whatsapp = data.get("channel", "sms") == "whatsapp"
        sender, to = str(data.get("from", "")), str(data.get("to", ""))
        body = str(data.get("body", ""))
        media = [str(u) for u in data.get("mediaUrls") or []][:MAX_MEDIA]
        if not _E164.match(sender) or not _E164.match(to):
            return JSONResponse({"error": "from and to are E.164 numbers"}, 400)
        if self.inbound_url is None:
            return JSONResponse({"error": "no inbound URL is configured"}, 409)
        keyword = body.strip().upper()
        if keyword in OPT_OUT:
            self.opted_out.add((account, sender))
        elif keyword in OPT_IN:
            self.opted_out.discard((account, sender))
        if whatsapp:
            self.sessions[(account, sender)] = time.time()
        sid = ("MM" if media else "SM") + secrets.token_hex(16)
        prefix = WHATSAPP if whatsapp else ""
        params = [
            ("AccountSid", account),
            ("ApiVersion", API_VERSION),
            ("Body", body),
            ("From", prefix + sender),
            ("MessageSid", sid),
            ("NumMedia", str(len(media))),
            ("NumSegments", str(_segments(body))),
            ("SmsMessageSid", sid),
            ("SmsSid", sid),
            ("SmsStatus", "received"),
            ("To", prefix + to),
        ]
        for index, url in enumerate(media):
            params.append((f"MediaUrl{index}", url))
            params.append((f"MediaContentType{index}", "image/jpeg"))
        if whatsapp:
            params.append(("ProfileName", str(data.get("profileName", ""))[:100]))
            params.append(("WaId", sender.lstrip("+")))
        url = self.inbound_url
        self.callbacks.schedule_to(url, [lambda: _signed(token, url, params)])
        return JSONResponse({"sid": sid, "url": url}, 201)


def _advance(message: dict[str, Any], status: str, to: str) -> None:
    message["status"] = status
    message["date_updated"] = _rfc2822(_now())
    if status == "sent":
        message["date_sent"] = message["date_updated"]
        segments = int(message["num_segments"])
        message["price"] = f"-{0.0079 * segments:.5f}"
    elif status == "undelivered":
        message["error_code"], message["error_message"] = 30003, "Unreachable destination handset"
    elif status == "failed":
        if to == FAILED_NUMBER:
            message["error_code"], message["error_message"] = 30008, "Unknown error"
        else:
            message["error_code"] = 63016
            message["error_message"] = (
                "Failed to send freeform message because you are outside the allowed window. Please use a Template."  # noqa: E501
            )


def _signed(token: str, url: str, params: list[tuple[str, str]]) -> CallbackRequest:
    return CallbackRequest(
        urlencode(params).encode(),
        {
            "content-type": "application/x-www-form-urlencoded",
            "user-agent": USER_AGENT,
            "x-twilio-signature": twilio_signature(token, url, params),
            "i-twilio-idempotency-token": secrets.token_hex(16),
        },
    )


def _public(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if not k.startswith("_")}


def create_app() -> TwilioSandbox:
    return TwilioSandbox()

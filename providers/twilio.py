"""Twilio (https://www.twilio.com/docs/messaging/api): SMS and WhatsApp through the
2010-04-01 Messages API, over the shared layer.

No SDK: the `twilio` package brings its own HTTP client (and, for async, its own aiohttp
session), outside the layer's limits, breakers and error mapping; Twilio's REST API is
small and documented, so the client speaks it directly through `providers.http`:

- `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`, form-encoded: `To`, `From` (or
  `MessagingServiceSid`), `Body`, `MediaUrl` (repeated), `ContentSid` +
  `ContentVariables` (an approved template, WhatsApp), `StatusCallback`; answered 201 with
  the Message resource (`sid` `SM…`/`MM…`, `status` `queued`/`accepted`).
- `GET …/Messages.json?To=&From=&DateSent>=` (a page of messages, newest first): how a
  send whose outcome is unknown is looked up before it is tried again.
- `GET /2010-04-01/Accounts/{AccountSid}.json`: the key check (`verify_key`).

Auth is HTTP Basic: the Account SID and auth token, or an API key pair (`SK…` and its
secret) for the account. WhatsApp numbers carry the `whatsapp:` prefix on `To` and `From`.

Errors are `{"code": 21211, "message": "...", "more_info": "...", "status": 400}`:
`parse_error` keeps the numeric code as the vendor code. Twilio's Messages API has no
idempotency key, so a send is never retried by the layer once the request may have
reached Twilio (only a connection that could not be opened and a 429 are tried again);
`outcome_unknown(err)` tells the caller when a send may have gone.

Limits: Twilio queues messages per sender (about 1 segment per second for a long code,
more for short codes and toll-free numbers) and answers 429 (code 20429) past its API
concurrency; `CONFIG.rate_limit` paces calls per credential (override with
OUTBOUND_RATE_LIMITS, e.g. `{"twilio": "100/second"}` for a short code).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from providers.errors import ProviderError
from providers.http import ProviderConfig, ProviderHTTP, ProviderResponse, Timeouts
from providers.retry import RetryPolicy

PROVIDER = "twilio"
API_URL = "https://api.twilio.com"
API_VERSION = "2010-04-01"
WHATSAPP = "whatsapp:"

CONFIG = ProviderConfig(
    name=PROVIDER,
    timeouts=Timeouts(connect=5.0, read=15.0, total=20.0),
    pool_size=20,
    concurrency=20,
    rate_limit="30/second",
    rate_limit_max_wait=2.0,
    retry=RetryPolicy(max_attempts=4, base=0.5, cap=8.0, budget=30.0),
)
VERIFY_TIMEOUTS = Timeouts(connect=3.0, read=5.0, total=5.0)
# The layer's codes for a failure after the request may have been written.
_MAYBE_SENT = frozenset({"timeout", "connection_lost"})

# Twilio error codes the gateway acts on.
INVALID_TO = "21211"  # the 'To' number is not a valid phone number
UNSUBSCRIBED = "21610"  # the recipient replied STOP
NOT_MOBILE = "21614"  # 'To' is not a mobile number
INVALID_FROM = "21606"  # 'From' is not a number of this account


def parse_error(status: int, headers: Mapping[str, str], body: bytes) -> tuple[str | None, str]:
    """Twilio's error body -> (its numeric code as text, its message)."""
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        code = data.get("code")
        return (str(code) if code is not None else None), str(data.get("message") or "")
    return None, body.decode("utf-8", "replace")[:500] if body else ""


def outcome_unknown(err: ProviderError) -> bool:
    """The send may have reached Twilio (a timeout or a cut after the request was written)."""
    return err.status is None and err.vendor_code in _MAYBE_SENT


def permanent(err: ProviderError) -> bool:
    """Twilio refused the message itself (a bad number, an opted-out recipient, a bad
    template): no later try can help. 401/403 (the credential), 429 and 5xx can."""
    return err.status is not None and 400 <= err.status < 500 and err.status not in {401, 403, 429}


@dataclass(frozen=True, slots=True)
class TwilioCredential:
    """An account and how to authenticate as it: the auth token, or an API key pair."""

    account_sid: str
    auth_token: str = field(default="", repr=False)
    api_key_sid: str = ""
    api_key_secret: str = field(default="", repr=False)

    @classmethod
    def of(cls, secrets: Mapping[str, str]) -> TwilioCredential:
        return cls(
            account_sid=secrets.get("account_sid", ""),
            auth_token=secrets.get("auth_token", ""),
            api_key_sid=secrets.get("api_key_sid", ""),
            api_key_secret=secrets.get("api_key_secret", ""),
        )

    @property
    def login(self) -> tuple[str, str]:
        if self.api_key_sid and self.api_key_secret:
            return self.api_key_sid, self.api_key_secret
        return self.account_sid, self.auth_token

    @property
    def secret(self) -> str:
        """What the layer keys this credential's breaker and budget on (never logged)."""
        user, password = self.login
        return f"{user}:{password}"


@dataclass(frozen=True, slots=True)
class Message:
    """A Message resource as Twilio answers it (the fields the gateway reads)."""

    sid: str
    status: str
    to: str
    sender: str
    body: str
    num_segments: int
    error_code: str | None
    error_message: str | None
    date_created: str
    price: str | None = None
    price_unit: str | None = None

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Message:
        code = data.get("error_code")
        segments = str(data.get("num_segments") or "")
        return cls(
            sid=str(data["sid"]),
            status=str(data.get("status") or ""),
            to=str(data.get("to") or ""),
            sender=str(data.get("from") or ""),
            body=str(data.get("body") or ""),
            num_segments=int(segments) if segments.isdigit() else 1,
            error_code=None if code in (None, "") else str(code),
            error_message=data.get("error_message"),
            date_created=str(data.get("date_created") or ""),
            price=None if data.get("price") is None else str(data["price"]),
            price_unit=data.get("price_unit"),
        )


def address(number: str, *, whatsapp: bool) -> str:
    """A number as Twilio's `To`/`From` takes it on a channel."""
    return f"{WHATSAPP}{number}" if whatsapp else number


class TwilioClient:
    """One account's view of Twilio. Cheap to build per call; the session is shared."""

    def __init__(
        self,
        http: ProviderHTTP,
        credential: TwilioCredential,
        *,
        base_url: str | None = None,
        labels: Mapping[str, str] | None = None,
        own_credential: bool = False,
        guard_url: bool = False,
    ) -> None:
        self.http = http
        self.credential = credential
        self.base_url = (base_url or API_URL).rstrip("/")
        self.labels = dict(labels or {})
        self.own_credential = own_credential
        self.guard_url = guard_url

    def __repr__(self) -> str:  # never the token
        return f"TwilioClient(account={self.credential.account_sid!r}, base_url={self.base_url!r})"

    def _headers(self) -> dict[str, str]:
        user, password = self.credential.login
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {token}", "Accept": "application/json"}

    def _account_url(self, suffix: str = "") -> str:
        sid = quote(self.credential.account_sid, safe="")
        return f"{self.base_url}/{API_VERSION}/Accounts/{sid}{suffix}"

    async def _call(
        self,
        method: str,
        url: str,
        operation: str,
        *,
        form: Sequence[tuple[str, str]] | None = None,
        params: Mapping[str, str] | None = None,
        timeouts: Timeouts | None = None,
    ) -> ProviderResponse:
        headers = self._headers()
        data = None
        if form is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            data = urlencode(list(form))
        return await self.http.request(
            method,
            url,
            operation=operation,
            credential=self.credential.secret,
            headers=headers,
            data=data,
            params=params,
            timeouts=timeouts,
            parse_error=parse_error,
            labels=self.labels,
            own_credential=self.own_credential,
            guard_url=self.guard_url,
        )

    async def send_message(
        self,
        *,
        to: str,
        sender: str | None = None,
        messaging_service_sid: str | None = None,
        body: str | None = None,
        media_urls: Sequence[str] = (),
        content_sid: str | None = None,
        content_variables: Mapping[str, str] | None = None,
        status_callback: str | None = None,
    ) -> Message:
        """Create one message (SMS, or WhatsApp when `to` carries `whatsapp:`). Not retried
        once the request may have been written (Twilio has no idempotency key)."""
        if not sender and not messaging_service_sid:
            raise ValueError("a message needs a sender number or a Messaging Service")
        form: list[tuple[str, str]] = [("To", to)]
        if messaging_service_sid:
            form.append(("MessagingServiceSid", messaging_service_sid))
        if sender:
            form.append(("From", sender))
        if body is not None:
            form.append(("Body", body))
        form.extend(("MediaUrl", url) for url in media_urls)
        if content_sid:
            form.append(("ContentSid", content_sid))
            if content_variables:
                form.append(("ContentVariables", json.dumps(dict(content_variables))))
        if status_callback:
            form.append(("StatusCallback", status_callback))
        response = await self._call(
            "POST", self._account_url("/Messages.json"), "send_message", form=form
        )
        return Message.from_api(response.json())

    async def get_message(self, sid: str) -> Message:
        response = await self._call(
            "GET",
            self._account_url(f"/Messages/{quote(sid, safe='')}.json"),
            "get_message",
        )
        return Message.from_api(response.json())

    async def list_messages(
        self,
        *,
        to: str | None = None,
        sender: str | None = None,
        sent_after: dt.date | None = None,
        page_size: int = 50,
    ) -> list[Message]:
        """One page of messages, newest first, filtered as Twilio filters them."""
        params: dict[str, str] = {"PageSize": str(page_size)}
        if to:
            params["To"] = to
        if sender:
            params["From"] = sender
        if sent_after is not None:
            params["DateSent>"] = sent_after.isoformat()
        response = await self._call(
            "GET", self._account_url("/Messages.json"), "list_messages", params=params
        )
        data = response.json() or {}
        return [Message.from_api(m) for m in data.get("messages") or [] if isinstance(m, dict)]

    async def fetch_account(self, *, timeouts: Timeouts | None = None) -> dict[str, Any]:
        response = await self._call(
            "GET", self._account_url(".json"), "verify_credential", timeouts=timeouts
        )
        data = response.json()
        return data if isinstance(data, dict) else {}


async def verify_key(client: TwilioClient) -> None:
    """Twilio's cheap authenticated call: fetch the account. 401/403 mean refused (a
    wrong SID or token raise 401 with code 20003). Raises ProviderError when not accepted."""
    await client.fetch_account(timeouts=VERIFY_TIMEOUTS)

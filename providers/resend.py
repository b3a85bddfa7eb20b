"""Resend (https://resend.com/docs/api-reference): transactional email over its HTTP API.

No SDK: Resend's Python SDK is synchronous, so the client speaks the documented
API on the shared layer (providers.http): `POST /emails` with `Authorization:
Bearer re_…` and an `Idempotency-Key` (so a retried send never sends twice), and
`GET /emails/{id}` (also the key check, `verify_key`). Error bodies are
`{"statusCode", "message", "name"}`; a 429 carries `retry-after` and `ratelimit-*`
headers, which the layer honours.

Resend's documented default limit is 2 requests per second per team (key);
`CONFIG.rate_limit` keeps us under it (override with OUTBOUND_RATE_LIMITS).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from providers.errors import ProviderError
from providers.http import BearerClient, ProviderConfig, ProviderResponse, Timeouts
from providers.retry import RetryPolicy

PROVIDER = "resend"
API_URL = "https://api.resend.com"

CONFIG = ProviderConfig(
    name=PROVIDER,
    timeouts=Timeouts(connect=5.0, read=15.0, total=20.0),
    pool_size=20,
    concurrency=20,
    rate_limit="2/second",
    rate_limit_max_wait=2.0,
    retry=RetryPolicy(max_attempts=4, base=0.5, cap=8.0, budget=30.0),
)
# The key check answers in a save or a health probe: short timeouts.
VERIFY_TIMEOUTS = Timeouts(connect=3.0, read=5.0, total=5.0)
_NO_SUCH_EMAIL = "00000000-0000-4000-8000-000000000000"


def parse_error(status: int, headers: Mapping[str, str], body: bytes) -> tuple[str | None, str]:
    """Resend's error body: {"statusCode": 422, "message": "...", "name": "validation_error"}."""
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        name = data.get("name")
        return (str(name) if name else None), str(data.get("message") or "")
    return None, body.decode("utf-8", "replace")[:500] if body else ""


@dataclass(frozen=True, slots=True)
class SentEmail:
    id: str


@dataclass(frozen=True, slots=True)
class Email:
    id: str
    sender: str
    to: list[str]
    subject: str
    created_at: str
    last_event: str | None
    html: str | None = None
    text: str | None = None
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)
    reply_to: list[str] = field(default_factory=list)
    scheduled_at: str | None = None

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Email:
        def as_list(value: Any) -> list[str]:
            if value is None:
                return []
            return [str(v) for v in value] if isinstance(value, list) else [str(value)]

        return cls(
            id=str(data["id"]),
            sender=str(data.get("from") or ""),
            to=as_list(data.get("to")),
            subject=str(data.get("subject") or ""),
            created_at=str(data.get("created_at") or ""),
            last_event=data.get("last_event"),
            html=data.get("html"),
            text=data.get("text"),
            cc=as_list(data.get("cc")),
            bcc=as_list(data.get("bcc")),
            reply_to=as_list(data.get("reply_to")),
            scheduled_at=data.get("scheduled_at"),
        )


MAX_BATCH = 100  # emails per POST /emails/batch


def email_payload(
    *,
    sender: str,
    to: str | Sequence[str],
    subject: str,
    html: str | None = None,
    text: str | None = None,
    cc: Sequence[str] = (),
    bcc: Sequence[str] = (),
    reply_to: Sequence[str] = (),
    headers: Mapping[str, str] | None = None,
    tags: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One email as Resend's API takes it (alone, or as an item of a batch)."""
    payload: dict[str, Any] = {
        "from": sender,
        "to": [to] if isinstance(to, str) else list(to),
        "subject": subject,
    }
    if html is not None:
        payload["html"] = html
    if text is not None:
        payload["text"] = text
    if cc:
        payload["cc"] = list(cc)
    if bcc:
        payload["bcc"] = list(bcc)
    if reply_to:
        payload["reply_to"] = list(reply_to)
    if headers:
        payload["headers"] = dict(headers)
    if tags:
        payload["tags"] = [{"name": k, "value": v} for k, v in tags.items()]
    return payload


class ResendClient(BearerClient):
    """One credential's view of Resend. Cheap to build per call; the session is shared."""

    API_URL = API_URL

    async def send_email(
        self,
        *,
        sender: str,
        to: str | Sequence[str],
        subject: str,
        idempotency_key: str | None,
        html: str | None = None,
        text: str | None = None,
        cc: Sequence[str] = (),
        bcc: Sequence[str] = (),
        reply_to: Sequence[str] = (),
        headers: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> SentEmail:
        """Send one email. Pass an idempotency key (e.g. the outbox row id): with it a
        retried send is answered with the first send's id instead of a second email, and
        the layer may retry timeouts and cut connections."""
        payload = email_payload(
            sender=sender,
            to=to,
            subject=subject,
            html=html,
            text=text,
            cc=cc,
            bcc=bcc,
            reply_to=reply_to,
            headers=headers,
            tags=tags,
        )
        return await self.send_prepared(payload, idempotency_key=idempotency_key)

    async def send_prepared(
        self, payload: Mapping[str, Any], *, idempotency_key: str | None
    ) -> SentEmail:
        """Send one email already built with `email_payload`."""
        response = await self._post("/emails", "send_email", dict(payload), idempotency_key)
        return SentEmail(id=str(response.json()["id"]))

    async def send_batch(
        self, emails: Sequence[Mapping[str, Any]], *, idempotency_key: str | None
    ) -> list[SentEmail]:
        """Send up to MAX_BATCH emails (each built with `email_payload`) in one request:
        one call against the account's rate limit instead of one per email. Resend checks
        the whole batch first: one invalid email refuses all of them (422). The ids come
        back in the order sent."""
        if not 1 <= len(emails) <= MAX_BATCH:
            raise ValueError(f"a batch holds 1 to {MAX_BATCH} emails")
        response = await self._post("/emails/batch", "send_batch", list(emails), idempotency_key)
        data = response.json().get("data") or []
        if len(data) != len(emails):
            raise ProviderError(
                PROVIDER, "send_batch", status=response.status,
                message=f"batch answered {len(data)} ids for {len(emails)} emails",
                retryable=False,
            )  # fmt: skip
        return [SentEmail(id=str(item["id"])) for item in data]

    async def _post(
        self, path: str, operation: str, body: Any, idempotency_key: str | None
    ) -> ProviderResponse:
        return await self.http.request(
            "POST",
            f"{self.base_url}{path}",
            operation=operation,
            credential=self._api_key,
            headers=self._headers(),
            json=body,
            idempotency_key=idempotency_key,
            parse_error=parse_error,
            labels=self.labels,
            own_credential=self.own_credential,
            guard_url=self.guard_url,
        )

    async def get_email(
        self, email_id: str, *, operation: str = "get_email", timeouts: Timeouts | None = None
    ) -> Email:
        response = await self.http.request(
            "GET",
            f"{self.base_url}/emails/{quote(email_id, safe='')}",
            operation=operation,
            credential=self._api_key,
            headers=self._headers(),
            timeouts=timeouts,
            parse_error=parse_error,
            labels=self.labels,
            own_credential=self.own_credential,
            guard_url=self.guard_url,
        )
        return Email.from_api(response.json())


async def verify_key(client: ResendClient) -> None:
    """Resend's cheap authenticated call, as `client`'s key: ask about an email id that
    cannot exist. The key is checked before the lookup, so 404 means accepted and 401/403
    refused. A sending-only key answers `restricted_api_key`, which is a valid key for
    everything we do with it. Raises ProviderError when the key was not accepted."""
    try:
        await client.get_email(
            _NO_SUCH_EMAIL, operation="verify_credential", timeouts=VERIFY_TIMEOUTS
        )
    except ProviderError as err:
        if err.vendor_code == "restricted_api_key" or err.status == 404:
            return
        raise

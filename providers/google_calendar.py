"""Google Calendar (https://developers.google.com/calendar/api/v3/reference), v3, over the
shared layer, as one connected account (an OAuth access token from a `TokenSource`).

No SDK: google-api-python-client is synchronous and brings its own transport; the REST API
is small and documented, so the client speaks it through `providers.http`:

- `GET /calendar/v3/users/me/calendarList` — the calendars the account sees.
- `GET /calendar/v3/calendars/{calendarId}/events` — `timeMin`, `timeMax` (RFC 3339),
  `maxResults`, `pageToken` → `nextPageToken`; `singleEvents=true&orderBy=startTime` so a
  recurring event comes as its occurrences, in time order.
- `POST …/events` — insert. Google has no idempotency header, but takes a client-made event
  `id` (base32hex, 5–1024 characters): `insert_event` makes one, so a retried insert is
  safe (a second arrival answers 409 `duplicate`, and the client reads the event made by
  the first). `conferenceDataVersion=1` with `conferenceData.createRequest` asks for a Meet
  link; `sendUpdates` says who is mailed.
- `PATCH|DELETE …/events/{eventId}` — update, delete (410 `deleted` when already gone).
- `GET|POST …/calendars/{calendarId}/acl` — sharing (a rule: `role` and `scope`).

Errors are `{"error": {"code", "message", "errors": [{"domain", "reason", "message"}],
"status"}}`: `parse_error` keeps the first reason (`notFound`, `rateLimitExceeded`,
`duplicate`…) as the vendor code. 401 (the token expired or was withdrawn mid-way) renews
the token once (`OAuthApiClient`); 429 and 5xx are retried by the layer for idempotent
calls and for inserts (which carry their id).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from providers.errors import ProviderError
from providers.http import ProviderConfig, Timeouts
from providers.oauth import OAuthApiClient
from providers.retry import RetryPolicy

PROVIDER = "google_calendar"
API_URL = "https://www.googleapis.com"
SCOPE = "https://www.googleapis.com/auth/calendar"
_BASE32HEX = "0123456789abcdefghijklmnopqrstuv"

CONFIG = ProviderConfig(
    name=PROVIDER,
    timeouts=Timeouts(connect=5.0, read=15.0, total=20.0),
    pool_size=20,
    concurrency=50,
    # Google's default is 600 queries per minute per user: a burst of one account's calls
    # stays under it (override with OUTBOUND_RATE_LIMITS).
    rate_limit="10/second",
    rate_limit_max_wait=2.0,
    retry=RetryPolicy(max_attempts=4, base=0.3, cap=4.0, budget=20.0),
)


def parse_error(status: int, headers: Mapping[str, str], body: bytes) -> tuple[str | None, str]:
    """Google's error body -> (the first error's reason, the message); the OAuth
    endpoints' `{"error": "invalid_grant"}` too."""
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            reasons = [e.get("reason") for e in error.get("errors") or [] if isinstance(e, dict)]
            code = next((r for r in reasons if r), None) or error.get("status")
            return (str(code) if code else None), str(error.get("message") or "")
        if isinstance(error, str):
            return error, str(data.get("error_description") or "")
    return None, body.decode("utf-8", "replace")[:500] if body else ""


def new_event_id() -> str:
    """A client-made event id (base32hex, as Google requires)."""
    return "sb" + "".join(secrets.choice(_BASE32HEX) for _ in range(26))


@dataclass(frozen=True, slots=True)
class Page:
    items: list[dict[str, Any]]
    next_page_token: str | None


class GoogleCalendarClient(OAuthApiClient):
    API_URL = API_URL
    parse_error = staticmethod(parse_error)

    @staticmethod
    def _cal(calendar_id: str) -> str:
        return f"/calendar/v3/calendars/{quote(calendar_id, safe='@.')}"

    async def calendar_list(self, *, page_token: str | None = None, max_results: int = 250) -> Page:
        params = {"maxResults": str(max_results)}
        if page_token:
            params["pageToken"] = page_token
        answer = await self.call(
            "GET", "/calendar/v3/users/me/calendarList", "calendar_list", params=params
        )
        return _page(answer.json())

    async def list_events(
        self,
        calendar_id: str,
        *,
        time_min: str | None = None,
        time_max: str | None = None,
        page_token: str | None = None,
        max_results: int = 250,
    ) -> Page:
        params = {
            "maxResults": str(max_results),
            "singleEvents": "true",
            "orderBy": "startTime",
        }
        for name, value in (
            ("timeMin", time_min),
            ("timeMax", time_max),
            ("pageToken", page_token),
        ):
            if value:
                params[name] = value
        answer = await self.call(
            "GET", f"{self._cal(calendar_id)}/events", "list_events", params=params
        )
        return _page(answer.json())

    async def get_event(self, calendar_id: str, event_id: str) -> dict[str, Any]:
        answer = await self.call(
            "GET", f"{self._cal(calendar_id)}/events/{quote(event_id, safe='')}", "get_event"
        )
        return dict(answer.json() or {})

    async def insert_event(
        self,
        calendar_id: str,
        event: Mapping[str, Any],
        *,
        conference: bool = False,
        send_updates: str = "none",
    ) -> dict[str, Any]:
        """Insert `event` under a client-made id (kept when the caller gave one), so a
        retry never makes a second event."""
        body = dict(event)
        body.setdefault("id", new_event_id())
        params = {"sendUpdates": send_updates}
        if conference:
            params["conferenceDataVersion"] = "1"
        try:
            answer = await self.call(
                "POST",
                f"{self._cal(calendar_id)}/events",
                "insert_event",
                params=params,
                json=body,
                idempotency_key=str(body["id"]),
            )
        except ProviderError as err:
            if err.status == 409 and err.vendor_code == "duplicate":
                # An earlier attempt of this very call made it (its answer was lost).
                return await self.get_event(calendar_id, str(body["id"]))
            raise
        return dict(answer.json() or {})

    async def patch_event(
        self,
        calendar_id: str,
        event_id: str,
        changes: Mapping[str, Any],
        *,
        conference: bool = False,
        send_updates: str = "none",
    ) -> dict[str, Any]:
        params = {"sendUpdates": send_updates}
        if conference:
            params["conferenceDataVersion"] = "1"
        answer = await self.call(
            "PATCH",
            f"{self._cal(calendar_id)}/events/{quote(event_id, safe='')}",
            "patch_event",
            params=params,
            json=dict(changes),
            # The same changes applied twice are the same event: safe to retry.
            idempotency_key=f"patch-{event_id}-{secrets.token_hex(8)}",
        )
        return dict(answer.json() or {})

    async def delete_event(
        self, calendar_id: str, event_id: str, *, send_updates: str = "none"
    ) -> None:
        try:
            await self.call(
                "DELETE",
                f"{self._cal(calendar_id)}/events/{quote(event_id, safe='')}",
                "delete_event",
                params={"sendUpdates": send_updates},
            )
        except ProviderError as err:
            if err.status == 410:  # already deleted (an earlier attempt's answer was lost)
                return
            raise

    async def list_acl(self, calendar_id: str) -> list[dict[str, Any]]:
        answer = await self.call("GET", f"{self._cal(calendar_id)}/acl", "list_acl")
        return [r for r in (answer.json() or {}).get("items") or [] if isinstance(r, dict)]

    async def insert_acl(
        self, calendar_id: str, *, role: str, scope_type: str, scope_value: str
    ) -> dict[str, Any]:
        """Share the calendar: one rule. Setting the same rule again changes nothing, so
        the call is safe to retry."""
        answer = await self.call(
            "POST",
            f"{self._cal(calendar_id)}/acl",
            "insert_acl",
            params={"sendNotifications": "false"},
            json={"role": role, "scope": {"type": scope_type, "value": scope_value}},
            idempotency_key=f"acl-{scope_type}-{scope_value}-{role}",
        )
        return dict(answer.json() or {})


def _page(data: Any) -> Page:
    data = data if isinstance(data, dict) else {}
    items = [i for i in data.get("items") or [] if isinstance(i, dict)]
    token = data.get("nextPageToken")
    return Page(items, str(token) if token else None)

"""Zoom (https://developers.zoom.us/docs/api/), REST API v2 and server-to-server OAuth,
over the shared layer.

No SDK (Zoom publishes none for Python's asyncio); the API is plain JSON over HTTPS:

- Server-to-server OAuth: `POST {oauth}/oauth/token?grant_type=account_credentials&
  account_id=…` with HTTP Basic (client id, client secret) → `access_token`, `expires_in`
  (an hour). There is no refresh token: a new access token is asked the same way. A
  withdrawn app answers 400/401 `invalid_client` (`oauth.GrantRevoked`).
  `POST {oauth}/oauth/revoke?token=…` withdraws a token.
- `GET /users/me` (the account's user: the key check), meetings: `POST /users/me/meetings`
  (type 1 instant, 2 scheduled, 8 recurring with `recurrence`), `GET|PATCH|DELETE
  /meetings/{meetingId}`, `GET /users/me/meetings` (`page_size`, `next_page_token`),
  registrants `GET|POST /meetings/{meetingId}/registrants`, past participants
  `GET /past_meetings/{uuid}/participants`, cloud recordings `GET /users/me/recordings`
  (`from`, `to`) and `GET /meetings/{meetingId}/recordings`.

Errors are `{"code": 3001, "message": "Meeting does not exist: 123."}`: the numeric code is
the vendor code. Zoom has no idempotency key: a create or a registration is never retried
once the request may have reached Zoom (only a connection that never opened and a 429
are tried again); reads, PATCH and DELETE are (a DELETE of a meeting already gone answers
404 `3001`, which `delete_meeting` takes as done).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from providers.errors import ProviderError
from providers.http import ProviderConfig, ProviderHTTP, Timeouts
from providers.oauth import OAuthApiClient, Tokens, revoke_token, token_request
from providers.retry import RetryPolicy

PROVIDER = "zoom"
API_URL = "https://api.zoom.us/v2"
OAUTH_URL = "https://zoom.us"
MEETING_NOT_FOUND = "3001"
TYPES = {"INSTANT": 1, "SCHEDULED": 2, "RECURRING": 8}

CONFIG = ProviderConfig(
    name=PROVIDER,
    timeouts=Timeouts(connect=5.0, read=15.0, total=20.0),
    pool_size=20,
    concurrency=30,
    # Zoom's "medium" APIs allow 20 requests per second per account (Pro).
    rate_limit="20/second",
    rate_limit_max_wait=2.0,
    retry=RetryPolicy(max_attempts=4, base=0.5, cap=8.0, budget=30.0),
)
VERIFY_TIMEOUTS = Timeouts(connect=3.0, read=5.0, total=5.0)


def parse_error(status: int, headers: Mapping[str, str], body: bytes) -> tuple[str | None, str]:
    """Zoom's `{"code", "message"}` (the OAuth endpoints' `{"reason", "error"}` too)."""
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        if "error" in data and isinstance(data["error"], str):
            return data["error"], str(data.get("reason") or data.get("error_description") or "")
        code = data.get("code")
        return (str(code) if code is not None else None), str(data.get("message") or "")
    return None, body.decode("utf-8", "replace")[:500] if body else ""


@dataclass(frozen=True, slots=True)
class ZoomApp:
    """A server-to-server OAuth app of one Zoom account, and where Zoom is."""

    account_id: str
    client_id: str
    client_secret: str
    oauth_url: str = OAUTH_URL
    api_url: str = API_URL
    guard_url: bool = False

    def __repr__(self) -> str:  # never the secret
        return f"ZoomApp(account_id={self.account_id!r}, client_id={self.client_id!r})"

    @classmethod
    def of(cls, secrets: Mapping[str, str], base_url: str | None, *, guard: bool) -> ZoomApp:
        """From a credential's fields; a `base_url` (an emulator, a proxy) serves both
        the OAuth endpoints and the API (under `/v2`)."""
        base = (base_url or "").rstrip("/")
        return cls(
            account_id=secrets.get("account_id", ""),
            client_id=secrets.get("client_id", ""),
            client_secret=secrets.get("client_secret", ""),
            oauth_url=base or OAUTH_URL,
            api_url=f"{base}/v2" if base else API_URL,
            guard_url=guard,
        )

    def _basic(self) -> dict[str, str]:
        pair = f"{self.client_id}:{self.client_secret}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode()}


async def account_token(http: ProviderHTTP, app: ZoomApp) -> Tokens:
    """A new access token for the app (`grant_type=account_credentials`)."""
    return await token_request(
        http,
        f"{app.oauth_url}/oauth/token",
        {},
        operation="oauth.account_credentials",
        params={"grant_type": "account_credentials", "account_id": app.account_id},
        headers=app._basic(),
        guard=app.guard_url,
        credential=f"{app.client_id}:{app.client_secret}",
    )


async def revoke(http: ProviderHTTP, app: ZoomApp, token: str) -> None:
    await revoke_token(
        http, f"{app.oauth_url}/oauth/revoke", token, headers=app._basic(), guard=app.guard_url
    )


def uuid_path(uuid: str) -> str:
    """A meeting instance's uuid in a path: Zoom asks for it encoded twice when it starts
    with `/` or contains `//`."""
    once = quote(uuid, safe="")
    return quote(once, safe="") if uuid.startswith("/") or "//" in uuid else once


@dataclass(frozen=True, slots=True)
class Page:
    items: list[dict[str, Any]]
    next_page_token: str | None


def _page(data: Any, key: str) -> Page:
    data = data if isinstance(data, dict) else {}
    items = [i for i in data.get(key) or [] if isinstance(i, dict)]
    token = data.get("next_page_token")
    return Page(items, str(token) if token else None)


class ZoomClient(OAuthApiClient):
    API_URL = API_URL
    parse_error = staticmethod(parse_error)

    async def me(self, *, timeouts: Timeouts | None = None) -> dict[str, Any]:
        answer = await self.call("GET", "/users/me", "get_user", timeouts=timeouts)
        return dict(answer.json() or {})

    async def create_meeting(self, meeting: Mapping[str, Any]) -> dict[str, Any]:
        answer = await self.call("POST", "/users/me/meetings", "create_meeting", json=dict(meeting))
        return dict(answer.json() or {})

    async def get_meeting(self, meeting_id: str) -> dict[str, Any]:
        answer = await self.call("GET", f"/meetings/{quote(meeting_id, safe='')}", "get_meeting")
        return dict(answer.json() or {})

    async def update_meeting(self, meeting_id: str, changes: Mapping[str, Any]) -> None:
        await self.call(
            "PATCH",
            f"/meetings/{quote(meeting_id, safe='')}",
            "update_meeting",
            json=dict(changes),
            # The same changes applied twice are the same meeting: safe to retry.
            idempotency_key=f"patch-{meeting_id}",
        )

    async def delete_meeting(self, meeting_id: str) -> None:
        try:
            await self.call("DELETE", f"/meetings/{quote(meeting_id, safe='')}", "delete_meeting")
        except ProviderError as err:
            if err.status == 404 and err.vendor_code == MEETING_NOT_FOUND:
                return  # gone already (an earlier attempt's answer was lost)
            raise

    async def list_meetings(
        self, *, page_size: int = 30, page_token: str | None = None, kind: str = "scheduled"
    ) -> Page:
        params = {"type": kind, "page_size": str(page_size)}
        if page_token:
            params["next_page_token"] = page_token
        answer = await self.call("GET", "/users/me/meetings", "list_meetings", params=params)
        return _page(answer.json(), "meetings")

    async def add_registrant(
        self, meeting_id: str, *, email: str, first_name: str, last_name: str = ""
    ) -> dict[str, Any]:
        answer = await self.call(
            "POST",
            f"/meetings/{quote(meeting_id, safe='')}/registrants",
            "add_registrant",
            json={"email": email, "first_name": first_name, "last_name": last_name},
        )
        return dict(answer.json() or {})

    async def list_registrants(
        self, meeting_id: str, *, page_size: int = 30, page_token: str | None = None
    ) -> Page:
        params = {"page_size": str(page_size), "status": "approved"}
        if page_token:
            params["next_page_token"] = page_token
        answer = await self.call(
            "GET",
            f"/meetings/{quote(meeting_id, safe='')}/registrants",
            "list_registrants",
            params=params,
        )
        return _page(answer.json(), "registrants")

    async def past_participants(
        self, uuid: str, *, page_size: int = 30, page_token: str | None = None
    ) -> Page:
        params = {"page_size": str(page_size)}
        if page_token:
            params["next_page_token"] = page_token
        answer = await self.call(
            "GET",
            f"/past_meetings/{uuid_path(uuid)}/participants",
            "past_participants",
            params=params,
        )
        return _page(answer.json(), "participants")

    async def list_recordings(
        self,
        *,
        date_from: str,
        date_to: str,
        page_size: int = 30,
        page_token: str | None = None,
    ) -> Page:
        params = {"from": date_from, "to": date_to, "page_size": str(page_size)}
        if page_token:
            params["next_page_token"] = page_token
        answer = await self.call("GET", "/users/me/recordings", "list_recordings", params=params)
        return _page(answer.json(), "meetings")

    async def meeting_recordings(self, meeting_id: str) -> dict[str, Any]:
        answer = await self.call(
            "GET", f"/meetings/{uuid_path(meeting_id)}/recordings", "meeting_recordings"
        )
        return dict(answer.json() or {})


async def verify_key(http: ProviderHTTP, app: ZoomApp) -> None:
    """Zoom's cheap check of a server-to-server app: ask for an access token. Raises
    ProviderError when it is not accepted (GrantRevoked: the app's credentials)."""
    from providers.oauth import GrantRevoked

    try:
        await account_token(http, app)
    except GrantRevoked as exc:
        raise ProviderError(
            PROVIDER, "verify_credential", status=401, vendor_code=exc.code, message=str(exc)
        ) from None

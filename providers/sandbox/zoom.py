"""Zoom's REST API v2 and its server-to-server OAuth, emulated; and Zoom's signed webhooks.

Paths as Zoom's, relative to where this app is served (`{PUBLIC_URL}/sandbox/zoom`, both
`https://zoom.us` and, under `/v2`, `https://api.zoom.us/v2`):

- `POST /oauth/token?grant_type=account_credentials&account_id=…` with HTTP Basic (any
  client id; a secret containing `invalid`, or an app withdrawn with `/_sandbox/revoke`, is
  401 `{"reason": "Invalid client_id or client_secret", "error": "invalid_client"}`);
  `POST /oauth/revoke?token=…`.
- `GET /v2/users/me`; `POST|GET /v2/users/me/meetings` (`page_size` ≤ 300,
  `next_page_token`); `GET|PATCH|DELETE /v2/meetings/{id}`; `GET|POST
  /v2/meetings/{id}/registrants`; `GET /v2/past_meetings/{uuid}/participants`;
  `GET /v2/users/me/recordings?from&to`; `GET /v2/meetings/{id}/recordings`.
  Meetings are type 1 (instant), 2 (scheduled) or 8 (recurring, with `recurrence`: type
  1 daily, 2 weekly with `weekly_days`, 3 monthly with `monthly_day`, and `end_times` or
  `end_date_time`; the answer lists its `occurrences`).
- Errors are `{"code": 3001, "message": "Meeting does not exist: 123."}` (124 for a bad or
  expired token, 300 for invalid fields, 429 past the rate limit).

Webhooks (once `configure_webhooks(url, secret)`): `meeting.started`, `meeting.ended`,
`recording.completed`, as Zoom sends them — JSON `{"event", "event_ts", "payload":
{"account_id", "object"}}` with `x-zm-request-timestamp` and `x-zm-signature:
v0=HMAC-SHA256(secret, "v0:{timestamp}:{body}")` hex. They are driven by controls:
`POST /_sandbox/meetings/{id}/start`, `…/end` (`{"participants": [{"name", "email"}]}`),
`…/recording`. Also `POST /_sandbox/expire` (every access token expires now) and
`POST /_sandbox/revoke` (`{"client_id"}`: the app is withdrawn).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from kit.signing import zoom_signature
from providers.sandbox.base import Sandbox, bearer
from providers.sandbox.callbacks import CallbackRequest

ACCESS_SECONDS = 3599
SCOPES = "meeting:read:admin meeting:write:admin recording:read:admin user:read:admin"
_CODES = {400: 300, 401: 124, 403: 200, 404: 3001, 409: 3000, 429: 429, 500: 500, 503: 503}


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@dataclass
class Account:
    id: str
    user_id: str = field(default_factory=lambda: secrets.token_urlsafe(16))

    @property
    def email(self) -> str:
        return f"host@{self.id}.zoom.test"


class ZoomSandbox(Sandbox):
    provider = "zoom"

    def __init__(self) -> None:
        super().__init__()
        self.accounts: dict[str, Account] = {}
        self.revoked_apps: set[str] = set()
        self.tokens: dict[str, tuple[str, str, float]] = {}  # token -> account, client, exp
        self.meetings: dict[str, dict[str, Any]] = {}
        self.registrants: dict[str, list[dict[str, Any]]] = {}
        self.participants: dict[str, list[dict[str, Any]]] = {}  # instance uuid -> list
        self.recordings: dict[str, dict[str, Any]] = {}  # instance uuid -> recording
        self.webhook_secret: str | None = None

    def reset_state(self) -> None:
        for store in (self.accounts, self.tokens, self.meetings, self.registrants):
            store.clear()
        self.participants.clear()
        self.recordings.clear()
        self.revoked_apps.clear()

    def configure_webhooks(self, url: str | None, secret: str) -> None:
        self.callbacks.configure(url)
        self.webhook_secret = secret

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/oauth/token", self.token, methods=["POST"]),
            Route("/oauth/revoke", self.revoke, methods=["POST"]),
            Route("/v2/users/me", self.me),
            Route("/v2/users/me/meetings", self.user_meetings, methods=["GET", "POST"]),
            Route("/v2/users/me/recordings", self.user_recordings),
            Route(
                "/v2/meetings/{meeting_id}/registrants",
                self.meeting_registrants,
                methods=["GET", "POST"],
            ),
            Route("/v2/meetings/{meeting_id:path}/recordings", self.meeting_recordings),
            Route("/v2/meetings/{meeting_id}", self.meeting, methods=["GET", "PATCH", "DELETE"]),
            Route("/v2/past_meetings/{uuid:path}/participants", self.past_participants),
        ]

    def _control_routes(self) -> list[BaseRoute]:
        p = "/_sandbox"
        return [
            *super()._control_routes(),
            Route(f"{p}/expire", self.expire, methods=["POST"]),
            Route(f"{p}/revoke", self.revoke_app, methods=["POST"]),
            Route(f"{p}/meetings/{{meeting_id}}/{{what}}", self.drive, methods=["POST"]),
        ]

    def error_response(
        self,
        status: int,
        *,
        code: str | None = None,
        message: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        number = int(code) if code and code.isdigit() else _CODES.get(status, status)
        return JSONResponse(
            {"code": number, "message": message or "Error"}, status, headers=headers
        )

    # OAuth ------------------------------------------------------------------------------

    def _app(self, request: Request) -> tuple[str, str] | None:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("basic "):
            return None
        try:
            client, _, secret = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return (client, secret) if client and secret else None

    def _oauth_error(self, status: int, error: str, reason: str) -> Response:
        return JSONResponse({"reason": reason, "error": error}, status)

    async def token(self, request: Request) -> Response:
        query = request.query_params
        if query.get("grant_type") != "account_credentials":
            return self._oauth_error(400, "unsupported_grant_type", "Unsupported grant type")
        app = self._app(request)
        if app is None or "invalid" in app[1] or app[0] in self.revoked_apps:
            return self._oauth_error(401, "invalid_client", "Invalid client_id or client_secret")
        account_id = query.get("account_id") or ""
        if not account_id:
            return self._oauth_error(400, "invalid_request", "Bad Request")
        self.accounts.setdefault(account_id, Account(account_id))
        token = "eyJzb29t." + secrets.token_urlsafe(32)
        self.tokens[token] = (account_id, app[0], time.time() + ACCESS_SECONDS)
        return JSONResponse(
            {
                "access_token": token,
                "token_type": "bearer",
                "expires_in": ACCESS_SECONDS,
                "scope": SCOPES,
                "api_url": str(request.base_url).rstrip("/"),
            }
        )

    async def revoke(self, request: Request) -> Response:
        if self._app(request) is None:
            return self._oauth_error(401, "invalid_client", "Invalid client_id or client_secret")
        token = request.query_params.get("token") or ""
        self.tokens.pop(token, None)
        return JSONResponse({"status": "success"})

    async def expire(self, request: Request) -> Response:
        for token, (account, client, _at) in list(self.tokens.items()):
            self.tokens[token] = (account, client, time.time() - 1)
        return JSONResponse({"expired": len(self.tokens)})

    async def revoke_app(self, request: Request) -> Response:
        data = json.loads(await request.body() or b"{}")
        client = str(data.get("client_id") or "")
        self.revoked_apps.add(client)
        for token, (_account, owner, _at) in list(self.tokens.items()):
            if owner == client:
                del self.tokens[token]
        return JSONResponse({"revoked": client})

    def _account(self, request: Request) -> Account | Response:
        found = self.tokens.get(bearer(request) or "")
        if found is None or found[2] < time.time() or found[1] in self.revoked_apps:
            return self.error_response(401, code="124", message="Invalid access token.")
        return self.accounts.setdefault(found[0], Account(found[0]))

    # Users and meetings ---------------------------------------------------------------

    async def me(self, request: Request) -> Response:
        account = self._account(request)
        if isinstance(account, Response):
            return account
        return JSONResponse(
            {
                "id": account.user_id,
                "email": account.email,
                "first_name": "Sandbox",
                "last_name": "Host",
                "account_id": account.id,
                "type": 2,
                "status": "active",
                "timezone": "UTC",
            }
        )

    async def _body(self, request: Request) -> dict[str, Any] | Response:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return self.error_response(
                400, code="300", message="Request Body should be a valid JSON object."
            )
        if not isinstance(body, dict):
            return self.error_response(
                400, code="300", message="Request Body should be a valid JSON object."
            )
        return body

    def _check(self, body: dict[str, Any], meeting_type: int) -> str | None:
        topic = body.get("topic")
        if topic is not None and (not isinstance(topic, str) or len(topic) > 200):
            return "Invalid field: topic (at most 200 characters)."
        if meeting_type not in (1, 2, 3, 8):
            return "Invalid meeting type."
        if "start_time" in body and body["start_time"] and _parse(body["start_time"]) is None:
            return "Invalid field: start_time."
        duration = body.get("duration")
        if duration is not None and (not isinstance(duration, int) or not 0 < duration <= 1440):
            return "Invalid field: duration."
        if meeting_type == 8:
            rule = body.get("recurrence")
            if not isinstance(rule, dict) or rule.get("type") not in (1, 2, 3):
                return "Invalid field: recurrence."
            if not rule.get("end_times") and not rule.get("end_date_time"):
                return "Invalid field: recurrence (end_times or end_date_time)."
            if rule.get("type") == 2 and not rule.get("weekly_days"):
                return "Invalid field: recurrence.weekly_days."
        return None

    def _occurrences(
        self, start: dt.datetime, duration: int, rule: dict[str, Any]
    ) -> list[dict[str, Any]]:
        step = {1: dt.timedelta(days=1), 2: dt.timedelta(weeks=1), 3: dt.timedelta(days=30)}
        every = step[rule["type"]] * max(1, int(rule.get("repeat_interval") or 1))
        count = min(int(rule.get("end_times") or 60), 60)
        until = _parse(rule.get("end_date_time"))
        out = []
        when = start
        for _ in range(count):
            if until and when > until:
                break
            out.append(
                {
                    "occurrence_id": str(int(when.timestamp() * 1000)),
                    "start_time": _iso(when),
                    "duration": duration,
                    "status": "available",
                }
            )
            when += every
        return out

    async def user_meetings(self, request: Request) -> Response:
        account = self._account(request)
        if isinstance(account, Response):
            return account
        if request.method == "GET":
            mine = [m for m in self.meetings.values() if m["_account"] == account.id]
            return self._paged(request, mine, "meetings", self._public)
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        meeting_type = body.get("type", 2)
        if not isinstance(meeting_type, int):
            return self.error_response(400, code="300", message="Invalid meeting type.")
        problem = self._check(body, meeting_type)
        if problem:
            return self.error_response(400, code="300", message=problem)
        number = str(secrets.randbelow(9 * 10**10) + 10**10)
        password = secrets.token_hex(3)
        start = _parse(body.get("start_time")) or dt.datetime.now(dt.UTC)
        duration = int(body.get("duration") or 60)
        meeting: dict[str, Any] = {
            "_account": account.id,
            "uuid": base64.b64encode(secrets.token_bytes(16)).decode(),
            "id": int(number),
            "host_id": account.user_id,
            "host_email": account.email,
            "topic": str(body.get("topic") or "Zoom Meeting"),
            "type": meeting_type,
            "status": "waiting",
            "timezone": str(body.get("timezone") or "UTC"),
            "agenda": str(body.get("agenda") or ""),
            "created_at": _iso(dt.datetime.now(dt.UTC)),
            "start_url": f"https://zoom.us/s/{number}?zak={secrets.token_urlsafe(24)}",
            "join_url": f"https://zoom.us/j/{number}?pwd={password}",
            "password": password,
            "settings": {
                "join_before_host": False,
                "waiting_room": True,
                "approval_type": 2,
                **(settings if isinstance(settings := body.get("settings"), dict) else {}),
            },
            "pre_schedule": False,
        }
        if meeting_type != 1:
            meeting["start_time"] = _iso(start)
            meeting["duration"] = duration
        if meeting_type == 8:
            meeting["recurrence"] = body["recurrence"]
            meeting["occurrences"] = self._occurrences(start, duration, body["recurrence"])
        self.meetings[number] = meeting
        return JSONResponse(self._public(meeting), 201)

    @staticmethod
    def _public(meeting: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in meeting.items() if not k.startswith("_")}

    def _paged(self, request: Request, items: list[Any], key: str, shown: Any) -> Response:
        query = request.query_params
        try:
            size = min(int(query.get("page_size") or 30), 300)
            offset = int(base64.urlsafe_b64decode(query.get("next_page_token") or "MA==").decode())
        except ValueError:
            return self.error_response(400, code="300", message="Invalid next_page_token.")
        if size < 1:
            return self.error_response(400, code="300", message="Invalid field: page_size.")
        page = items[offset : offset + size]
        more = offset + size < len(items)
        token = base64.urlsafe_b64encode(str(offset + size).encode()).decode() if more else ""
        return JSONResponse(
            {
                "page_size": size,
                "total_records": len(items),
                "next_page_token": token,
                key: [shown(i) for i in page],
            }
        )

    def _find(self, request: Request, account: Account) -> dict[str, Any] | Response:
        number = str(request.path_params["meeting_id"])
        meeting = self.meetings.get(number)
        if meeting is None or meeting["_account"] != account.id:
            return self.error_response(
                404, code="3001", message=f"Meeting does not exist: {number[:20]}."
            )
        return meeting

    async def meeting(self, request: Request) -> Response:
        account = self._account(request)
        if isinstance(account, Response):
            return account
        meeting = self._find(request, account)
        if isinstance(meeting, Response):
            return meeting
        if request.method == "GET":
            return JSONResponse(self._public(meeting))
        if request.method == "DELETE":
            del self.meetings[str(meeting["id"])]
            return Response(status_code=204)
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        problem = self._check(body, int(body.get("type") or meeting["type"]))
        if problem:
            return self.error_response(400, code="300", message=problem)
        for name in ("topic", "agenda", "start_time", "duration", "timezone", "recurrence"):
            if name in body:
                meeting[name] = body[name]
        if isinstance(body.get("settings"), dict):
            meeting["settings"].update(body["settings"])
        return Response(status_code=204)

    async def meeting_registrants(self, request: Request) -> Response:
        account = self._account(request)
        if isinstance(account, Response):
            return account
        meeting = self._find(request, account)
        if isinstance(meeting, Response):
            return meeting
        listed = self.registrants.setdefault(str(meeting["id"]), [])
        if request.method == "GET":
            return self._paged(request, listed, "registrants", dict)
        if meeting["settings"].get("approval_type") == 2:
            return self.error_response(
                400, code="3038", message="Meeting is not enabled for registration"
            )
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        email = str(body.get("email") or "").strip().lower()
        if "@" not in email or not body.get("first_name"):
            return self.error_response(400, code="300", message="Validation Failed.")
        registrant_id = secrets.token_urlsafe(16)
        join = f"https://zoom.us/w/{meeting['id']}?tk={secrets.token_urlsafe(24)}"
        entry = {
            "id": registrant_id,
            "email": email,
            "first_name": str(body["first_name"])[:64],
            "last_name": str(body.get("last_name") or "")[:64],
            "status": "approved",
            "create_time": _iso(dt.datetime.now(dt.UTC)),
            "join_url": join,
        }
        listed.append(entry)
        return JSONResponse(
            {
                "id": meeting["id"],
                "registrant_id": registrant_id,
                "join_url": join,
                "topic": meeting["topic"],
                "start_time": meeting.get("start_time"),
            },
            201,
        )

    async def past_participants(self, request: Request) -> Response:
        account = self._account(request)
        if isinstance(account, Response):
            return account
        uuid = str(request.path_params["uuid"])
        for _ in range(2):  # Zoom's double-encoded uuids
            if uuid not in self.participants and "%" in uuid:
                from urllib.parse import unquote

                uuid = unquote(uuid)
        listed = self.participants.get(uuid)
        if listed is None:
            return self.error_response(404, code="3001", message="Meeting does not exist.")
        return self._paged(request, listed, "participants", dict)

    async def user_recordings(self, request: Request) -> Response:
        account = self._account(request)
        if isinstance(account, Response):
            return account
        low = _parse((request.query_params.get("from") or "1970-01-01") + "T00:00:00Z")
        high = _parse((request.query_params.get("to") or "2999-12-31") + "T23:59:59Z")
        if low is None or high is None:
            return self.error_response(400, code="300", message="Invalid field: from/to.")
        found = [
            r
            for r in self.recordings.values()
            if r["_account"] == account.id and low <= (_parse(r["start_time"]) or low) <= high
        ]
        return self._paged(request, found, "meetings", self._public)

    async def meeting_recordings(self, request: Request) -> Response:
        account = self._account(request)
        if isinstance(account, Response):
            return account
        key = str(request.path_params["meeting_id"])
        from urllib.parse import unquote

        for candidate in (key, unquote(key), unquote(unquote(key))):
            for recording in self.recordings.values():
                if recording["_account"] == account.id and candidate in (
                    recording["uuid"],
                    str(recording["id"]),
                ):
                    return JSONResponse(self._public(recording))
        return self.error_response(404, code="3301", message="This recording does not exist.")

    # Driving meetings, and the webhooks that tell ------------------------------------------

    async def drive(self, request: Request) -> Response:
        meeting = self.meetings.get(str(request.path_params["meeting_id"]))
        what = request.path_params["what"]
        if meeting is None or what not in ("start", "end", "recording"):
            return JSONResponse({"error": "no such meeting or action"}, 404)
        data = json.loads(await request.body() or b"{}")
        now = dt.datetime.now(dt.UTC)
        if what == "start":
            if meeting.get("_started"):  # started before: a new instance, a new uuid
                meeting["uuid"] = base64.b64encode(secrets.token_bytes(16)).decode()
            meeting["status"] = "started"
            meeting["_started"] = now
            event = "meeting.started"
            obj = self._object(meeting, start_time=_iso(now))
        elif what == "end":
            meeting["status"] = "waiting"
            started = meeting.get("_started") or now
            people = data.get("participants") or [
                {"name": "Sandbox Host", "email": meeting["host_email"]}
            ]
            self.participants[meeting["uuid"]] = [
                {
                    "id": secrets.token_urlsafe(12),
                    "name": str(p.get("name") or ""),
                    "user_email": str(p.get("email") or ""),
                    "join_time": _iso(started),
                    "leave_time": _iso(now),
                    "duration": max(1, int((now - started).total_seconds())),
                }
                for p in people
            ]
            event = "meeting.ended"
            obj = self._object(meeting, start_time=_iso(started), end_time=_iso(now))
        else:
            recording = {
                "_account": meeting["_account"],
                "uuid": meeting["uuid"],
                "id": meeting["id"],
                "host_id": meeting["host_id"],
                "topic": meeting["topic"],
                "start_time": _iso(meeting.get("_started") or now),
                "duration": 1,
                "total_size": 1048576,
                "recording_count": 1,
                "share_url": f"https://zoom.us/rec/share/{secrets.token_urlsafe(16)}",
                "recording_files": [
                    {
                        "id": secrets.token_hex(8),
                        "meeting_id": meeting["uuid"],
                        "recording_start": _iso(meeting.get("_started") or now),
                        "recording_end": _iso(now),
                        "file_type": "MP4",
                        "file_size": 1048576,
                        "play_url": f"https://zoom.us/rec/play/{secrets.token_urlsafe(16)}",
                        "download_url": f"https://zoom.us/rec/download/{secrets.token_urlsafe(16)}",
                        "status": "completed",
                        "recording_type": "shared_screen_with_speaker_view",
                    }
                ],
            }
            self.recordings[meeting["uuid"]] = recording
            event = "recording.completed"
            obj = self._public(recording)
        self.notify(meeting["_account"], event, obj)
        return JSONResponse({"event": event, "uuid": meeting["uuid"]})

    @staticmethod
    def _object(meeting: dict[str, Any], **more: Any) -> dict[str, Any]:
        return {
            "id": str(meeting["id"]),
            "uuid": meeting["uuid"],
            "host_id": meeting["host_id"],
            "topic": meeting["topic"],
            "type": meeting["type"],
            "duration": meeting.get("duration", 60),
            "timezone": meeting["timezone"],
            **more,
        }

    def notify(self, account_id: str, event: str, obj: dict[str, Any]) -> None:
        """Post one signed webhook, as Zoom does (nothing until configured)."""
        secret = self.webhook_secret
        if secret is None:
            return
        body = json.dumps(
            {
                "event": event,
                "event_ts": int(time.time() * 1000),
                "payload": {"account_id": account_id, "object": obj},
            }
        ).encode()

        def build() -> CallbackRequest:
            stamp = str(int(time.time()))
            return CallbackRequest(
                body,
                {
                    "content-type": "application/json",
                    "user-agent": "Zoom Marketplace/1.0a",
                    "x-zm-request-timestamp": stamp,
                    "x-zm-signature": zoom_signature(secret, stamp, body),
                },
            )

        self.callbacks.schedule([build])


def create_app() -> ZoomSandbox:
    return ZoomSandbox()

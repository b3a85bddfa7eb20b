"""Google Calendar v3, and the Google authorization server that grants it, emulated.

Served at `{PUBLIC_URL}/sandbox/google_calendar`, which is both the issuer (the OAuth side:
what `providers/sandbox/google.py` serves for sign-in, plus offline grants) and the API's
root (Google's `https://www.googleapis.com`), so the tokens it grants are the ones its API
accepts:

- OAuth: `GET /.well-known/openid-configuration` (with `revocation_endpoint`),
  `GET /o/oauth2/v2/auth` (`access_type=offline` makes the code bring a refresh token),
  `POST /token` (`authorization_code` and `refresh_token` grants; a revoked or unknown
  refresh token is Google's 400 `{"error": "invalid_grant"}`), `POST /revoke` (`token=`,
  an access or refresh token: the whole grant goes), `GET /oauth2/v3/certs`.
- Calendar: `GET /calendar/v3/users/me/calendarList`, `GET|POST
  /calendar/v3/calendars/{calendarId}/events` (`timeMin`, `timeMax`, `maxResults`,
  `pageToken` → `nextPageToken`, `singleEvents`, `orderBy=startTime`; insert takes a
  client-made `id` — a second insert of it is 409 `duplicate` — and `conferenceDataVersion=1`
  for `conferenceData.createRequest`), `GET|PATCH|DELETE …/events/{eventId}` (a deleted
  event is 410 `deleted`), `GET|POST …/calendars/{calendarId}/acl`, `DELETE …/acl/{ruleId}`.
  `primary` is the caller's own calendar (its id is their email). Attendees carry
  `responseStatus` (`needsAction` until they answer), reminders `useDefault`/`overrides`.
  Errors are Google's `{"error": {"code", "message", "errors": [{"domain", "reason",
  "message"}], "status"}}`; an expired, revoked or unknown access token is 401 `authError`.

Controls besides the base's (faults, recordings, reset): `POST /_sandbox/users`
(`{"email", "name", "deny"}`), `POST /_sandbox/expire` (`{"email"}` optional: every access
token of that person, or of everyone, expires now), `POST /_sandbox/revoke` (`{"email"}`:
the person withdraws the app's access in their Google account), `POST /_sandbox/respond`
(`{"calendarId", "eventId", "email", "responseStatus"}`: an attendee answers).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from providers.sandbox.base import bearer
from providers.sandbox.google import GoogleSandbox, Grant, Person, client_credentials

ACCESS_SECONDS = 3599
MAX_RESULTS = 2500
ROLES = ("none", "freeBusyReader", "reader", "writer", "owner")
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    410: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
_REASONS = {
    400: "badRequest",
    401: "authError",
    403: "forbidden",
    404: "notFound",
    409: "duplicate",
    410: "deleted",
    429: "rateLimitExceeded",
    503: "backendError",
}
_EVENT_ID = re.compile(r"^[a-v0-9]{5,1024}$")
RESPONSES = ("needsAction", "declined", "tentative", "accepted")


@dataclass
class OfflineGrant:
    person: Person
    client_id: str
    scope: str
    revoked: bool = False


@dataclass
class Calendar:
    id: str
    summary: str
    owner: str
    time_zone: str = "UTC"
    acl: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[str, dict[str, Any]] = field(default_factory=dict)

    def role_of(self, email: str) -> str:
        rule = self.acl.get(f"user:{email}")
        return str(rule["role"]) if rule else "none"


def _rfc3339(value: float) -> str:
    return dt.datetime.fromtimestamp(value, dt.UTC).isoformat().replace("+00:00", "Z")


def _when(value: Any) -> dt.datetime | None:
    """An event time (`{"dateTime"}` or `{"date"}`) or a query bound, as UTC."""
    if isinstance(value, dict):
        value = value.get("dateTime") or value.get("date")
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


class GoogleCalendarSandbox(GoogleSandbox):
    provider = "google_calendar"

    def __init__(self) -> None:
        super().__init__()
        self.refresh: dict[str, OfflineGrant] = {}
        self.access: dict[str, tuple[OfflineGrant | None, Person, float]] = {}
        self.calendars: dict[str, Calendar] = {}

    def reset_state(self) -> None:
        super().reset_state()
        self.refresh.clear()
        self.access.clear()
        self.calendars.clear()

    def routes(self) -> list[BaseRoute]:
        cal = "/calendar/v3/calendars/{calendar_id:path}"
        return [
            *super().routes(),
            Route("/revoke", self.revoke, methods=["POST"]),
            Route("/calendar/v3/users/me/calendarList", self.calendar_list),
            Route(f"{cal}/events/{{event_id}}", self.event, methods=["GET", "PATCH", "DELETE"]),
            Route(f"{cal}/events", self.events, methods=["GET", "POST"]),
            Route(f"{cal}/acl/{{rule_id}}", self.acl_rule, methods=["DELETE"]),
            Route(f"{cal}/acl", self.acl, methods=["GET", "POST"]),
        ]

    def _control_routes(self) -> list[BaseRoute]:
        return [
            *super()._control_routes(),
            Route("/_sandbox/expire", self.expire, methods=["POST"]),
            Route("/_sandbox/revoke", self.revoke_person, methods=["POST"]),
            Route("/_sandbox/respond", self.respond, methods=["POST"]),
        ]

    # Errors -----------------------------------------------------------------------------

    def error_response(
        self,
        status: int,
        *,
        code: str | None = None,
        message: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """Google APIs' error body (the OAuth endpoints answer `oauth_error`)."""
        text = message or "Error"
        reason = code or _REASONS.get(status, "backendError")
        body = {
            "error": {
                "code": status,
                "message": text,
                "errors": [{"message": text, "domain": "global", "reason": reason}],
                "status": _STATUS_NAMES.get(status, "UNKNOWN"),
            }
        }
        return JSONResponse(body, status, headers=headers)

    def oauth_error(self, status: int, code: str, message: str) -> Response:
        return JSONResponse({"error": code, "error_description": message}, status)

    # OAuth --------------------------------------------------------------------------------

    async def discovery(self, request: Request) -> Response:
        answer = await super().discovery(request)
        document = json.loads(bytes(answer.body))
        document["revocation_endpoint"] = f"{self.issuer(request)}/revoke"
        return JSONResponse(document)

    async def token(self, request: Request) -> Response:
        form = await request.form()
        client_id, secret = client_credentials(request, form)
        if not client_id or not secret:
            return self.oauth_error(401, "invalid_client", "Unauthorized")
        if form.get("grant_type") == "refresh_token":
            grant = self.refresh.get(str(form.get("refresh_token") or ""))
            if grant is None or grant.revoked or grant.client_id != client_id:
                return self.oauth_error(400, "invalid_grant", "Token has been expired or revoked.")
            return JSONResponse(
                {
                    "access_token": self._access(grant, grant.person),
                    "expires_in": ACCESS_SECONDS,
                    "token_type": "Bearer",
                    "scope": grant.scope,
                }
            )
        redeemed = self.redeem(form, client_id)
        if isinstance(redeemed, str):
            return self.oauth_error(400, redeemed, "Bad Request")
        return JSONResponse(self.token_answer(request, redeemed, client_id))

    def token_answer(self, request: Request, grant: Grant, client_id: str) -> dict[str, Any]:
        answer = super().token_answer(request, grant, client_id)
        offline = None
        if grant.offline:
            offline = OfflineGrant(grant.person, client_id, grant.scope)
            refresh = "1//" + secrets.token_urlsafe(40)
            self.refresh[refresh] = offline
            answer["refresh_token"] = refresh
        answer["access_token"] = self._access(offline, grant.person)
        answer["expires_in"] = ACCESS_SECONDS
        return answer

    def _access(self, grant: OfflineGrant | None, person: Person) -> str:
        token = "ya29." + secrets.token_urlsafe(32)
        self.access[token] = (grant, person, time.time() + ACCESS_SECONDS)
        return token

    async def revoke(self, request: Request) -> Response:
        form = await request.form()
        token = str(form.get("token") or request.query_params.get("token") or "")
        grant: OfflineGrant | None = self.refresh.get(token)
        if grant is None and token in self.access:
            grant = self.access[token][0]
            self.access.pop(token, None)
        if grant is None:
            return self.oauth_error(400, "invalid_token", "Token expired or revoked")
        self._withdraw(lambda g: g is grant)
        return JSONResponse({})

    def _withdraw(self, which: Any) -> int:
        count = 0
        for grant in self.refresh.values():
            if which(grant) and not grant.revoked:
                grant.revoked = True
                count += 1
        for token, (held, _person, _at) in list(self.access.items()):
            if held is not None and held.revoked:
                del self.access[token]
        return count

    async def expire(self, request: Request) -> Response:
        data = json.loads(await request.body() or b"{}")
        email = str(data.get("email") or "").lower()
        expired = 0
        for token, (grant, person, _at) in list(self.access.items()):
            if not email or person.email == email:
                self.access[token] = (grant, person, time.time() - 1)
                expired += 1
        return JSONResponse({"expired": expired})

    async def revoke_person(self, request: Request) -> Response:
        data = json.loads(await request.body() or b"{}")
        email = str(data.get("email") or "").lower()
        return JSONResponse({"revoked": self._withdraw(lambda g: g.person.email == email)})

    # The Calendar API ---------------------------------------------------------------------

    def _caller(self, request: Request) -> Person | Response:
        found = self.access.get(bearer(request) or "")
        if found is None or found[2] < time.time() or (found[0] and found[0].revoked):
            return self.error_response(
                401,
                code="authError",
                message="Request had invalid authentication credentials. Expected OAuth 2 "
                "access token, login cookie or other valid authentication credential.",
            )
        return found[1]

    def _primary(self, person: Person) -> Calendar:
        calendar = self.calendars.get(person.email)
        if calendar is None:
            calendar = self.calendars[person.email] = Calendar(
                person.email, person.name or person.email, person.email
            )
            calendar.acl[f"user:{person.email}"] = _rule("owner", "user", person.email)
        return calendar

    def _calendar(
        self, person: Person, calendar_id: str, need: str
    ) -> tuple[Calendar | None, Response | None]:
        self._primary(person)
        key = person.email if calendar_id == "primary" else calendar_id
        calendar = self.calendars.get(key)
        if calendar is None or calendar.role_of(person.email) == "none":
            return None, self.error_response(404, message="Not Found")
        if ROLES.index(calendar.role_of(person.email)) < ROLES.index(need):
            return None, self.error_response(
                403, code="forbidden", message="You need to have " + need + " access."
            )
        return calendar, None

    async def calendar_list(self, request: Request) -> Response:
        person = self._caller(request)
        if isinstance(person, Response):
            return person
        self._primary(person)
        items = []
        for calendar in self.calendars.values():
            role = calendar.role_of(person.email)
            if role in ("none",):
                continue
            items.append(
                {
                    "kind": "calendar#calendarListEntry",
                    "id": calendar.id,
                    "summary": calendar.summary,
                    "timeZone": calendar.time_zone,
                    "accessRole": role,
                    "primary": calendar.id == person.email,
                }
            )
        return JSONResponse({"kind": "calendar#calendarList", "items": items})

    async def events(self, request: Request) -> Response:
        person = self._caller(request)
        if isinstance(person, Response):
            return person
        calendar_id = request.path_params["calendar_id"]
        if request.method == "POST":
            calendar, denied = self._calendar(person, calendar_id, "writer")
            if denied is not None:
                return denied
            assert calendar is not None
            return await self._insert(request, person, calendar)
        calendar, denied = self._calendar(person, calendar_id, "reader")
        if denied is not None:
            return denied
        assert calendar is not None
        query = request.query_params
        low, high = _when(query.get("timeMin")), _when(query.get("timeMax"))
        if (query.get("timeMin") and low is None) or (query.get("timeMax") and high is None):
            return self.error_response(400, code="badRequest", message="Bad Request")
        if low and high and high <= low:
            return self.error_response(
                400, code="timeRangeEmpty", message="The specified time range is empty."
            )
        try:
            size = min(int(query.get("maxResults") or 250), MAX_RESULTS)
            offset = int(base64.urlsafe_b64decode(query.get("pageToken") or "MA==").decode())
        except ValueError:
            return self.error_response(400, code="badRequest", message="Invalid page token.")
        if size < 1:
            return self.error_response(400, code="invalid", message="Invalid maxResults.")
        chosen = [
            e
            for e in calendar.events.values()
            if e["status"] != "cancelled"
            and (low is None or (_when(e["end"]) or low) > low)
            and (high is None or (_when(e["start"]) or high) < high)
        ]
        chosen.sort(
            key=lambda e: (_when(e["start"]) or dt.datetime.min.replace(tzinfo=dt.UTC), e["id"])
        )
        page = chosen[offset : offset + size]
        body: dict[str, Any] = {
            "kind": "calendar#events",
            "summary": calendar.summary,
            "timeZone": calendar.time_zone,
            "updated": _rfc3339(time.time()),
            "accessRole": calendar.role_of(person.email),
            "items": [self._shown(e, person) for e in page],
        }
        if offset + size < len(chosen):
            body["nextPageToken"] = base64.urlsafe_b64encode(str(offset + size).encode()).decode()
        return JSONResponse(body)

    def _shown(self, event: dict[str, Any], person: Person) -> dict[str, Any]:
        shown = dict(event)
        attendees = [dict(a) for a in event.get("attendees") or []]
        for attendee in attendees:
            if attendee.get("email") == person.email:
                attendee["self"] = True
        if attendees:
            shown["attendees"] = attendees
        return shown

    def _check(self, body: dict[str, Any], *, partial: bool) -> str | None:
        for name in ("start", "end"):
            if name in body or not partial:
                value = body.get(name)
                if not isinstance(value, dict) or _when(value) is None:
                    return f"Missing {name} time." if value is None else f"Invalid {name} time."
        for attendee in body.get("attendees") or []:
            if not isinstance(attendee, dict) or "@" not in str(attendee.get("email") or ""):
                return "Invalid attendee email."
        reminders = body.get("reminders")
        if reminders is not None:
            for rule in reminders.get("overrides") or []:
                if rule.get("method") not in ("email", "popup"):
                    return "Invalid reminder method."
                if not isinstance(rule.get("minutes"), int) or not 0 <= rule["minutes"] <= 40320:
                    return "Invalid value for reminder minutes."
            if reminders.get("useDefault") and reminders.get("overrides"):
                return "Cannot specify both default reminders and overrides at the same time."
        return None

    def _conference(self, request: Request, event: dict[str, Any], data: Any) -> None:
        if request.query_params.get("conferenceDataVersion") != "1" or not isinstance(data, dict):
            return
        create = data.get("createRequest")
        if not isinstance(create, dict):
            return
        code = "-".join(
            "".join(secrets.choice("abcdefghijkmnopqrstuvwxyz") for _ in range(n))
            for n in (3, 4, 3)
        )
        event["hangoutLink"] = f"https://meet.google.com/{code}"
        event["conferenceData"] = {
            "createRequest": {**create, "status": {"statusCode": "success"}},
            "entryPoints": [
                {
                    "entryPointType": "video",
                    "uri": f"https://meet.google.com/{code}",
                    "label": f"meet.google.com/{code}",
                }
            ],
            "conferenceSolution": {"key": {"type": "hangoutsMeet"}, "name": "Google Meet"},
            "conferenceId": code,
        }

    async def _insert(self, request: Request, person: Person, calendar: Calendar) -> Response:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return self.error_response(400, code="parseError", message="Parse Error")
        if not isinstance(body, dict):
            return self.error_response(400, code="parseError", message="Parse Error")
        problem = self._check(body, partial=False)
        if problem is not None:
            return self.error_response(400, code="invalid", message=problem)
        if (_when(body["end"]) or 0) < (_when(body["start"]) or 0):  # type: ignore[operator]
            return self.error_response(
                400, code="timeRangeEmpty", message="The specified time range is empty."
            )
        event_id = str(body.get("id") or secrets.token_hex(13))
        if not _EVENT_ID.match(event_id):
            return self.error_response(400, code="invalid", message="Invalid resource id value.")
        if event_id in calendar.events:
            return self.error_response(
                409, code="duplicate", message="The requested identifier already exists."
            )
        now = _rfc3339(time.time())
        event: dict[str, Any] = {
            "kind": "calendar#event",
            "etag": f'"{secrets.randbelow(10**16)}"',
            "id": event_id,
            "status": "confirmed",
            "htmlLink": f"https://www.google.com/calendar/event?eid={event_id}",
            "created": now,
            "updated": now,
            "summary": str(body.get("summary") or ""),
            "description": str(body.get("description") or ""),
            "location": str(body.get("location") or ""),
            "creator": {"email": person.email, "self": True},
            "organizer": {"email": calendar.id, "self": calendar.id == person.email},
            "start": body["start"],
            "end": body["end"],
            "iCalUID": f"{event_id}@google.com",
            "sequence": 0,
            "attendees": [_attendee(a) for a in body.get("attendees") or []],
            "reminders": body.get("reminders") or {"useDefault": True},
            "extendedProperties": body.get("extendedProperties") or {},
        }
        if not event["attendees"]:
            del event["attendees"]
        self._conference(request, event, body.get("conferenceData"))
        calendar.events[event_id] = event
        return JSONResponse(self._shown(event, person))

    async def event(self, request: Request) -> Response:
        person = self._caller(request)
        if isinstance(person, Response):
            return person
        need = "reader" if request.method == "GET" else "writer"
        calendar, denied = self._calendar(person, request.path_params["calendar_id"], need)
        if denied is not None:
            return denied
        assert calendar is not None
        event = calendar.events.get(request.path_params["event_id"])
        if event is None:
            return self.error_response(404, message="Not Found")
        if request.method == "GET":
            return JSONResponse(self._shown(event, person))
        if event["status"] == "cancelled":
            return self.error_response(410, code="deleted", message="Resource has been deleted")
        if request.method == "DELETE":
            event["status"] = "cancelled"
            event["updated"] = _rfc3339(time.time())
            return Response(status_code=204)
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return self.error_response(400, code="parseError", message="Parse Error")
        if not isinstance(body, dict):
            return self.error_response(400, code="parseError", message="Parse Error")
        problem = self._check(body, partial=True)
        if problem is not None:
            return self.error_response(400, code="invalid", message=problem)
        merged = {**event}
        for name in ("summary", "description", "location", "start", "end", "reminders"):
            if name in body:
                merged[name] = body[name]
        if "attendees" in body:
            before = {a["email"]: a for a in event.get("attendees") or []}
            merged["attendees"] = [
                {
                    **_attendee(a),
                    "responseStatus": before.get(a["email"], {}).get(
                        "responseStatus", a.get("responseStatus") or "needsAction"
                    ),
                }
                for a in body["attendees"] or []
            ]
        if (_when(merged["end"]) or 0) < (_when(merged["start"]) or 0):  # type: ignore[operator]
            return self.error_response(
                400, code="timeRangeEmpty", message="The specified time range is empty."
            )
        self._conference(request, merged, body.get("conferenceData"))
        merged["updated"] = _rfc3339(time.time())
        merged["sequence"] = int(event.get("sequence") or 0) + 1
        calendar.events[event["id"]] = merged
        return JSONResponse(self._shown(merged, person))

    async def acl(self, request: Request) -> Response:
        person = self._caller(request)
        if isinstance(person, Response):
            return person
        calendar, denied = self._calendar(person, request.path_params["calendar_id"], "owner")
        if denied is not None:
            return denied
        assert calendar is not None
        if request.method == "GET":
            return JSONResponse({"kind": "calendar#acl", "items": list(calendar.acl.values())})
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return self.error_response(400, code="parseError", message="Parse Error")
        scope = body.get("scope") if isinstance(body, dict) else None
        role = body.get("role") if isinstance(body, dict) else None
        if role not in ROLES or not isinstance(scope, dict):
            return self.error_response(400, code="invalid", message="Invalid role or scope.")
        kind, value = str(scope.get("type") or ""), str(scope.get("value") or "").lower()
        if kind not in ("default", "user", "group", "domain") or (kind != "default" and not value):
            return self.error_response(400, code="invalid", message="Invalid scope.")
        rule = _rule(role, kind, value)
        calendar.acl[rule["id"]] = rule
        return JSONResponse(rule)

    async def acl_rule(self, request: Request) -> Response:
        person = self._caller(request)
        if isinstance(person, Response):
            return person
        calendar, denied = self._calendar(person, request.path_params["calendar_id"], "owner")
        if denied is not None:
            return denied
        assert calendar is not None
        if calendar.acl.pop(request.path_params["rule_id"], None) is None:
            return self.error_response(404, message="Not Found")
        return Response(status_code=204)

    async def respond(self, request: Request) -> Response:
        data = json.loads(await request.body() or b"{}")
        calendar = self.calendars.get(str(data.get("calendarId") or ""))
        event = calendar.events.get(str(data.get("eventId") or "")) if calendar else None
        if event is None or data.get("responseStatus") not in RESPONSES:
            return JSONResponse({"error": "no such event or response"}, 404)
        for attendee in event.get("attendees") or []:
            if attendee["email"] == str(data.get("email") or "").lower():
                attendee["responseStatus"] = data["responseStatus"]
                return JSONResponse({"responded": True})
        return JSONResponse({"error": "not an attendee"}, 404)


def _attendee(data: dict[str, Any]) -> dict[str, Any]:
    attendee: dict[str, Any] = {
        "email": str(data["email"]).strip().lower(),
        "responseStatus": data.get("responseStatus") or "needsAction",
    }
    if data.get("displayName"):
        attendee["displayName"] = str(data["displayName"])
    if data.get("optional"):
        attendee["optional"] = True
    return attendee


def _rule(role: str, kind: str, value: str) -> dict[str, Any]:
    rule_id = f"{kind}:{value}" if value else kind
    scope = {"type": kind, **({"value": value} if value else {})}
    return {"kind": "calendar#aclRule", "id": rule_id, "role": role, "scope": scope}


def create_app() -> GoogleCalendarSandbox:
    return GoogleCalendarSandbox()

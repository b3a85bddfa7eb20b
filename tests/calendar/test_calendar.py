"""Google Calendar through a connected account, over HTTP against the emulator: events in a
window with paging, attendees and their answers, reminders, a Meet link, sharing, links to
the CRM, tasks on the calendar; one renewal for 50 concurrent calls; faults through the
provider layer (429 with Retry-After, 503, a token that expires mid-way); the abuse a
caller would try."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from models.identity import ConnectedAccount
from tests.calendar.conftest import Org, member
from tests.conftest import error_codes, gql, register
from tests.factories import make_contact, make_lead
from tests.identity.test_connections import accounts, connect_calendar, expire, refreshes

EVENTS = """query($min: DateTime, $max: DateTime, $first: Int, $after: String, $acc: ID) {
  calendarEvents(timeMin: $min, timeMax: $max, first: $first, after: $after, accountId: $acc) {
    edges { cursor node { id summary start end attendees { email responseStatus }
      contact { id } lead { id } task { id } } }
    pageInfo { hasNextPage endCursor } } }"""
CREATE = """mutation($i: CreateCalendarEventInput!) { createCalendarEvent(input: $i) {
  event { id summary description start end allDay htmlLink
    attendees { email displayName responseStatus optional }
    reminders { useDefault overrides { method minutes } }
    conference { id joinUrl solution } contact { id } lead { id } task { id } } } }"""
UPDATE = """mutation($i: UpdateCalendarEventInput!) { updateCalendarEvent(input: $i) {
  event { id summary start end attendees { email responseStatus } lead { id } } } }"""
DELETE = """mutation($i: DeleteCalendarEventInput!) { deleteCalendarEvent(input: $i) {
  deletedEventId } }"""
SHARE = """mutation($i: ShareCalendarInput!) { shareCalendar(input: $i) {
  share { id role scopeType scopeValue } } }"""
SHARES = "{ calendarShares { id role scopeValue } }"
CALENDARS = "{ calendars { id summary primary accessRole } }"
SCHEDULE = """mutation($i: ScheduleTaskInput!) { scheduleTask(input: $i) {
  event { id summary start end task { id title } reminders { overrides { minutes } } } } }"""
TASK = """mutation($i: CreateTaskInput!) { createTask(input: $i) { task { id } } }"""
UPDATE_TASK = """mutation($i: UpdateTaskInput!) { updateTask(input: $i) { task { id } } }"""

T0 = dt.datetime(2031, 3, 3, 9, 0, tzinfo=dt.UTC)


def at(hours: float) -> str:
    return (T0 + dt.timedelta(hours=hours)).isoformat()


def event(summary: str, start: float, **more: Any) -> dict[str, Any]:
    return {"summary": summary, "start": at(start), "end": at(start + 1), **more}


async def create(org: Org, token: str | None = None, **fields: Any) -> dict[str, Any]:
    body = await gql(
        org.site.browser,
        CREATE,
        {"i": {"event": event("Meeting", 0) | fields}},
        token or org.owner.token,
    )
    assert "errors" not in body, body
    return dict(body["data"]["createCalendarEvent"]["event"])


async def sandbox_requests(org: Org, path: str = "/calendar/v3") -> list[dict[str, Any]]:
    got = await org.site.browser.get(
        "/sandbox/google_calendar/_sandbox/requests", params={"path": path}
    )
    return list(got.json()["requests"])


async def fault(org: Org, **spec: Any) -> None:
    answer = await org.site.browser.post("/sandbox/google_calendar/_sandbox/faults", json=spec)
    assert answer.status_code == 201, answer.text


async def test_events_with_attendees_reminders_conference_and_crm_links(org: Org) -> None:
    client = org.site.browser
    contact = await make_contact(client, org.owner)
    lead = await make_lead(client, org.owner)
    made = await create(
        org,
        description="Quarterly review",
        attendees=[
            {"email": "Ada@Example.com", "displayName": "Ada"},
            {"email": "grace@example.com", "optional": True},
        ],
        reminders=[{"method": "EMAIL", "minutes": 60}, {"method": "POPUP", "minutes": 10}],
        addConference=True,
        contactId=contact,
        leadId=lead,
    )
    assert made["summary"] == "Meeting" and made["start"].startswith("2031-03-03T09:00")
    assert [(a["email"], a["responseStatus"]) for a in made["attendees"]] == [
        ("ada@example.com", "NEEDS_ACTION"),
        ("grace@example.com", "NEEDS_ACTION"),
    ]
    assert made["reminders"] == {
        "useDefault": False,
        "overrides": [{"method": "EMAIL", "minutes": 60}, {"method": "POPUP", "minutes": 10}],
    }
    assert made["conference"]["joinUrl"].startswith("https://meet.google.com/")
    assert made["conference"]["solution"] == "Google Meet"
    assert made["contact"] == {"id": contact} and made["lead"] == {"id": lead}
    # Google was asked for a Meet link, and the event carries its private links.
    [insert] = [r for r in await sandbox_requests(org) if r["method"] == "POST"]
    assert "conferenceDataVersion=1" in insert["query"]
    assert insert["body"]["extendedProperties"]["private"]["switchboardLead"] == lead
    # Ada accepts at Google; the list shows it.
    sandbox = org.site.app.state.services.sandboxes["google_calendar"]
    await client.post(
        "/sandbox/google_calendar/_sandbox/respond",
        json={
            "calendarId": org.owner.email,
            "eventId": made["id"],
            "email": "ada@example.com",
            "responseStatus": "accepted",
        },
    )
    listed = await gql(client, EVENTS, {"min": at(-1), "max": at(5)}, org.owner.token)
    [node] = [e["node"] for e in listed["data"]["calendarEvents"]["edges"]]
    assert node["attendees"][0] == {"email": "ada@example.com", "responseStatus": "ACCEPTED"}
    assert node["contact"] == {"id": contact} and node["lead"] == {"id": lead}
    # Update: a new title and time; the lead link stays.
    changed = await gql(
        client,
        UPDATE,
        {"i": {"eventId": made["id"], "event": {"summary": "Moved", "start": at(2), "end": at(3)}}},
        org.owner.token,
    )
    assert "errors" not in changed, changed
    moved = changed["data"]["updateCalendarEvent"]["event"]
    assert moved["summary"] == "Moved" and moved["start"].startswith("2031-03-03T11:00")
    assert moved["lead"] == {"id": lead}
    # Delete: gone from the list; deleting again is not an error (already gone).
    gone = await gql(client, DELETE, {"i": {"eventId": made["id"]}}, org.owner.token)
    assert gone["data"]["deleteCalendarEvent"]["deletedEventId"] == made["id"]
    listed = await gql(client, EVENTS, {"min": at(-1), "max": at(5)}, org.owner.token)
    assert listed["data"]["calendarEvents"]["edges"] == []
    assert sandbox.calendars[org.owner.email].events[made["id"]]["status"] == "cancelled"


async def test_the_time_window_and_paging(org: Org) -> None:
    client = org.site.browser
    for hour in (5, 1, 3, 2, 4, 30):
        await create(org, summary=f"at {hour}", start=at(hour), end=at(hour + 0.5))
    seen: list[str] = []
    after = None
    for _ in range(5):
        page = await gql(
            client,
            EVENTS,
            {"min": at(0), "max": at(24), "first": 2, "after": after},
            org.owner.token,
        )
        assert "errors" not in page, page
        events = page["data"]["calendarEvents"]
        seen += [e["node"]["summary"] for e in events["edges"]]
        if not events["pageInfo"]["hasNextPage"]:
            break
        after = events["pageInfo"]["endCursor"]
    assert seen == ["at 1", "at 2", "at 3", "at 4", "at 5"]  # by start; 30 h is outside
    bad = await gql(client, EVENTS, {"after": "not-a-cursor"}, org.owner.token)
    assert error_codes(bad) == ["BAD_USER_INPUT"]
    empty = await gql(client, EVENTS, {"min": at(3), "max": at(1)}, org.owner.token)
    assert error_codes(empty) == ["BAD_USER_INPUT"]


async def test_calendars_and_sharing(org: Org) -> None:
    client = org.site.browser
    listed = await gql(client, CALENDARS, token=org.owner.token)
    [own] = listed["data"]["calendars"]
    assert (own["id"], own["primary"], own["accessRole"]) == (org.owner.email, True, "owner")
    shared = await gql(
        client, SHARE, {"i": {"email": "Colleague@Example.com", "role": "WRITER"}}, org.owner.token
    )
    assert shared["data"]["shareCalendar"]["share"] == {
        "id": "user:colleague@example.com",
        "role": "writer",
        "scopeType": "user",
        "scopeValue": "colleague@example.com",
    }
    rules = await gql(client, SHARES, token=org.owner.token)
    assert {r["scopeValue"] for r in rules["data"]["calendarShares"]} == {
        org.owner.email,
        "colleague@example.com",
    }
    bad = await gql(client, SHARE, {"i": {"email": "not an address"}}, org.owner.token)
    assert error_codes(bad) == ["BAD_USER_INPUT"]


async def test_a_task_with_a_due_time_goes_on_the_calendar_once(org: Org) -> None:
    client = org.site.browser
    made = await gql(client, TASK, {"i": {"title": "Call Acme", "dueAt": at(6)}}, org.owner.token)
    task = made["data"]["createTask"]["task"]["id"]
    first = await gql(
        client, SCHEDULE, {"i": {"taskId": task, "reminderMinutes": 15}}, org.owner.token
    )
    assert "errors" not in first, first
    placed = first["data"]["scheduleTask"]["event"]
    assert placed["summary"] == "Call Acme" and placed["start"].startswith("2031-03-03T15:00")
    assert placed["end"].startswith("2031-03-03T15:30") and placed["task"]["id"] == task
    assert placed["reminders"]["overrides"] == [{"minutes": 15}]
    # The task moves: scheduling again moves the same event.
    await gql(client, UPDATE_TASK, {"i": {"id": task, "dueAt": at(8)}}, org.owner.token)
    again = await gql(client, SCHEDULE, {"i": {"taskId": task}}, org.owner.token)
    moved = again["data"]["scheduleTask"]["event"]
    assert moved["id"] == placed["id"] and moved["start"].startswith("2031-03-03T17:00")
    no_due = await gql(client, TASK, {"i": {"title": "Someday"}}, org.owner.token)
    refused = await gql(
        client,
        SCHEDULE,
        {"i": {"taskId": no_due["data"]["createTask"]["task"]["id"]}},
        org.owner.token,
    )
    assert error_codes(refused) == ["BAD_USER_INPUT"]


async def test_fifty_concurrent_calls_with_an_expired_token_renew_once(org: Org) -> None:
    await create(org)
    [row] = await ConnectedAccount.filter(email=org.owner.email)
    await expire(row.id)
    before = await refreshes(org.site)
    answers = await asyncio.gather(
        *(
            gql(org.site.browser, EVENTS, {"min": at(-1), "max": at(5)}, org.owner.token)
            for _ in range(50)
        )
    )
    assert all(
        "errors" not in a and len(a["data"]["calendarEvents"]["edges"]) == 1 for a in answers
    )
    assert await refreshes(org.site) == before + 1


async def test_faults_through_the_provider_layer(org: Org) -> None:
    client = org.site.browser
    await create(org)
    # 429 with Retry-After, then an answer: the read is retried and succeeds.
    await fault(org, status=429, retry_after=0, count=2, path="/calendar/v3/calendars")
    listed = await gql(client, EVENTS, {"min": at(-1), "max": at(5)}, org.owner.token)
    assert "errors" not in listed and len(listed["data"]["calendarEvents"]["edges"]) == 1
    # 503 on an insert: retried (the insert carries its own event id), one event made.
    await fault(org, status=503, count=1, method="POST", path="/calendar/v3/calendars")
    made = await create(org, summary="After a 503", start=at(2), end=at(3))
    posts = [r for r in await sandbox_requests(org) if r["method"] == "POST"]
    assert [r["status"] for r in posts[-2:]] == [503, 200]
    assert posts[-1]["body"]["id"] == posts[-2]["body"]["id"] == made["id"]
    listed = await gql(client, EVENTS, {"min": at(-1), "max": at(5)}, org.owner.token)
    assert len(listed["data"]["calendarEvents"]["edges"]) == 2
    # The access token refused mid-way (401): renewed once, the call made again.
    before = await refreshes(org.site)
    await fault(org, status=401, count=1, path="/calendar/v3/calendars")
    listed = await gql(client, EVENTS, {"min": at(-1), "max": at(5)}, org.owner.token)
    assert "errors" not in listed, listed
    assert await refreshes(org.site) == before + 1
    # Google down for good: UPSTREAM_UNAVAILABLE naming the provider, nothing else.
    await fault(org, status=503, count=-1, path="/calendar/v3/calendars")
    down = await gql(client, EVENTS, {"min": at(-1), "max": at(5)}, org.owner.token)
    assert error_codes(down) == ["UPSTREAM_UNAVAILABLE"]
    assert down["errors"][0]["extensions"]["provider"] == "google_calendar"
    await client.delete("/sandbox/google_calendar/_sandbox/faults")


async def test_a_revoked_grant_answers_connection_required(org: Org) -> None:
    client = org.site.browser
    await client.post("/sandbox/google_calendar/_sandbox/revoke", json={"email": org.owner.email})
    listed = await gql(client, EVENTS, {}, org.owner.token)
    assert error_codes(listed) == ["CONNECTION_REQUIRED"]
    assert listed["errors"][0]["extensions"]["reason"] == "NEEDS_RECONNECTION"
    [account] = await accounts(org.site, org.owner)
    assert account["status"] == "NEEDS_RECONNECTION"


async def test_abuse(org: Org) -> None:
    client = org.site.browser
    stranger = await register(client)
    foreign_contact = await make_contact(client, stranger)
    foreign_lead = await make_lead(client, stranger)
    posts_before = len([r for r in await sandbox_requests(org) if r["method"] == "POST"])
    for link in ({"contactId": foreign_contact}, {"leadId": foreign_lead}):
        body = await gql(client, CREATE, {"i": {"event": event("x", 0) | link}}, org.owner.token)
        assert error_codes(body) == ["NOT_FOUND"], body
    # Refused before Google was asked.
    assert len([r for r in await sandbox_requests(org) if r["method"] == "POST"]) == posts_before
    for fields, name in (
        ({"summary": "x" * 301}, "summary"),
        ({"summary": "a\u0000b"}, None),
        ({"summary": "two\nlines"}, "summary"),
        ({"start": at(2), "end": at(1)}, "end"),
        ({"attendees": [{"email": "nobody"}]}, "attendees"),
        ({"reminders": [{"method": "EMAIL", "minutes": 99999}]}, "reminders"),
    ):
        body = await gql(client, CREATE, {"i": {"event": event("x", 0) | fields}}, org.owner.token)
        assert error_codes(body) == ["BAD_USER_INPUT"], (fields, body)
        if name:
            assert name in body["errors"][0]["extensions"]["details"], body
    # Another organization's connected account, or a member's own, is nobody else's.
    [mine] = await accounts(org.site, org.owner)
    assert error_codes(await gql(client, EVENTS, {"acc": mine["id"]}, stranger.token)) == [
        "NOT_FOUND"
    ]
    support = await member(org.site, org.owner, "SUPPORT")
    assert error_codes(await gql(client, EVENTS, {"acc": mine["id"]}, support.token)) == [
        "NOT_FOUND"
    ]
    # Without an account of their own or the organization's: CONNECTION_REQUIRED.
    missing = await gql(client, EVENTS, {}, support.token)
    assert error_codes(missing) == ["CONNECTION_REQUIRED"]
    # Once the member connects their own, they use it (not the owner's).
    await connect_calendar(org.site, support)
    await create(org, token=support.token, summary="Support's")
    theirs = await gql(client, EVENTS, {"min": at(-1), "max": at(5)}, support.token)
    assert [e["node"]["summary"] for e in theirs["data"]["calendarEvents"]["edges"]] == [
        "Support's"
    ]
    # A READ_ONLY member reads but does not write; SUPPORT does not share.
    reader = await member(org.site, org.owner, "READ_ONLY")
    assert error_codes(
        await gql(client, CREATE, {"i": {"event": event("x", 0)}}, reader.token)
    ) == ["FORBIDDEN"]
    assert error_codes(
        await gql(client, SHARE, {"i": {"email": "a@example.com"}}, support.token)
    ) == ["FORBIDDEN"]
    # Only an OWNER connects the organization's calendar.
    tenant = await gql(
        client,
        "mutation { connectGoogleCalendar(input: {scope: TENANT}) { authorizationUrl } }",
        token=support.token,
    )
    assert error_codes(tenant) == ["FORBIDDEN"]
    # An event id that cannot exist, a foreign task: NOT_FOUND.
    assert error_codes(
        await gql(client, DELETE, {"i": {"eventId": "../../x"}}, org.owner.token)
    ) == ["NOT_FOUND"]
    made = await gql(client, TASK, {"i": {"title": "Theirs", "dueAt": at(1)}}, stranger.token)
    foreign_task = made["data"]["createTask"]["task"]["id"]
    assert error_codes(
        await gql(client, SCHEDULE, {"i": {"taskId": foreign_task}}, org.owner.token)
    ) == ["NOT_FOUND"]

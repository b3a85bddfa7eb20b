"""Zoom meetings over HTTP against the emulator: instant, scheduled and recurring meetings,
update, delete, Zoom's own list with paging, registrants, participants and recordings;
Zoom's signed webhooks through the inbox (forged, stale and replayed ones refused or
processed once; the URL validation answered); the status forward only; the join URL
mailed to a lead's contact; faults and abuse."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

from models.events import OutboxEvent
from models.mail import OutboundEmail
from models.meetings import Meeting
from models.webhooks import WebhookInbox
from schema.relay import decode_id
from tests.calendar.conftest import member
from tests.conftest import error_codes, eventually, gql, register
from tests.meetings.conftest import Zoomed

CREATE = """mutation($i: CreateMeetingInput!) { createMeeting(input: $i) { meeting {
  id zoomId meetingType status topic startTime durationMinutes joinUrl recurrence invitedAt
  lead { id } contact { id email } } } }"""
UPDATE = """mutation($i: UpdateMeetingInput!) { updateMeeting(input: $i) { meeting {
  id topic durationMinutes } } }"""
DELETE = """mutation($i: MeetingIdInput!) { deleteMeeting(input: $i) { meeting { id status } } }"""
MEETING = """query($id: ID!, $r: Boolean) { meeting(id: $id, refresh: $r) {
  id status topic startedAt endedAt recordingReadyAt
  participants { edges { node { name email durationSeconds } } }
  registrants { edges { node { email firstName status joinUrl } } }
  recording { uuid files { fileType playUrl } } } }"""
ZOOM_LIST = """query($first: Int, $after: String) { zoomMeetings(first: $first, after: $after) {
  edges { node { id topic } } pageInfo { hasNextPage endCursor } } }"""
RECORDINGS = """query($f: Date!, $t: Date!) { meetingRecordings(dateFrom: $f, dateTo: $t) {
  edges { node { uuid topic files { fileType } } } } }"""
REGISTER = """mutation($i: AddMeetingRegistrantInput!) { addMeetingRegistrant(input: $i) {
  registrant { id email joinUrl } } }"""
INVITE = """mutation($i: MeetingIdInput!) { sendMeetingInvitation(input: $i) {
  meeting { id invitedAt } } }"""
CONTACT = """mutation($i: CreateContactInput!) { createContact(input: $i) { contact { id } } }"""
LEAD = """mutation($i: CreateLeadInput!) { createLead(input: $i) { lead { id } } }"""


async def create(
    z: Zoomed, token: str | None = None, invite: bool = False, **fields: Any
) -> dict[str, Any]:
    meeting = {"topic": "Demo", "startTime": "2031-03-03T09:00:00+00:00", "durationMinutes": 45}
    body = await gql(
        z.client,
        CREATE,
        {"i": {"meeting": meeting | fields, "invite": invite}},
        token or z.owner.token,
    )
    assert "errors" not in body, body
    return dict(body["data"]["createMeeting"]["meeting"])


async def lead_with_contact(z: Zoomed, email: str = "jane@example.com") -> str:
    contact = await gql(
        z.client, CONTACT, {"i": {"name": "Jane Roe", "email": email}}, z.owner.token
    )
    contact_id = contact["data"]["createContact"]["contact"]["id"]
    lead = await gql(
        z.client, LEAD, {"i": {"title": "Big deal", "contactId": contact_id}}, z.owner.token
    )
    return str(lead["data"]["createLead"]["lead"]["id"])


def signed(
    secret: str, body: dict[str, Any], stamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """A notification signed as Zoom documents it (computed here, not by the gateway's code)."""
    raw = json.dumps(body).encode()
    ts = str(int(time.time()) if stamp is None else stamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:".encode() + raw, hashlib.sha256).hexdigest()
    return raw, {
        "content-type": "application/json",
        "x-zm-request-timestamp": ts,
        "x-zm-signature": f"v0={digest}",
    }


def notice(event: str, zoom_id: str, uuid: str, event_ts: int, **more: Any) -> dict[str, Any]:
    return {
        "event": event,
        "event_ts": event_ts,
        "payload": {"account_id": "acct-meetings", "object": {"id": zoom_id, "uuid": uuid, **more}},
    }


async def meeting_row(gid: str) -> Meeting:
    return await Meeting.get(id=decode_id(gid, "Meeting"))


async def test_meetings_of_every_type_updated_listed_and_deleted(zoomed: Zoomed) -> None:
    z = zoomed
    scheduled = await create(z)
    assert scheduled["meetingType"] == "SCHEDULED" and scheduled["status"] == "WAITING"
    assert (
        scheduled["joinUrl"].startswith("https://zoom.us/j/") and scheduled["durationMinutes"] == 45
    )
    instant = await create(z, type="INSTANT", topic="Now", startTime=None)
    assert instant["meetingType"] == "INSTANT" and instant["startTime"] is None
    recurring = await create(
        z,
        type="RECURRING",
        topic="Weekly",
        recurrence={"kind": "WEEKLY", "weeklyDays": [2, 4], "endTimes": 6},
    )
    assert (
        recurring["recurrence"]["weekly_days"] == "2,4"
        and recurring["recurrence"]["end_times"] == 6
    )
    made = z.sandbox.meetings[recurring["zoomId"]]
    assert made["type"] == 8 and len(made["occurrences"]) == 6
    # Zoom got the documented body.
    posts = [
        r
        for r in z.sandbox.recorded
        if r["method"] == "POST" and r["path"] == "/v2/users/me/meetings"
    ]
    assert posts[0]["body"] == {
        "topic": "Demo",
        "type": 2,
        "start_time": "2031-03-03T09:00:00Z",
        "duration": 45,
    }
    # Update (PATCH), then read again from Zoom.
    changed = await gql(
        z.client,
        UPDATE,
        {"i": {"id": scheduled["id"], "meeting": {"topic": "Demo, moved", "durationMinutes": 30}}},
        z.owner.token,
    )
    assert changed["data"]["updateMeeting"]["meeting"] == {
        "id": scheduled["id"],
        "topic": "Demo, moved",
        "durationMinutes": 30,
    }
    z.sandbox.meetings[scheduled["zoomId"]]["topic"] = "Renamed at Zoom"
    again = await gql(z.client, MEETING, {"id": scheduled["id"], "r": True}, z.owner.token)
    assert again["data"]["meeting"]["topic"] == "Renamed at Zoom"
    # Zoom's own list, two at a time.
    seen: list[str] = []
    after = None
    for _ in range(3):
        page = await gql(z.client, ZOOM_LIST, {"first": 2, "after": after}, z.owner.token)
        assert "errors" not in page, page
        seen += [e["node"]["id"] for e in page["data"]["zoomMeetings"]["edges"]]
        if not page["data"]["zoomMeetings"]["pageInfo"]["hasNextPage"]:
            break
        after = page["data"]["zoomMeetings"]["pageInfo"]["endCursor"]
    assert sorted(seen) == sorted([scheduled["zoomId"], instant["zoomId"], recurring["zoomId"]])
    # Delete: gone at Zoom, DELETED here, a meeting.deleted event; deleting again: NOT_FOUND.
    gone = await gql(z.client, DELETE, {"i": {"id": instant["id"]}}, z.owner.token)
    assert gone["data"]["deleteMeeting"]["meeting"]["status"] == "DELETED"
    assert instant["zoomId"] not in z.sandbox.meetings
    tenant = (await meeting_row(instant["id"])).tenant_id
    assert await OutboxEvent.filter(type="meeting.deleted", tenant_id=tenant).exists()
    assert error_codes(
        await gql(z.client, DELETE, {"i": {"id": instant["id"]}}, z.owner.token)
    ) == ["NOT_FOUND"]


async def test_registrants(zoomed: Zoomed) -> None:
    z = zoomed
    closed = await create(z)
    refused = await gql(
        z.client,
        REGISTER,
        {"i": {"meetingId": closed["id"], "email": "a@example.com", "firstName": "A"}},
        z.owner.token,
    )
    assert error_codes(refused) == ["BAD_USER_INPUT"]  # registration is off at Zoom (3038)
    meeting = await create(z, registration=True)
    added = await gql(
        z.client,
        REGISTER,
        {"i": {"meetingId": meeting["id"], "email": "Ada@Example.com", "firstName": "Ada"}},
        z.owner.token,
    )
    assert "errors" not in added, added
    registrant = added["data"]["addMeetingRegistrant"]["registrant"]
    assert registrant["email"] == "ada@example.com" and registrant["joinUrl"].startswith(
        "https://zoom.us/w/"
    )
    shown = await gql(z.client, MEETING, {"id": meeting["id"]}, z.owner.token)
    [node] = [e["node"] for e in shown["data"]["meeting"]["registrants"]["edges"]]
    assert (node["email"], node["firstName"], node["status"]) == (
        "ada@example.com",
        "Ada",
        "approved",
    )


async def test_webhooks_move_the_meeting_forward_with_participants_and_recording(
    zoomed: Zoomed,
) -> None:
    z = zoomed
    meeting = await create(z)
    zoom_id = meeting["zoomId"]
    assert (
        await z.client.post(f"/sandbox/zoom/_sandbox/meetings/{zoom_id}/start")
    ).status_code == 200

    async def status() -> str | None:
        row = await meeting_row(meeting["id"])
        return row.status

    await eventually(lambda: _is(status, "STARTED"), "meeting started")
    await z.client.post(
        f"/sandbox/zoom/_sandbox/meetings/{zoom_id}/end",
        json={"participants": [{"name": "Ada", "email": "ada@example.com"}, {"name": "Grace"}]},
    )
    await eventually(lambda: _is(status, "ENDED"), "meeting ended")
    await z.client.post(f"/sandbox/zoom/_sandbox/meetings/{zoom_id}/recording")
    await eventually(lambda: _recording_ready(meeting["id"]), "recording ready")
    shown = await gql(z.client, MEETING, {"id": meeting["id"]}, z.owner.token)
    data = shown["data"]["meeting"]
    assert data["status"] == "ENDED" and data["startedAt"] and data["endedAt"]
    assert [p["node"]["name"] for p in data["participants"]["edges"]] == ["Ada", "Grace"]
    assert data["participants"]["edges"][0]["node"]["email"] == "ada@example.com"
    assert data["recording"]["files"][0]["fileType"] == "MP4"
    recordings = await gql(
        z.client, RECORDINGS, {"f": "2020-01-01", "t": "2020-01-30"}, z.owner.token
    )
    assert recordings["data"]["meetingRecordings"]["edges"] == []  # outside the dates
    tenant = (await meeting_row(meeting["id"])).tenant_id
    types = [
        e.type
        for e in await OutboxEvent.filter(type__startswith="meeting.", tenant_id=tenant).order_by(
            "id"
        )
    ]
    for expected in (
        "meeting.created",
        "meeting.started",
        "meeting.ended",
        "meeting.recording_completed",
    ):
        assert expected in types, types
    # Every webhook the sandbox sent was signed, accepted and processed once.
    delivered = [d for d in z.sandbox.callbacks.recorded() if d["status"] is not None]
    assert delivered and all(d["status"] == 200 for d in delivered)
    # A late `meeting.started` of the same occurrence moves nothing back.
    row = await meeting_row(meeting["id"])
    raw, headers = signed(
        z.secret, notice("meeting.started", zoom_id, row.occurrence_uuid, int(time.time() * 1000))
    )
    answer = await z.client.post("/webhooks/zoom", content=raw, headers=headers)
    assert answer.status_code == 200
    await eventually(lambda: _processed(answer.json()["eventId"]), "late notice processed")
    assert (await meeting_row(meeting["id"])).status == "ENDED"
    # The next occurrence (another uuid) starts over.
    await z.client.post(f"/sandbox/zoom/_sandbox/meetings/{zoom_id}/start")
    await eventually(lambda: _is(status, "STARTED"), "next occurrence started")
    assert (await meeting_row(meeting["id"])).occurrence_uuid != row.occurrence_uuid


async def _is(status: Any, wanted: str) -> bool:
    return bool(await status() == wanted)


async def _recording_ready(gid: str) -> bool:
    return (await meeting_row(gid)).recording_ready_at is not None


async def _processed(event_id: str) -> bool:
    row = await WebhookInbox.filter(provider="zoom", event_id=event_id).first()
    return row is not None and row.status == "processed"


async def test_forged_stale_and_replayed_webhooks(zoomed: Zoomed) -> None:
    z = zoomed
    meeting = await create(z)
    before = await WebhookInbox.filter(provider="zoom").count()
    body = notice("meeting.started", meeting["zoomId"], "uuid-1", int(time.time() * 1000))
    raw, headers = signed("not-the-secret-token", body)
    forged = await z.client.post("/webhooks/zoom", content=raw, headers=headers)
    assert forged.status_code == 401 and forged.json()["error"]["reason"] == "SIGNATURE_MISMATCH"
    raw, headers = signed(z.secret, body, stamp=int(time.time()) - 3600)
    stale = await z.client.post("/webhooks/zoom", content=raw, headers=headers)
    assert stale.status_code == 401 and stale.json()["error"]["reason"] == "STALE_TIMESTAMP"
    raw, headers = signed(z.secret, body)
    tampered = await z.client.post(
        "/webhooks/zoom", content=raw.replace(b"uuid-1", b"uuid-2"), headers=headers
    )
    assert tampered.status_code == 401
    no_signature = await z.client.post(
        "/webhooks/zoom", content=raw, headers={"content-type": "application/json"}
    )
    assert no_signature.status_code == 401
    assert await WebhookInbox.filter(provider="zoom").count() == before  # nothing stored
    # The authentic one, then the same delivered again (Zoom retries, newly signed).
    first = await z.client.post("/webhooks/zoom", content=raw, headers=headers)
    assert first.status_code == 200 and first.json()["duplicate"] is False
    raw_again, headers_again = signed(z.secret, body)
    again = await z.client.post("/webhooks/zoom", content=raw_again, headers=headers_again)
    assert again.json() == {**first.json(), "duplicate": True}
    await eventually(lambda: _processed(first.json()["eventId"]), "processed")
    assert await WebhookInbox.filter(provider="zoom").count() == before + 1
    tenant = (await meeting_row(meeting["id"])).tenant_id
    started = await OutboxEvent.filter(type="meeting.started", tenant_id=tenant).count()
    assert started == 1


async def test_the_url_validation_is_answered_and_not_stored(zoomed: Zoomed) -> None:
    z = zoomed
    before = await WebhookInbox.filter(provider="zoom").count()
    body = {
        "event": "endpoint.url_validation",
        "event_ts": int(time.time() * 1000),
        "payload": {"plainToken": "qgg8vlvZRS6UYooatFL8Aw"},
    }
    raw, headers = signed(z.secret, body)
    answer = await z.client.post("/webhooks/zoom", content=raw, headers=headers)
    assert answer.status_code == 200
    expected = hmac.new(z.secret.encode(), b"qgg8vlvZRS6UYooatFL8Aw", hashlib.sha256).hexdigest()
    assert answer.json() == {"plainToken": "qgg8vlvZRS6UYooatFL8Aw", "encryptedToken": expected}
    assert await WebhookInbox.filter(provider="zoom").count() == before
    raw, headers = signed("someone-else", body)
    assert (await z.client.post("/webhooks/zoom", content=raw, headers=headers)).status_code == 401


async def test_a_meeting_for_a_lead_mails_its_join_url_to_the_contact(zoomed: Zoomed) -> None:
    z = zoomed
    lead = await lead_with_contact(z, "jane.roe@example.com")
    meeting = await create(z, invite=True, leadId=lead, topic="Proposal walkthrough")
    assert meeting["lead"] == {"id": lead} and meeting["contact"]["email"] == "jane.roe@example.com"
    assert meeting["invitedAt"]
    [mail] = await OutboundEmail.filter(recipient="jane.roe@example.com")
    assert mail.kind == "meeting_invitation" and mail.subject == "Invitation: Proposal walkthrough"
    assert meeting["joinUrl"] in mail.text and meeting["joinUrl"] in mail.html
    assert "Jane Roe" in mail.text and "2031-03-03 09:00 UTC" in mail.text
    # Without a contact to write to: BAD_USER_INPUT, nothing queued.
    alone = await create(z)
    refused = await gql(z.client, INVITE, {"i": {"id": alone["id"]}}, z.owner.token)
    assert error_codes(refused) == ["BAD_USER_INPUT"]


async def test_faults_through_the_provider_layer(zoomed: Zoomed) -> None:
    z = zoomed
    await create(z)
    faults = "/sandbox/zoom/_sandbox/faults"
    # 429 with Retry-After on a read: retried, answered.
    await z.client.post(
        faults,
        json={
            "status": 429,
            "retry_after": 0,
            "count": 1,
            "path": "/v2/users/me/meetings",
            "method": "GET",
        },
    )
    listed = await gql(z.client, ZOOM_LIST, {}, z.owner.token)
    assert "errors" not in listed and len(listed["data"]["zoomMeetings"]["edges"]) == 1
    # 503 on a create: not retried (Zoom has no idempotency key), UPSTREAM_UNAVAILABLE.
    before = len(
        [
            r
            for r in z.sandbox.recorded
            if r["method"] == "POST" and r["path"] == "/v2/users/me/meetings"
        ]
    )
    await z.client.post(
        faults, json={"status": 503, "count": 1, "method": "POST", "path": "/v2/users/me/meetings"}
    )
    down = await gql(
        z.client, CREATE, {"i": {"meeting": {"topic": "x", "type": "INSTANT"}}}, z.owner.token
    )
    assert error_codes(down) == ["UPSTREAM_UNAVAILABLE"]
    after = len(
        [
            r
            for r in z.sandbox.recorded
            if r["method"] == "POST" and r["path"] == "/v2/users/me/meetings"
        ]
    )
    assert after == before + 1
    # The access token expired at Zoom mid-way: 401, renewed once, the call made again.
    await z.client.post("/sandbox/zoom/_sandbox/expire")
    tokens_before = len([r for r in z.sandbox.recorded if r["path"] == "/oauth/token"])
    listed = await gql(z.client, ZOOM_LIST, {}, z.owner.token)
    assert "errors" not in listed, listed
    assert len([r for r in z.sandbox.recorded if r["path"] == "/oauth/token"]) == tokens_before + 1


async def test_abuse(zoomed: Zoomed) -> None:
    z = zoomed
    stranger = await register(z.client)
    foreign_lead = await gql(z.client, LEAD, {"i": {"title": "Theirs"}}, stranger.token)
    foreign_lead_id = foreign_lead["data"]["createLead"]["lead"]["id"]
    posts = len([r for r in z.sandbox.recorded if r["method"] == "POST"])
    body = await gql(
        z.client,
        CREATE,
        {"i": {"meeting": {"topic": "x", "type": "INSTANT", "leadId": foreign_lead_id}}},
        z.owner.token,
    )
    assert error_codes(body) == ["NOT_FOUND"]
    assert len([r for r in z.sandbox.recorded if r["method"] == "POST"]) == posts  # Zoom not asked
    mine = await create(z)
    for query, variables in (
        (MEETING, {"id": mine["id"]}),
        (DELETE, {"i": {"id": mine["id"]}}),
        (INVITE, {"i": {"id": mine["id"]}}),
    ):
        assert error_codes(await gql(z.client, query, variables, stranger.token)) == ["NOT_FOUND"]
    # The stranger's organization has no Zoom: CONNECTION_REQUIRED.
    none = await gql(
        z.client, CREATE, {"i": {"meeting": {"topic": "x", "type": "INSTANT"}}}, stranger.token
    )
    assert error_codes(none) == ["CONNECTION_REQUIRED"]
    for fields, name in (
        ({"topic": "x" * 201}, "topic"),
        ({"topic": "a\u0000b"}, None),
        ({"topic": "two\nlines"}, "topic"),
        ({"topic": "x", "durationMinutes": 5000}, "durationMinutes"),
        ({"topic": "x", "startTime": None}, "startTime"),
        ({"topic": "x", "type": "RECURRING"}, "recurrence"),
        (
            {"topic": "x", "type": "RECURRING", "recurrence": {"kind": "WEEKLY", "endTimes": 3}},
            "recurrence.weeklyDays",
        ),
    ):
        meeting = {"startTime": "2031-03-03T09:00:00+00:00"} | fields
        body = await gql(z.client, CREATE, {"i": {"meeting": meeting}}, z.owner.token)
        assert error_codes(body) == ["BAD_USER_INPUT"], (fields, body)
        if name:
            assert name in body["errors"][0]["extensions"]["details"], body
    reader = await member_of(z, "READ_ONLY")
    assert error_codes(
        await gql(
            z.client, CREATE, {"i": {"meeting": {"topic": "x", "type": "INSTANT"}}}, reader.token
        )
    ) == ["FORBIDDEN"]
    seen = await gql(z.client, MEETING, {"id": mine["id"]}, reader.token)
    assert seen["data"]["meeting"]["topic"] == "Demo"
    # Only an OWNER connects Zoom.
    manager = await member_of(z, "MANAGER")
    again = await gql(
        z.client,
        "mutation { connectZoom(input: {}) { connectedAccount { id } } }",
        token=manager.token,
    )
    assert error_codes(again) == ["FORBIDDEN"]


async def member_of(z: Zoomed, role: str) -> Any:
    from tests.identity.conftest import Site

    return await member(Site(z.url, z.app, z.client), z.owner, role)


SOURCE = """mutation($i: CreateWebhookSourceInput!) { createWebhookSource(input: $i) { url } }"""


async def test_an_organizations_own_zoom_app_posts_to_its_source_and_reaches_its_meetings(
    zoomed: Zoomed,
) -> None:
    """A webhook source with the organization's Secret Token: its events are stored under
    that organization and touch only its meetings."""
    z = zoomed
    refused = await gql(z.client, SOURCE, {"i": {"provider": "zoom"}}, z.owner.token)
    assert error_codes(refused) == ["BAD_USER_INPUT"]  # Zoom's token is Zoom's to give
    made = await gql(
        z.client, SOURCE, {"i": {"provider": "zoom", "secret": "OrgSecretToken123"}}, z.owner.token
    )
    path = made["data"]["createWebhookSource"]["url"].removeprefix(z.url)
    meeting = await create(z)
    # Another organization with a meeting of the same Zoom number cannot be reached from it.
    stranger = await register(z.client)
    other = await Meeting.create(
        tenant_id=decode_id(stranger.org_id, "Organization"),
        zoom_id=meeting["zoomId"],
        meeting_type="SCHEDULED",
        topic="Theirs",
    )
    raw, headers = signed(
        "OrgSecretToken123",
        notice("meeting.started", meeting["zoomId"], "org-uuid", int(time.time() * 1000)),
    )
    assert (await z.client.post("/webhooks/zoom", content=raw, headers=headers)).status_code == 401
    answer = await z.client.post(path, content=raw, headers=headers)
    assert answer.status_code == 200, answer.text
    stored = await WebhookInbox.get(provider="zoom", event_id=answer.json()["eventId"])
    assert stored.tenant_id == (await meeting_row(meeting["id"])).tenant_id
    await eventually(lambda: _processed(answer.json()["eventId"]), "processed")
    assert (await meeting_row(meeting["id"])).status == "STARTED"
    assert (await Meeting.get(id=other.id)).status == "WAITING"

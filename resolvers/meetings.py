"""Zoom meetings through the organization's connected Zoom account
(resolvers/identity/connections.py): create (instant, scheduled, recurring with its rule), read
again from Zoom, change, delete, list; registrants; a past meeting's participants; cloud
recordings. Each meeting the gateway creates is a `Meeting` row (what it is about in the
CRM, its join URL, its status), written with its `meeting.created` event.

Status comes from Zoom's signed webhooks through the inbox (resolvers/webhooks_in.py:
verified, stored once per event, processed by a job): `meeting.started` → STARTED,
`meeting.ended` → ENDED, forward only within one occurrence (`events.move_forward`: a late
or repeated notification never moves it back); a recurring meeting's next occurrence
(another instance uuid starting after the last ended) begins again at WAITING.
`recording.completed` sets `recordingReadyAt`. Each change is a `meeting.*` event.

A meeting about a lead (or a contact) can mail its join URL to the contact, with the
`meeting_invitation` template, through the mail queue (suppressed addresses refused).

A create is not retried once the request may have reached Zoom (no idempotency key): a
timeout answers UPSTREAM_UNAVAILABLE and the meeting may exist at Zoom (`zoomMeetings`
lists it) without a row here.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from kit.errors import BadUserInput, NotFound
from kit.text import bounded_text
from models.contacts import Contact
from models.leads import Lead
from models.meetings import Meeting, MeetingStatus, MeetingType
from models.tenancy import get_scoped, scoped
from models.tenants import Tenant
from models.webhooks import WebhookInbox
from providers import zoom
from providers.errors import ProviderError
from resolvers.context import Context
from resolvers.events import emit, global_id, move_forward
from resolvers.identity.connections import ZOOM, usable_account, zoom_client
from resolvers.mail.compose import Recipient
from resolvers.mail.outbox import queue
from resolvers.mail.suppression import refuse, suppressed
from resolvers.mail.templates import render
from resolvers.operations import operation
from resolvers.pagination import Page, VendorPage, page_of, vendor_page
from resolvers.upstream import to_gateway_error
from resolvers.webhooks_in import inbox_handler

log = logging.getLogger("switchboard.meetings")

T = TypeVar("T")

RANK = {
    MeetingStatus.WAITING.value: 0,
    MeetingStatus.STARTED.value: 1,
    MeetingStatus.ENDED.value: 2,
}
RECURRENCE_KINDS = {"DAILY": 1, "WEEKLY": 2, "MONTHLY": 3}
MAX_INTERVAL = {"DAILY": 90, "WEEKLY": 12, "MONTHLY": 3}  # Zoom's limits
MAX_TOPIC = 200
MAX_AGENDA = 2000
INVITATION_KIND = "meeting_invitation"


@dataclass
class RecurrenceIn:
    kind: str  # DAILY | WEEKLY | MONTHLY
    repeat_interval: int = 1
    weekly_days: list[int] = field(default_factory=list)  # 1 = Sunday … 7 = Saturday
    monthly_day: int | None = None
    end_times: int | None = None
    end_date_time: dt.datetime | None = None


@dataclass
class MeetingIn:
    """A meeting's fields; None means "not given" (for an update: unchanged)."""

    topic: str | None = None
    meeting_type: MeetingType = MeetingType.SCHEDULED
    start_time: dt.datetime | None = None
    duration_minutes: int | None = None
    timezone: str | None = None
    agenda: str | None = None
    recurrence: RecurrenceIn | None = None
    waiting_room: bool | None = None
    join_before_host: bool | None = None
    registration: bool | None = None
    lead_id: int | None = None
    contact_id: int | None = None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def event_data(meeting: Meeting) -> dict[str, Any]:
    return {
        "meetingId": global_id("Meeting", meeting.id),
        "zoomId": meeting.zoom_id,
        "status": meeting.status,
        "topic": meeting.topic,
        "leadId": global_id("Lead", meeting.lead_id) if meeting.lead_id else None,
        "contactId": global_id("Contact", meeting.contact_id) if meeting.contact_id else None,
    }


async def _zoom(call: Awaitable[T], field: str = "input") -> T:
    try:
        return await call
    except ProviderError as err:
        if err.status == 404:
            raise NotFound("Meeting not found at Zoom.") from None
        raise to_gateway_error(err, field=field) from None


def _text(value: str | None, name: str, limit: int, *, one_line: bool = False) -> str | None:
    return bounded_text(value, name, limit, single_line=one_line)


def _zoom_time(value: dt.datetime, name: str) -> str:
    if value.tzinfo is None:
        raise BadUserInput(f"{name} needs a time zone.", details={name: "needs a UTC offset"})
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _recurrence(rule: RecurrenceIn) -> dict[str, Any]:
    if rule.kind not in RECURRENCE_KINDS:
        raise BadUserInput(
            "Invalid recurrence.", details={"recurrence.kind": "DAILY, WEEKLY or MONTHLY"}
        )
    if not 1 <= rule.repeat_interval <= MAX_INTERVAL[rule.kind]:
        raise BadUserInput(
            "Invalid recurrence.",
            details={"recurrence.repeatInterval": f"1 to {MAX_INTERVAL[rule.kind]}"},
        )
    body: dict[str, Any] = {
        "type": RECURRENCE_KINDS[rule.kind],
        "repeat_interval": rule.repeat_interval,
    }
    if rule.kind == "WEEKLY":
        days = sorted(set(rule.weekly_days))
        if not days or any(not 1 <= d <= 7 for d in days):
            raise BadUserInput(
                "Invalid recurrence.", details={"recurrence.weeklyDays": "1 (Sunday) to 7"}
            )
        body["weekly_days"] = ",".join(map(str, days))
    if rule.kind == "MONTHLY":
        if rule.monthly_day is None or not 1 <= rule.monthly_day <= 31:
            raise BadUserInput("Invalid recurrence.", details={"recurrence.monthlyDay": "1 to 31"})
        body["monthly_day"] = rule.monthly_day
    if (rule.end_times is None) == (rule.end_date_time is None):
        raise BadUserInput(
            "Invalid recurrence.", details={"recurrence.endTimes": "give endTimes or endDateTime"}
        )
    if rule.end_times is not None:
        if not 1 <= rule.end_times <= 60:
            raise BadUserInput("Invalid recurrence.", details={"recurrence.endTimes": "1 to 60"})
        body["end_times"] = rule.end_times
    if rule.end_date_time is not None:
        body["end_date_time"] = _zoom_time(rule.end_date_time, "recurrence.endDateTime")
    return body


def _zoom_body(meeting: MeetingIn, *, creating: bool) -> dict[str, Any]:
    """The meeting as Zoom takes it, checked (BAD_USER_INPUT naming the field)."""
    body: dict[str, Any] = {}
    topic = _text(meeting.topic, "topic", MAX_TOPIC, one_line=True)
    if topic is not None:
        if not topic:
            raise BadUserInput("A meeting needs a topic.", details={"topic": "is required"})
        body["topic"] = topic
    elif creating:
        raise BadUserInput("A meeting needs a topic.", details={"topic": "is required"})
    agenda = _text(meeting.agenda, "agenda", MAX_AGENDA, one_line=False)
    if agenda is not None:
        body["agenda"] = agenda
    if creating:
        body["type"] = zoom.TYPES[meeting.meeting_type.value]
        if meeting.meeting_type is not MeetingType.INSTANT and meeting.start_time is None:
            raise BadUserInput(
                "A scheduled meeting needs a start.", details={"startTime": "is required"}
            )
        if meeting.meeting_type is MeetingType.RECURRING and meeting.recurrence is None:
            raise BadUserInput(
                "A recurring meeting needs its rule.", details={"recurrence": "is required"}
            )
    if meeting.start_time is not None:
        body["start_time"] = _zoom_time(meeting.start_time, "startTime")
    if meeting.duration_minutes is not None:
        if not 1 <= meeting.duration_minutes <= 1440:
            raise BadUserInput("Invalid duration.", details={"durationMinutes": "1 to 1440"})
        body["duration"] = meeting.duration_minutes
    timezone = _text(meeting.timezone, "timezone", 64, one_line=True)
    if timezone:
        body["timezone"] = timezone
    if meeting.recurrence is not None:
        if not creating or meeting.meeting_type is MeetingType.RECURRING:
            body["recurrence"] = _recurrence(meeting.recurrence)
        else:
            raise BadUserInput(
                "Only a recurring meeting has a rule.",
                details={"recurrence": "type RECURRING only"},
            )
    settings: dict[str, Any] = {}
    if meeting.waiting_room is not None:
        settings["waiting_room"] = meeting.waiting_room
    if meeting.join_before_host is not None:
        settings["join_before_host"] = meeting.join_before_host
    if meeting.registration is not None:
        settings["approval_type"] = 0 if meeting.registration else 2  # 0: automatic approval
    if settings:
        body["settings"] = settings
    return body


def _parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _stored(data: dict[str, Any]) -> dict[str, Any]:
    """A Zoom meeting's fields as the row keeps them."""
    values: dict[str, Any] = {
        "topic": str(data.get("topic") or "")[:MAX_TOPIC],
        "agenda": str(data.get("agenda") or "")[:MAX_AGENDA],
        "start_time": _parse_time(data.get("start_time")),
        "duration_minutes": data.get("duration") if isinstance(data.get("duration"), int) else None,
        "timezone": str(data.get("timezone") or "")[:64],
        "join_url": str(data.get("join_url") or "")[:1000],
        "host_email": str(data.get("host_email") or "")[:320],
        "recurrence": data.get("recurrence") if isinstance(data.get("recurrence"), dict) else None,
    }
    return values


async def _links(tenant_id: int, meeting: MeetingIn) -> tuple[int | None, int | None]:
    """(lead, contact) of the caller's organization (else NOT_FOUND); a lead's contact
    when only the lead is given."""
    lead = await get_scoped(Lead, tenant_id, meeting.lead_id) if meeting.lead_id else None
    contact_id = meeting.contact_id
    if contact_id is not None:
        await get_scoped(Contact, tenant_id, contact_id)
    elif lead is not None:
        contact_id = lead.contact_id
    return (lead.id if lead else None), contact_id


# Creating, reading, changing, deleting --------------------------------------------------------


@operation("meetings:write")
async def create_meeting(ctx: Context, meeting: MeetingIn, *, invite: bool = False) -> Meeting:
    principal = ctx.require("meetings:write")
    lead_id, contact_id = await _links(principal.tenant_id, meeting)
    body = _zoom_body(meeting, creating=True)
    account = await usable_account(ctx, ZOOM)
    made = await _zoom(zoom_client(ctx.services, account, ctx).create_meeting(body))
    async with in_transaction() as conn:
        row = await Meeting.create(
            using_db=conn,
            tenant_id=principal.tenant_id,
            account_id=account.id,
            zoom_id=str(made.get("id") or ""),
            occurrence_uuid=str(made.get("uuid") or "")[:128],
            meeting_type=meeting.meeting_type.value,
            lead_id=lead_id,
            contact_id=contact_id,
            created_by_id=principal.user_id,
            status_changed_at=_now(),
            **_stored(made),
        )
        await emit(principal.tenant_id, "meeting.created", event_data(row), connection=conn)
    if invite:
        await send_invitation(ctx, row.id)
        await row.refresh_from_db()
    return row


async def _meeting(ctx: Context, meeting_id: int, *, live: bool = True) -> Meeting:
    row = await get_scoped(Meeting, ctx.tenant_id, meeting_id)
    if live and row.status == MeetingStatus.DELETED.value:
        raise NotFound("Meeting not found.")
    return row


async def _client_for(ctx: Context, row: Meeting) -> zoom.ZoomClient:
    account = await usable_account(ctx, ZOOM, row.account_id) if row.account_id else None
    if account is None:
        account = await usable_account(ctx, ZOOM)
    return zoom_client(ctx.services, account, ctx)


@operation("meetings:read")
async def get_meeting(ctx: Context, meeting_id: int, *, refresh: bool) -> Meeting:
    """A meeting; with `refresh`, read again from Zoom (its topic, time, join URL)."""
    row = await _meeting(ctx, meeting_id, live=refresh)
    if refresh:
        data = await _zoom((await _client_for(ctx, row)).get_meeting(row.zoom_id))
        values = _stored(data)
        await Meeting.filter(id=row.id).update(**values)
        for name, value in values.items():
            setattr(row, name, value)
    return row


@operation("meetings:read")
async def list_meetings(
    ctx: Context, *, first: int | None, after: str | None, status: str | None
) -> Page[Meeting]:
    """The meetings the organization created through the gateway, newest first."""
    qs = scoped(Meeting, ctx.tenant_id)
    if status is not None:
        qs = qs.filter(status=status)
    return await page_of(ctx, qs, first=first, after=after)


@operation("meetings:write")
async def update_meeting(ctx: Context, meeting_id: int, meeting: MeetingIn) -> Meeting:
    principal = ctx.require("meetings:write")
    row = await _meeting(ctx, meeting_id)
    links: dict[str, Any] = {}
    if meeting.lead_id is not None or meeting.contact_id is not None:
        lead_id, contact_id = await _links(principal.tenant_id, meeting)
        links = {k: v for k, v in (("lead_id", lead_id), ("contact_id", contact_id)) if v}
    body = _zoom_body(meeting, creating=False)
    client = await _client_for(ctx, row)
    if body:
        await _zoom(client.update_meeting(row.zoom_id, body))
    data = await _zoom(client.get_meeting(row.zoom_id))
    values = {**_stored(data), **links}
    await Meeting.filter(id=row.id).update(**values)
    await row.refresh_from_db()
    await emit(principal.tenant_id, "meeting.updated", event_data(row))
    return row


@operation("meetings:write")
async def delete_meeting(ctx: Context, meeting_id: int) -> Meeting:
    principal = ctx.require("meetings:write")
    row = await _meeting(ctx, meeting_id)
    await _zoom((await _client_for(ctx, row)).delete_meeting(row.zoom_id))
    async with in_transaction() as conn:
        moved = (
            await Meeting.filter(id=row.id)
            .exclude(status=MeetingStatus.DELETED.value)
            .using_db(conn)
            .update(status=MeetingStatus.DELETED.value, status_changed_at=_now())
        )
        row.status = MeetingStatus.DELETED.value
        if moved:
            await emit(principal.tenant_id, "meeting.deleted", event_data(row), connection=conn)
    return row


@operation("meetings:read")
async def list_zoom_meetings(
    ctx: Context, *, first: int | None, after: str | None
) -> VendorPage[dict[str, Any]]:
    """The Zoom account's upcoming meetings, as Zoom lists them (those made elsewhere too)."""
    client = zoom_client(ctx.services, await usable_account(ctx, ZOOM), ctx)

    async def fetch(token: str | None, size: int) -> tuple[list[Any], str | None]:
        page = await _zoom(client.list_meetings(page_size=size, page_token=token), "after")
        return page.items, page.next_page_token

    return await vendor_page(fetch, first=first, after=after, max_page=ctx.settings.max_page_size)


# Registrants, participants, recordings --------------------------------------------------------


@operation("meetings:write")
async def add_registrant(
    ctx: Context, meeting_id: int, *, email: str, first_name: str, last_name: str
) -> dict[str, Any]:
    row = await _meeting(ctx, meeting_id)
    address = Recipient.of(email, field="email").email
    first = _text(first_name, "firstName", 64, one_line=True) or ""
    if not first:
        raise BadUserInput("A registrant needs a first name.", details={"firstName": "is required"})
    last = _text(last_name, "lastName", 64, one_line=True) or ""
    client = await _client_for(ctx, row)
    answer = await _zoom(
        client.add_registrant(row.zoom_id, email=address, first_name=first, last_name=last)
    )
    return {
        "id": answer.get("registrant_id") or answer.get("id"),
        "email": address,
        "first_name": first,
        "last_name": last,
        "status": "approved",
        "join_url": answer.get("join_url"),
    }


async def _zoom_pages(
    ctx: Context, fetch: Any, *, first: int | None, after: str | None
) -> VendorPage[dict[str, Any]]:
    async def one(token: str | None, size: int) -> tuple[list[Any], str | None]:
        page = await _zoom(fetch(token, size), "after")
        return page.items, page.next_page_token

    return await vendor_page(one, first=first, after=after, max_page=ctx.settings.max_page_size)


@operation("meetings:read")
async def list_registrants(
    ctx: Context, meeting_id: int, *, first: int | None, after: str | None
) -> VendorPage[dict[str, Any]]:
    row = await _meeting(ctx, meeting_id)
    client = await _client_for(ctx, row)
    return await _zoom_pages(
        ctx,
        lambda token, size: client.list_registrants(row.zoom_id, page_size=size, page_token=token),
        first=first,
        after=after,
    )


@operation("meetings:read")
async def list_participants(
    ctx: Context, meeting_id: int, *, first: int | None, after: str | None
) -> VendorPage[dict[str, Any]]:
    """Who attended the meeting's last occurrence that ended (none before it ends)."""
    row = await _meeting(ctx, meeting_id, live=False)
    if not row.occurrence_uuid or row.ended_at is None:
        return VendorPage([], [], False, False)
    client = await _client_for(ctx, row)
    uuid = row.occurrence_uuid
    return await _zoom_pages(
        ctx,
        lambda token, size: client.past_participants(uuid, page_size=size, page_token=token),
        first=first,
        after=after,
    )


@operation("meetings:read")
async def meeting_recording(ctx: Context, meeting_id: int) -> dict[str, Any] | None:
    """The cloud recording of the meeting's last occurrence; None while there is none."""
    row = await _meeting(ctx, meeting_id, live=False)
    if not row.occurrence_uuid:
        return None
    client = await _client_for(ctx, row)
    try:
        return await _zoom(client.meeting_recordings(row.occurrence_uuid))
    except NotFound:
        return None


@operation("meetings:read")
async def list_recordings(
    ctx: Context, *, date_from: dt.date, date_to: dt.date, first: int | None, after: str | None
) -> VendorPage[dict[str, Any]]:
    """The account's cloud recordings between two dates (Zoom allows a month at a time)."""
    if date_to < date_from or (date_to - date_from).days > 31:
        raise BadUserInput("Invalid dates.", details={"to": "from ≤ to, at most a month apart"})
    client = zoom_client(ctx.services, await usable_account(ctx, ZOOM), ctx)
    return await _zoom_pages(
        ctx,
        lambda token, size: client.list_recordings(
            date_from=date_from.isoformat(),
            date_to=date_to.isoformat(),
            page_size=size,
            page_token=token,
        ),
        first=first,
        after=after,
    )


# Invitations -----------------------------------------------------------------------------


@operation("meetings:write")
async def send_invitation(ctx: Context, meeting_id: int) -> Meeting:
    """Mail the meeting's join URL to its contact (the lead's contact for a meeting about a
    lead), with the `meeting_invitation` template."""
    principal = ctx.require("meetings:write")
    row = await _meeting(ctx, meeting_id)
    contact_id = row.contact_id
    if contact_id is None and row.lead_id is not None:
        lead = await scoped(Lead, principal.tenant_id).filter(id=row.lead_id).first()
        contact_id = lead.contact_id if lead else None
    contact = (
        await scoped(Contact, principal.tenant_id).filter(id=contact_id).first()
        if contact_id
        else None
    )
    if contact is None or not contact.email:
        raise BadUserInput(
            "The meeting has no contact with an email address to invite.",
            details={"meetingId": "needs a lead or contact with an email address"},
        )
    if not row.join_url:
        raise BadUserInput("The meeting has no join URL.", details={"meetingId": "no join URL"})
    recipient = Recipient.of(contact.email, contact.name, field="contact")
    if await suppressed(principal.tenant_id, [recipient.email]):
        raise refuse({recipient.email}, field="contact")
    tenant = await Tenant.get(id=principal.tenant_id)
    start = (
        row.start_time.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC") if row.start_time else None
    )
    variables = {
        "topic": row.topic,
        "join_url": row.join_url,
        "start": start,
        "duration": str(row.duration_minutes) if row.duration_minutes else None,
        "host": tenant.name,
        "name": contact.name or None,
        "agenda": row.agenda or None,
    }
    body = render("meeting_invitation", variables, organization=tenant.name)
    async with in_transaction() as conn:
        await queue(
            settings=ctx.settings,
            tenant_id=principal.tenant_id,
            kind=INVITATION_KIND,
            to=recipient,
            body=body,
            organization=tenant.name,
            connection=conn,
        )
        row.invited_at = _now()
        await Meeting.filter(id=row.id).using_db(conn).update(invited_at=row.invited_at)
        await emit(principal.tenant_id, "meeting.invitation_sent", event_data(row), connection=conn)
    return row


# Zoom's webhooks ---------------------------------------------------------------------------


def _object(event: WebhookInbox) -> dict[str, Any]:
    payload = event.payload if isinstance(event.payload, dict) else {}
    inner = payload.get("payload")
    obj = inner.get("object") if isinstance(inner, dict) else None
    return obj if isinstance(obj, dict) else {}


async def _about(event: WebhookInbox, connection: BaseDBAsyncClient) -> Meeting | None:
    obj = _object(event)
    zoom_id = str(obj.get("id") or "")[:32]
    if not zoom_id:
        return None
    qs = Meeting.filter(zoom_id=zoom_id).using_db(connection)
    if event.tenant_id is not None:  # a tenant's own webhook source: its meetings only
        qs = qs.filter(tenant_id=event.tenant_id)
    return await qs.exclude(status=MeetingStatus.DELETED.value).select_for_update().first()


async def _advance(
    meeting: Meeting, status: MeetingStatus, connection: BaseDBAsyncClient, **values: Any
) -> bool:
    return await move_forward(
        meeting,
        status.value,
        RANK,
        {"status_changed_at": _now(), "updated_at": _now(), **values},
        event_type=f"meeting.{status.value.lower()}",
        event_data=event_data,
        connection=connection,
    )


@inbox_handler("zoom", "meeting.started")
async def on_started(event: WebhookInbox, connection: BaseDBAsyncClient) -> None:
    meeting = await _about(event, connection)
    if meeting is None:
        return  # not a meeting the gateway made
    uuid = str(_object(event).get("uuid") or "")[:128]
    if uuid and uuid != meeting.occurrence_uuid and meeting.status == MeetingStatus.ENDED.value:
        # The next occurrence of a recurring meeting: it starts over from WAITING.
        reset = (
            await Meeting.filter(id=meeting.id, occurrence_uuid=meeting.occurrence_uuid)
            .using_db(connection)
            .update(status=MeetingStatus.WAITING.value, occurrence_uuid=uuid, ended_at=None)
        )
        if reset:
            meeting.status, meeting.occurrence_uuid = MeetingStatus.WAITING.value, uuid
    values: dict[str, Any] = {"started_at": _parse_time(_object(event).get("start_time")) or _now()}
    if uuid and meeting.status == MeetingStatus.WAITING.value:
        values["occurrence_uuid"] = uuid
    await _advance(meeting, MeetingStatus.STARTED, connection, **values)


def _this_occurrence(meeting: Meeting, event: WebhookInbox) -> bool:
    uuid = str(_object(event).get("uuid") or "")
    return not uuid or not meeting.occurrence_uuid or uuid == meeting.occurrence_uuid


@inbox_handler("zoom", "meeting.ended")
async def on_ended(event: WebhookInbox, connection: BaseDBAsyncClient) -> None:
    meeting = await _about(event, connection)
    if meeting is None or not _this_occurrence(meeting, event):
        return  # a late notice of an earlier occurrence
    ended = _parse_time(_object(event).get("end_time")) or _now()
    await _advance(meeting, MeetingStatus.ENDED, connection, ended_at=ended)


@inbox_handler("zoom", "recording.completed")
async def on_recording(event: WebhookInbox, connection: BaseDBAsyncClient) -> None:
    meeting = await _about(event, connection)
    if meeting is None or not _this_occurrence(meeting, event):
        return
    moved = (
        await Meeting.filter(id=meeting.id, recording_ready_at=None)
        .using_db(connection)
        .update(recording_ready_at=_now())
    )
    if moved:
        await emit(
            meeting.tenant_id,
            "meeting.recording_completed",
            event_data(meeting),
            connection=connection,
        )

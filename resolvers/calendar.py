"""Google Calendar through a connected account (resolvers/identity/connections.py): calendars,
events (a time window, paged), create / update / delete with attendees, reminders and a
Meet link, sharing a calendar, and the CRM: an event may be about a contact, a lead or a
task of the organization (kept here as a `CalendarEventLink`, and in the event's private
extended properties at Google), and a task with a due time can be put on the calendar.

Every call goes through the account the caller may use (their own, else the
organization's; another member's is NOT_FOUND). Google's refusals of the caller's data are
BAD_USER_INPUT, a missing event NOT_FOUND, anything else UPSTREAM_UNAVAILABLE.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tortoise.transactions import in_transaction

from kit.errors import BadUserInput, NotFound
from kit.text import EMAIL_RE, bounded_text, single_line_problem
from models.calendar import CalendarEventLink
from models.contacts import Contact
from models.identity import ConnectedAccount
from models.leads import Lead
from models.tasks import Task
from models.tenancy import get_scoped, scoped
from providers.errors import ProviderError
from providers.google_calendar import GoogleCalendarClient
from resolvers.context import Context
from resolvers.crm import by_id_loader
from resolvers.events import global_id
from resolvers.identity.connections import GOOGLE_CALENDAR, calendar_client, usable_account
from resolvers.operations import operation
from resolvers.pagination import VendorPage, vendor_page
from resolvers.upstream import to_gateway_error

T = TypeVar("T")

MAX_SUMMARY = 300
MAX_DESCRIPTION = 8000
MAX_LOCATION = 1000
MAX_ATTENDEES = 100
MAX_REMINDERS = 5
MAX_REMINDER_MINUTES = 40320  # four weeks, Google's limit
MAX_CALENDAR_ID = 255
SEND_UPDATES = ("all", "externalOnly", "none")
ACL_ROLES = ("freeBusyReader", "reader", "writer", "owner")
_EVENT_ID = re.compile(r"^[A-Za-z0-9_]{1,1024}$")  # base32hex, `_<start>` for an occurrence


@dataclass
class AttendeeIn:
    email: str
    display_name: str | None = None
    optional: bool = False


@dataclass
class ReminderIn:
    method: str  # email | popup
    minutes: int


@dataclass
class EventIn:
    """An event's fields; None means "not given" (for an update: unchanged)."""

    summary: str | None = None
    description: str | None = None
    location: str | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    all_day: bool = False
    time_zone: str | None = None
    attendees: list[AttendeeIn] | None = None
    use_default_reminders: bool | None = None
    reminders: list[ReminderIn] | None = None
    add_conference: bool = False
    contact_id: int | None = None
    lead_id: int | None = None
    task_id: int | None = None
    send_updates: str = "none"


@dataclass
class CalendarEventView:
    """An event as Google answered it, with what it is about in the CRM."""

    account_id: int
    calendar_id: str
    data: dict[str, Any]
    link: CalendarEventLink | None = field(default=None)


# Calling Google ---------------------------------------------------------------------------


async def _google(call: Awaitable[T], field: str = "input") -> T:
    try:
        return await call
    except ProviderError as err:
        if err.status in (404, 410):
            raise NotFound("Calendar or event not found.") from None
        raise to_gateway_error(err, field=field) from None


async def _client(
    ctx: Context, account_id: int | None
) -> tuple[ConnectedAccount, GoogleCalendarClient]:
    row = await usable_account(ctx, GOOGLE_CALENDAR, account_id)
    return row, calendar_client(ctx, row)


def _calendar_id(value: str | None) -> str:
    calendar_id = (value or "primary").strip()
    problem = single_line_problem(calendar_id)
    if problem or not 0 < len(calendar_id) <= MAX_CALENDAR_ID:
        raise BadUserInput(
            "Invalid calendar id.",
            details={"calendarId": problem or f"must be 1 to {MAX_CALENDAR_ID} characters"},
        )
    return calendar_id


def _event_id(value: str) -> str:
    event_id = (value or "").strip()
    if not _EVENT_ID.match(event_id):
        raise NotFound("Calendar event not found.")
    return event_id


# Reading ----------------------------------------------------------------------------------


@operation("calendar:read")
async def list_calendars(ctx: Context, account_id: int | None) -> list[dict[str, Any]]:
    """Every calendar the account sees (its own and those shared with it)."""
    _row, client = await _client(ctx, account_id)
    found: list[dict[str, Any]] = []
    token: str | None = None
    for _ in range(10):
        page = await _google(client.calendar_list(page_token=token))
        found.extend(page.items)
        token = page.next_page_token
        if not token:
            break
    return found


def _rfc3339(value: dt.datetime | None, name: str) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise BadUserInput(f"{name} needs a time zone.", details={name: "needs a UTC offset"})
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


@operation("calendar:read")
async def list_events(
    ctx: Context,
    *,
    account_id: int | None,
    calendar_id: str | None,
    time_min: dt.datetime | None,
    time_max: dt.datetime | None,
    first: int | None,
    after: str | None,
) -> VendorPage[CalendarEventView]:
    """The calendar's events in the window (occurrences of recurring ones), by start."""
    if time_min and time_max and time_max <= time_min:
        raise BadUserInput("The time window is empty.", details={"timeMax": "must follow timeMin"})
    calendar = _calendar_id(calendar_id)
    low, high = _rfc3339(time_min, "timeMin"), _rfc3339(time_max, "timeMax")
    row, client = await _client(ctx, account_id)

    async def fetch(token: str | None, size: int) -> tuple[list[Any], str | None]:
        page = await _google(
            client.list_events(
                calendar, time_min=low, time_max=high, page_token=token, max_results=size
            ),
            "after",
        )
        return page.items, page.next_page_token

    page = await vendor_page(fetch, first=first, after=after, max_page=ctx.settings.max_page_size)
    links = await _links(row, calendar, [str(e.get("id")) for e in page.items])
    return VendorPage(
        [CalendarEventView(row.id, calendar, e, links.get(str(e.get("id")))) for e in page.items],
        page.cursors,
        page.has_next,
        page.has_previous,
    )


async def _links(
    row: ConnectedAccount, calendar_id: str, event_ids: list[str]
) -> dict[str, CalendarEventLink]:
    if not event_ids:
        return {}
    found = await scoped(CalendarEventLink, row.tenant_id).filter(
        account_id=row.id, calendar_id=calendar_id, event_id__in=event_ids
    )
    return {link.event_id: link for link in found}


async def load_task(ctx: Context, task_id: int | None) -> Task | None:
    if task_id is None:
        return None
    result: Task | None = await by_id_loader(ctx, "calendar.tasks", Task).load(task_id)
    return result


# Writing ------------------------------------------------------------------------------------


def _text(value: str | None, name: str, limit: int, *, one_line: bool = False) -> str | None:
    return bounded_text(value, name, limit, single_line=one_line)


def _when(value: dt.datetime, *, all_day: bool, time_zone: str | None, name: str) -> dict[str, str]:
    if all_day:
        return {"date": value.date().isoformat()}
    when = {"dateTime": _rfc3339(value, name) or ""}
    if time_zone:
        when["timeZone"] = time_zone
    return when


def _google_body(tenant_id: int, event: EventIn, *, creating: bool) -> dict[str, Any]:
    """The event's fields as Google takes them, checked (BAD_USER_INPUT naming the field)."""
    body: dict[str, Any] = {}
    for name, key, limit, single in (
        ("summary", "summary", MAX_SUMMARY, True),
        ("description", "description", MAX_DESCRIPTION, False),
        ("location", "location", MAX_LOCATION, True),
    ):
        value = _text(getattr(event, name), name, limit, one_line=single)
        if value is not None:
            body[key] = value
    if creating and not body.get("summary"):
        raise BadUserInput("An event needs a title.", details={"summary": "is required"})
    time_zone = _text(event.time_zone, "timeZone", 64, one_line=True)
    if creating and (event.start is None or event.end is None):
        raise BadUserInput("An event needs a start and an end.", details={"start": "is required"})
    if (event.start is None) != (event.end is None):
        raise BadUserInput("Change start and end together.", details={"end": "give both"})
    if event.start is not None and event.end is not None:
        if event.end < event.start or (event.end == event.start and event.all_day):
            raise BadUserInput(
                "The event ends before it starts.", details={"end": "must follow start"}
            )
        body["start"] = _when(event.start, all_day=event.all_day, time_zone=time_zone, name="start")
        body["end"] = _when(event.end, all_day=event.all_day, time_zone=time_zone, name="end")
    if event.attendees is not None:
        if len(event.attendees) > MAX_ATTENDEES:
            raise BadUserInput(
                "Too many attendees.", details={"attendees": f"at most {MAX_ATTENDEES}"}
            )
        people: dict[str, dict[str, Any]] = {}
        for attendee in event.attendees:
            email = attendee.email.strip().lower()
            if not EMAIL_RE.match(email) or single_line_problem(email):
                raise BadUserInput(
                    "Invalid attendee.", details={"attendees": "an email is invalid"}
                )
            entry: dict[str, Any] = {"email": email}
            shown = _text(attendee.display_name, "attendees.displayName", 200, one_line=True)
            if shown:
                entry["displayName"] = shown
            if attendee.optional:
                entry["optional"] = True
            people[email] = entry
        body["attendees"] = list(people.values())
    if event.reminders is not None or event.use_default_reminders is not None:
        overrides = event.reminders or []
        if len(overrides) > MAX_REMINDERS:
            raise BadUserInput(
                "Too many reminders.", details={"reminders": f"at most {MAX_REMINDERS}"}
            )
        for reminder in overrides:
            if reminder.method not in ("email", "popup"):
                raise BadUserInput(
                    "Invalid reminder.", details={"reminders": "method: email or popup"}
                )
            if not 0 <= reminder.minutes <= MAX_REMINDER_MINUTES:
                raise BadUserInput(
                    "Invalid reminder.",
                    details={"reminders": f"minutes: 0 to {MAX_REMINDER_MINUTES}"},
                )
        use_default = bool(event.use_default_reminders) and not overrides
        body["reminders"] = {
            "useDefault": use_default,
            **(
                {}
                if use_default
                else {"overrides": [{"method": r.method, "minutes": r.minutes} for r in overrides]}
            ),
        }
    if event.add_conference:
        body["conferenceData"] = {
            "createRequest": {
                "requestId": uuid.uuid4().hex,
                "conferenceSolutionKey": {"type": "hangoutsMeet"},
            }
        }
    private = {"switchboardTenant": str(tenant_id)}
    for name, type_name in (("contact_id", "Contact"), ("lead_id", "Lead"), ("task_id", "Task")):
        value = getattr(event, name)
        if value is not None:
            private[f"switchboard{type_name}"] = global_id(type_name, value)
    if creating or len(private) > 1:
        body["extendedProperties"] = {"private": private}
    if event.send_updates not in SEND_UPDATES:
        raise BadUserInput(
            "Invalid sendUpdates.", details={"sendUpdates": "all, externalOnly or none"}
        )
    return body


async def _check_links(tenant_id: int, event: EventIn) -> None:
    """Each CRM id names a row of the caller's organization (else NOT_FOUND)."""
    for model, value in ((Contact, event.contact_id), (Lead, event.lead_id), (Task, event.task_id)):
        if value is not None:
            await get_scoped(model, tenant_id, value)


async def _link(
    row: ConnectedAccount, calendar_id: str, event_id: str, event: EventIn, user_id: int | None
) -> CalendarEventLink | None:
    wanted = {
        name: getattr(event, name)
        for name in ("contact_id", "lead_id", "task_id")
        if getattr(event, name) is not None
    }
    async with in_transaction():
        link = (
            await scoped(CalendarEventLink, row.tenant_id)
            .filter(account_id=row.id, calendar_id=calendar_id, event_id=event_id)
            .select_for_update()
            .first()
        )
        if link is None:
            if not wanted:
                return None
            return await CalendarEventLink.create(
                tenant_id=row.tenant_id,
                account_id=row.id,
                calendar_id=calendar_id,
                event_id=event_id,
                created_by_id=user_id,
                **wanted,
            )
        if wanted:
            await CalendarEventLink.filter(id=link.id).update(**wanted)
            for name, value in wanted.items():
                setattr(link, name, value)
        return link


@operation("calendar:write")
async def create_event(
    ctx: Context, *, account_id: int | None, calendar_id: str | None, event: EventIn
) -> CalendarEventView:
    principal = ctx.require("calendar:write")
    await _check_links(principal.tenant_id, event)  # another organization's: NOT_FOUND first
    calendar = _calendar_id(calendar_id)
    body = _google_body(principal.tenant_id, event, creating=True)
    row, client = await _client(ctx, account_id)
    made = await _google(
        client.insert_event(
            calendar, body, conference=event.add_conference, send_updates=event.send_updates
        )
    )
    link = await _link(row, calendar, str(made["id"]), event, principal.user_id)
    return CalendarEventView(row.id, calendar, made, link)


@operation("calendar:write")
async def update_event(
    ctx: Context,
    *,
    account_id: int | None,
    calendar_id: str | None,
    event_id: str,
    event: EventIn,
) -> CalendarEventView:
    principal = ctx.require("calendar:write")
    await _check_links(principal.tenant_id, event)
    calendar = _calendar_id(calendar_id)
    target = _event_id(event_id)
    body = _google_body(principal.tenant_id, event, creating=False)
    row, client = await _client(ctx, account_id)
    changed = await _google(
        client.patch_event(
            calendar, target, body, conference=event.add_conference, send_updates=event.send_updates
        )
    )
    link = await _link(row, calendar, target, event, principal.user_id)
    return CalendarEventView(row.id, calendar, changed, link)


@operation("calendar:write")
async def delete_event(
    ctx: Context,
    *,
    account_id: int | None,
    calendar_id: str | None,
    event_id: str,
    send_updates: str = "none",
) -> str:
    calendar = _calendar_id(calendar_id)
    target = _event_id(event_id)
    if send_updates not in SEND_UPDATES:
        raise BadUserInput(
            "Invalid sendUpdates.", details={"sendUpdates": "all, externalOnly or none"}
        )
    row, client = await _client(ctx, account_id)
    await _google(client.delete_event(calendar, target, send_updates=send_updates))
    await (
        scoped(CalendarEventLink, row.tenant_id)
        .filter(account_id=row.id, calendar_id=calendar, event_id=target)
        .delete()
    )
    return target


@operation("calendar:share")
async def share_calendar(
    ctx: Context, *, account_id: int | None, calendar_id: str | None, email: str, role: str
) -> dict[str, Any]:
    """Give a person access to the calendar (an ACL rule for their address)."""
    calendar = _calendar_id(calendar_id)
    address = (email or "").strip().lower()
    if not EMAIL_RE.match(address) or single_line_problem(address):
        raise BadUserInput("Invalid email address.", details={"email": "is not an email address"})
    if role not in ACL_ROLES:
        raise BadUserInput("Invalid role.", details={"role": "is not a calendar role"})
    _row, client = await _client(ctx, account_id)
    return await _google(
        client.insert_acl(calendar, role=role, scope_type="user", scope_value=address)
    )


@operation("calendar:share")
async def calendar_sharing(
    ctx: Context, *, account_id: int | None, calendar_id: str | None
) -> list[dict[str, Any]]:
    calendar = _calendar_id(calendar_id)
    _row, client = await _client(ctx, account_id)
    return await _google(client.list_acl(calendar))


@operation("calendar:write")
async def schedule_task(
    ctx: Context,
    *,
    task_id: int,
    account_id: int | None,
    calendar_id: str | None,
    duration_minutes: int,
    reminder_minutes: int | None,
) -> CalendarEventView:
    """Put a task with a due time on the calendar: an event at its due time, about the
    task (and its lead or contact). Again for the same task and calendar: that event moves
    to the task's due time and title (one event per task and calendar)."""
    principal = ctx.require("calendar:write")
    task = await get_scoped(Task, principal.tenant_id, task_id)
    if task.due_at is None:
        raise BadUserInput("The task has no due time.", details={"taskId": "has no due time"})
    if not 5 <= duration_minutes <= 24 * 60:
        raise BadUserInput(
            "Invalid duration.", details={"durationMinutes": "5 minutes to 24 hours"}
        )
    event = EventIn(
        summary=task.title[:MAX_SUMMARY],
        description=task.description[:MAX_DESCRIPTION],
        start=task.due_at,
        end=task.due_at + dt.timedelta(minutes=duration_minutes),
        task_id=task.id,
        lead_id=task.lead_id,
        contact_id=task.contact_id,
        reminders=None if reminder_minutes is None else [ReminderIn("popup", reminder_minutes)],
    )
    calendar = _calendar_id(calendar_id)
    row = await usable_account(ctx, GOOGLE_CALENDAR, account_id)
    existing = (
        await scoped(CalendarEventLink, principal.tenant_id)
        .filter(account_id=row.id, calendar_id=calendar, task_id=task.id)
        .first()
    )
    if existing is not None:
        try:
            return await update_event(
                ctx,
                account_id=row.id,
                calendar_id=calendar,
                event_id=existing.event_id,
                event=event,
            )
        except NotFound:
            await CalendarEventLink.filter(id=existing.id).delete()  # deleted at Google
    return await create_event(ctx, account_id=row.id, calendar_id=calendar, event=event)

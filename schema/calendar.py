"""Google Calendar: calendars, events (attendees, reminders, a Meet link, what they are
about in the CRM), sharing, and tasks put on the calendar."""

from __future__ import annotations

import datetime as dt
from enum import Enum
from typing import Any

import strawberry
from strawberry import relay
from strawberry.types import Info

from resolvers import calendar as cal
from resolvers import crm
from resolvers import leads as crm_leads
from resolvers.pagination import VendorPage
from schema.contacts import Contact
from schema.leads import Lead
from schema.permissions import mutation, query
from schema.relay import After, Edge, First, PageInfo, decode_id
from schema.tasks import Task


def _account(gid: relay.GlobalID | None) -> int | None:
    return None if gid is None else decode_id(gid, "ConnectedAccount")


def _optional(gid: relay.GlobalID | None, type_name: str) -> int | None:
    return None if gid is None else decode_id(gid, type_name)


@strawberry.enum(description="An attendee's answer.")
class AttendeeResponse(Enum):
    NEEDS_ACTION = "needsAction"
    ACCEPTED = "accepted"
    TENTATIVE = "tentative"
    DECLINED = "declined"


@strawberry.enum(description="How a reminder reaches the attendee.")
class ReminderMethod(Enum):
    EMAIL = "email"
    POPUP = "popup"


@strawberry.enum(description="Who Google mails about a change.")
class SendUpdates(Enum):
    ALL = "all"
    EXTERNAL_ONLY = "externalOnly"
    NONE = "none"


@strawberry.enum(description="What a person may do with a shared calendar.")
class CalendarRole(Enum):
    FREE_BUSY_READER = "freeBusyReader"
    READER = "reader"
    WRITER = "writer"
    OWNER = "owner"


@strawberry.type(description="A calendar the connected account sees.")
class Calendar:
    id: str = strawberry.field(description="Google's calendar id (`primary` also works).")
    summary: str = strawberry.field(description="Its name.")
    time_zone: str | None = strawberry.field(description="Its time zone (IANA).")
    access_role: str = strawberry.field(description="The account's role on it.")
    primary: bool = strawberry.field(description="The account's own calendar.")

    @classmethod
    def of(cls, data: dict[str, Any]) -> Calendar:
        return cls(
            id=str(data.get("id") or ""),
            summary=str(data.get("summary") or ""),
            time_zone=data.get("timeZone"),
            access_role=str(data.get("accessRole") or ""),
            primary=bool(data.get("primary")),
        )


@strawberry.type(description="A person invited to an event, and their answer.")
class Attendee:
    email: str = strawberry.field(description="Their address.")
    display_name: str | None = strawberry.field(description="Their name, when known.")
    response_status: AttendeeResponse = strawberry.field(description="Their answer so far.")
    optional: bool = strawberry.field(description="Attendance is optional.")
    organizer: bool = strawberry.field(description="They organize it.")


@strawberry.type(description="A reminder before an event.")
class Reminder:
    method: ReminderMethod = strawberry.field(description="Mail or a notification.")
    minutes: int = strawberry.field(description="How long before the start.")


@strawberry.type(description="The event's reminders.")
class Reminders:
    use_default: bool = strawberry.field(description="The calendar's default reminders apply.")
    overrides: list[Reminder] = strawberry.field(description="Its own reminders otherwise.")


@strawberry.type(description="The video conference attached to an event.")
class Conference:
    id: str | None = strawberry.field(description="The conference's id.")
    join_url: str | None = strawberry.field(description="Where attendees join.")
    solution: str | None = strawberry.field(description="Which service (Google Meet).")


def _time(value: Any) -> dt.datetime | None:
    if isinstance(value, dict) and value.get("dateTime"):
        try:
            return dt.datetime.fromisoformat(str(value["dateTime"]).replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def _response(value: Any) -> AttendeeResponse:
    try:
        return AttendeeResponse(value)
    except ValueError:
        return AttendeeResponse.NEEDS_ACTION


@strawberry.type(description="An event of a Google calendar.")
class CalendarEvent:
    id: str = strawberry.field(description="Google's event id.")
    calendar_id: str = strawberry.field(description="The calendar it is in.")
    summary: str = strawberry.field(description="Its title.")
    description: str = strawberry.field(description="Its details.")
    location: str = strawberry.field(description="Where it is.")
    status: str = strawberry.field(description="confirmed, tentative or cancelled.")
    html_link: str | None = strawberry.field(description="Where Google shows it.")
    start: dt.datetime | None = strawberry.field(description="When it starts (timed events).")
    end: dt.datetime | None = strawberry.field(description="When it ends (timed events).")
    start_date: str | None = strawberry.field(description="Its first day (all-day events).")
    end_date: str | None = strawberry.field(description="The day after its last (all-day).")
    all_day: bool = strawberry.field(description="It lasts whole days.")
    attendees: list[Attendee] = strawberry.field(description="Who is invited, and their answers.")
    reminders: Reminders = strawberry.field(description="Its reminders.")
    conference: Conference | None = strawberry.field(description="Its video conference, if any.")
    _contact_id: strawberry.Private[int | None] = None
    _lead_id: strawberry.Private[int | None] = None
    _task_id: strawberry.Private[int | None] = None

    @classmethod
    def of(cls, view: cal.CalendarEventView) -> CalendarEvent:
        data = view.data
        reminders = data.get("reminders") or {}
        conference = data.get("conferenceData")
        entry = None
        if isinstance(conference, dict):
            entry = next(
                (
                    e
                    for e in conference.get("entryPoints") or []
                    if isinstance(e, dict) and e.get("entryPointType") == "video"
                ),
                None,
            )
        start, end = data.get("start") or {}, data.get("end") or {}
        link = view.link
        return cls(
            id=str(data.get("id") or ""),
            calendar_id=view.calendar_id,
            summary=str(data.get("summary") or ""),
            description=str(data.get("description") or ""),
            location=str(data.get("location") or ""),
            status=str(data.get("status") or "confirmed"),
            html_link=data.get("htmlLink"),
            start=_time(start),
            end=_time(end),
            start_date=start.get("date") if isinstance(start, dict) else None,
            end_date=end.get("date") if isinstance(end, dict) else None,
            all_day=isinstance(start, dict) and bool(start.get("date")),
            attendees=[
                Attendee(
                    email=str(a.get("email") or ""),
                    display_name=a.get("displayName"),
                    response_status=_response(a.get("responseStatus")),
                    optional=bool(a.get("optional")),
                    organizer=bool(a.get("organizer")),
                )
                for a in data.get("attendees") or []
                if isinstance(a, dict)
            ],
            reminders=Reminders(
                use_default=bool(reminders.get("useDefault")),
                overrides=[
                    Reminder(method=ReminderMethod(r["method"]), minutes=int(r["minutes"]))
                    for r in reminders.get("overrides") or []
                    if isinstance(r, dict) and r.get("method") in ("email", "popup")
                ],
            ),
            conference=None
            if not isinstance(conference, dict)
            else Conference(
                id=conference.get("conferenceId"),
                join_url=(entry or {}).get("uri") or data.get("hangoutLink"),
                solution=(conference.get("conferenceSolution") or {}).get("name"),
            ),
            _contact_id=link.contact_id if link else None,
            _lead_id=link.lead_id if link else None,
            _task_id=link.task_id if link else None,
        )

    @strawberry.field(description="The contact it is about, if any.")
    async def contact(self, info: Info) -> Contact | None:
        row = await crm.load_contact(info.context, self._contact_id)
        return None if row is None else Contact.from_row(row)

    @strawberry.field(description="The lead it is about, if any.")
    async def lead(self, info: Info) -> Lead | None:
        row = await crm_leads.load_lead(info.context, self._lead_id)
        return None if row is None else Lead.from_row(row)

    @strawberry.field(description="The task it is about, if any.")
    async def task(self, info: Info) -> Task | None:
        row = await cal.load_task(info.context, self._task_id)
        return None if row is None else Task.from_row(row)


@strawberry.type(description="A page of a calendar's events, Relay style.")
class CalendarEventConnection:
    edges: list[Edge[CalendarEvent]] = strawberry.field(description="The events of this page.")
    page_info: PageInfo = strawberry.field(description="Pagination state.")

    @classmethod
    def of(cls, page: VendorPage[cal.CalendarEventView]) -> CalendarEventConnection:
        return cls(
            edges=[
                Edge(cursor=c, node=CalendarEvent.of(v))
                for c, v in zip(page.cursors, page.items, strict=True)
            ],
            page_info=PageInfo(
                has_next_page=page.has_next,
                has_previous_page=page.has_previous,
                start_cursor=page.cursors[0] if page.cursors else None,
                end_cursor=page.cursors[-1] if page.cursors else None,
            ),
        )


@strawberry.type(description="Who may see or change a calendar.")
class CalendarShare:
    id: str = strawberry.field(description="The rule's id (`user:<email>`).")
    role: str = strawberry.field(description="freeBusyReader, reader, writer or owner.")
    scope_type: str = strawberry.field(description="user, group, domain or default.")
    scope_value: str | None = strawberry.field(description="The address or domain.")

    @classmethod
    def of(cls, data: dict[str, Any]) -> CalendarShare:
        scope = data.get("scope") or {}
        return cls(
            id=str(data.get("id") or ""),
            role=str(data.get("role") or ""),
            scope_type=str(scope.get("type") or ""),
            scope_value=scope.get("value"),
        )


@strawberry.input(description="A person to invite.")
class AttendeeInput:
    email: str = strawberry.field(description="Their address.")
    display_name: str | None = strawberry.field(default=None, description="Their name.")
    optional: bool = strawberry.field(default=False, description="Attendance is optional.")


@strawberry.input(description="A reminder before the event.")
class ReminderInput:
    method: ReminderMethod = strawberry.field(description="Mail or a notification.")
    minutes: int = strawberry.field(description="How long before the start (0 to 40320).")


@strawberry.input(description="An event's fields; on update, the ones given change.")
class CalendarEventInput:
    summary: str | None = strawberry.field(default=None, description="Its title (≤ 300).")
    description: str | None = strawberry.field(default=None, description="Details (≤ 8000).")
    location: str | None = strawberry.field(default=None, description="Where (≤ 1000).")
    start: dt.datetime | None = strawberry.field(default=None, description="When it starts.")
    end: dt.datetime | None = strawberry.field(default=None, description="When it ends.")
    all_day: bool = strawberry.field(
        default=False, description="Whole days: the dates of start and end count."
    )
    time_zone: str | None = strawberry.field(default=None, description="IANA time zone.")
    attendees: list[AttendeeInput] | None = strawberry.field(
        default=None, description="Who is invited (replaces the list on update; ≤ 100)."
    )
    use_default_reminders: bool | None = strawberry.field(
        default=None, description="The calendar's default reminders."
    )
    reminders: list[ReminderInput] | None = strawberry.field(
        default=None, description="Its own reminders instead (≤ 5)."
    )
    add_conference: bool = strawberry.field(default=False, description="Attach a Meet link.")
    contact_id: relay.GlobalID | None = strawberry.field(
        default=None, description="The contact it is about."
    )
    lead_id: relay.GlobalID | None = strawberry.field(
        default=None, description="The lead it is about."
    )
    task_id: relay.GlobalID | None = strawberry.field(
        default=None, description="The task it is about."
    )
    send_updates: SendUpdates = strawberry.field(
        default=SendUpdates.NONE, description="Whom Google mails about it."
    )

    def to_event(self) -> cal.EventIn:
        return cal.EventIn(
            summary=self.summary,
            description=self.description,
            location=self.location,
            start=self.start,
            end=self.end,
            all_day=self.all_day,
            time_zone=self.time_zone,
            attendees=None
            if self.attendees is None
            else [cal.AttendeeIn(a.email, a.display_name, a.optional) for a in self.attendees],
            use_default_reminders=self.use_default_reminders,
            reminders=None
            if self.reminders is None
            else [cal.ReminderIn(r.method.value, r.minutes) for r in self.reminders],
            add_conference=self.add_conference,
            contact_id=_optional(self.contact_id, "Contact"),
            lead_id=_optional(self.lead_id, "Lead"),
            task_id=_optional(self.task_id, "Task"),
            send_updates=self.send_updates.value,
        )


@strawberry.input(description="A new event.")
class CreateCalendarEventInput:
    account_id: relay.GlobalID | None = strawberry.field(
        default=None, description="The connected account; default: yours, else the organization's."
    )
    calendar_id: str = strawberry.field(default="primary", description="The calendar.")
    event: CalendarEventInput = strawberry.field(description="The event.")


@strawberry.input(description="Changes to an event.")
class UpdateCalendarEventInput:
    account_id: relay.GlobalID | None = strawberry.field(
        default=None, description="The connected account; default: yours, else the organization's."
    )
    calendar_id: str = strawberry.field(default="primary", description="The calendar.")
    event_id: str = strawberry.field(description="The event.")
    event: CalendarEventInput = strawberry.field(description="The fields that change.")


@strawberry.input(description="An event to delete.")
class DeleteCalendarEventInput:
    account_id: relay.GlobalID | None = strawberry.field(
        default=None, description="The connected account; default: yours, else the organization's."
    )
    calendar_id: str = strawberry.field(default="primary", description="The calendar.")
    event_id: str = strawberry.field(description="The event.")
    send_updates: SendUpdates = strawberry.field(
        default=SendUpdates.NONE, description="Whom Google mails about it."
    )


@strawberry.input(description="Share a calendar with a person.")
class ShareCalendarInput:
    account_id: relay.GlobalID | None = strawberry.field(
        default=None, description="The connected account; default: yours, else the organization's."
    )
    calendar_id: str = strawberry.field(default="primary", description="The calendar.")
    email: str = strawberry.field(description="The person's address.")
    role: CalendarRole = strawberry.field(
        default=CalendarRole.READER, description="What they may do."
    )


@strawberry.input(description="Put a task with a due time on the calendar.")
class ScheduleTaskInput:
    task_id: relay.GlobalID = strawberry.field(description="The task (it needs a due time).")
    account_id: relay.GlobalID | None = strawberry.field(
        default=None, description="The connected account; default: yours, else the organization's."
    )
    calendar_id: str = strawberry.field(default="primary", description="The calendar.")
    duration_minutes: int = strawberry.field(default=30, description="How long (5 to 1440).")
    reminder_minutes: int | None = strawberry.field(
        default=None, description="A notification this long before; default: the calendar's."
    )


@strawberry.type(description="The event as it is now.")
class CalendarEventPayload:
    event: CalendarEvent = strawberry.field(description="The event.")


@strawberry.type(description="The event deleted.")
class DeleteCalendarEventPayload:
    deleted_event_id: str = strawberry.field(description="Its id.")


@strawberry.type(description="The sharing rule made.")
class ShareCalendarPayload:
    share: CalendarShare = strawberry.field(description="The rule.")


@strawberry.type
class Query:
    @query(operation=cal.list_calendars, description="The calendars a connected account sees.")
    async def calendars(
        self, info: Info, account_id: relay.GlobalID | None = None
    ) -> list[Calendar]:
        rows = await cal.list_calendars(info.context, _account(account_id))
        return [Calendar.of(r) for r in rows]

    @query(
        operation=cal.list_events,
        description="A calendar's events in a time window, by start time (recurring events "
        "as their occurrences).",
    )
    async def calendar_events(
        self,
        info: Info,
        calendar_id: str = "primary",
        time_min: dt.datetime | None = None,
        time_max: dt.datetime | None = None,
        account_id: relay.GlobalID | None = None,
        first: First = None,
        after: After = None,
    ) -> CalendarEventConnection:
        page = await cal.list_events(
            info.context,
            account_id=_account(account_id),
            calendar_id=calendar_id,
            time_min=time_min,
            time_max=time_max,
            first=first,
            after=after,
        )
        return CalendarEventConnection.of(page)

    @query(operation=cal.calendar_sharing, description="Who a calendar is shared with.")
    async def calendar_shares(
        self, info: Info, calendar_id: str = "primary", account_id: relay.GlobalID | None = None
    ) -> list[CalendarShare]:
        rows = await cal.calendar_sharing(
            info.context, account_id=_account(account_id), calendar_id=calendar_id
        )
        return [CalendarShare.of(r) for r in rows]


@strawberry.type
class Mutation:
    @mutation(operation=cal.create_event, description="Create a calendar event.")
    async def create_calendar_event(
        self, info: Info, input: CreateCalendarEventInput
    ) -> CalendarEventPayload:
        view = await cal.create_event(
            info.context,
            account_id=_account(input.account_id),
            calendar_id=input.calendar_id,
            event=input.event.to_event(),
        )
        return CalendarEventPayload(event=CalendarEvent.of(view))

    @mutation(operation=cal.update_event, description="Change a calendar event.")
    async def update_calendar_event(
        self, info: Info, input: UpdateCalendarEventInput
    ) -> CalendarEventPayload:
        view = await cal.update_event(
            info.context,
            account_id=_account(input.account_id),
            calendar_id=input.calendar_id,
            event_id=input.event_id,
            event=input.event.to_event(),
        )
        return CalendarEventPayload(event=CalendarEvent.of(view))

    @mutation(operation=cal.delete_event, description="Delete a calendar event.")
    async def delete_calendar_event(
        self, info: Info, input: DeleteCalendarEventInput
    ) -> DeleteCalendarEventPayload:
        gone = await cal.delete_event(
            info.context,
            account_id=_account(input.account_id),
            calendar_id=input.calendar_id,
            event_id=input.event_id,
            send_updates=input.send_updates.value,
        )
        return DeleteCalendarEventPayload(deleted_event_id=gone)

    @mutation(operation=cal.share_calendar, description="Share a calendar with a person.")
    async def share_calendar(self, info: Info, input: ShareCalendarInput) -> ShareCalendarPayload:
        rule = await cal.share_calendar(
            info.context,
            account_id=_account(input.account_id),
            calendar_id=input.calendar_id,
            email=input.email,
            role=input.role.value,
        )
        return ShareCalendarPayload(share=CalendarShare.of(rule))

    @mutation(
        operation=cal.schedule_task,
        description="Put a task with a due time on the calendar (again: its event moves).",
    )
    async def schedule_task(self, info: Info, input: ScheduleTaskInput) -> CalendarEventPayload:
        view = await cal.schedule_task(
            info.context,
            task_id=decode_id(input.task_id, "Task"),
            account_id=_account(input.account_id),
            calendar_id=input.calendar_id,
            duration_minutes=input.duration_minutes,
            reminder_minutes=input.reminder_minutes,
        )
        return CalendarEventPayload(event=CalendarEvent.of(view))

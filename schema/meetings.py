"""Zoom meetings: the ones the gateway made (status from Zoom's webhooks), registrants,
participants, recordings, and invitations mailed to a lead's contact."""

from __future__ import annotations

import datetime as dt
from enum import Enum
from typing import Any, ClassVar

import strawberry
from strawberry import relay
from strawberry.scalars import JSON
from strawberry.types import Info

from models import meetings as models
from models.meetings import MeetingStatus, MeetingType
from resolvers import crm
from resolvers import leads as crm_leads
from resolvers import meetings as mtg
from resolvers.pagination import VendorPage
from schema.contacts import Contact
from schema.leads import Lead
from schema.permissions import mutation, query
from schema.relay import After, Connection, Edge, First, ModelNode, PageInfo, decode_id

strawberry.enum(MeetingType, description="INSTANT (now), SCHEDULED, or RECURRING (fixed time).")
strawberry.enum(
    MeetingStatus,
    description="WAITING until it starts (or its next occurrence does), STARTED, ENDED (from "
    "Zoom's webhooks, forward only within an occurrence), DELETED.",
)


@strawberry.enum(description="How often a recurring meeting repeats.")
class RecurrenceKind(Enum):
    DAILY = "DAILY"
    WEEKLY = "WEEKLY"
    MONTHLY = "MONTHLY"


def _time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


@strawberry.type(description="A person registered for a meeting.")
class MeetingRegistrant:
    id: str = strawberry.field(description="Zoom's registrant id.")
    email: str = strawberry.field(description="Their address.")
    first_name: str = strawberry.field(description="Their first name.")
    last_name: str = strawberry.field(description="Their last name.")
    status: str = strawberry.field(description="approved, pending or denied.")
    join_url: str | None = strawberry.field(description="Their own join link.")

    @classmethod
    def of(cls, data: dict[str, Any]) -> MeetingRegistrant:
        return cls(
            id=str(data.get("id") or ""),
            email=str(data.get("email") or ""),
            first_name=str(data.get("first_name") or ""),
            last_name=str(data.get("last_name") or ""),
            status=str(data.get("status") or ""),
            join_url=data.get("join_url"),
        )


@strawberry.type(description="Someone who attended a past meeting.")
class MeetingParticipant:
    name: str = strawberry.field(description="The name they joined with.")
    email: str | None = strawberry.field(description="Their address, when Zoom knows it.")
    join_time: dt.datetime | None = strawberry.field(description="When they joined.")
    leave_time: dt.datetime | None = strawberry.field(description="When they left.")
    duration_seconds: int = strawberry.field(description="How long they stayed.")

    @classmethod
    def of(cls, data: dict[str, Any]) -> MeetingParticipant:
        return cls(
            name=str(data.get("name") or ""),
            email=data.get("user_email") or None,
            join_time=_time(data.get("join_time")),
            leave_time=_time(data.get("leave_time")),
            duration_seconds=int(data.get("duration") or 0),
        )


@strawberry.type(description="One file of a cloud recording.")
class RecordingFile:
    id: str = strawberry.field(description="Zoom's file id.")
    file_type: str = strawberry.field(description="MP4, M4A, TRANSCRIPT…")
    file_size: float = strawberry.field(description="Bytes.")
    play_url: str | None = strawberry.field(description="Where to watch it.")
    download_url: str | None = strawberry.field(description="Where to download it.")
    recording_start: dt.datetime | None = strawberry.field(description="When it began.")
    recording_end: dt.datetime | None = strawberry.field(description="When it ended.")
    status: str = strawberry.field(description="completed or processing.")


@strawberry.type(description="A meeting's cloud recording.")
class MeetingRecording:
    uuid: str = strawberry.field(description="The recorded occurrence's uuid.")
    meeting_id: str = strawberry.field(description="Zoom's meeting number.")
    topic: str = strawberry.field(description="The meeting's topic.")
    start_time: dt.datetime | None = strawberry.field(description="When it began.")
    share_url: str | None = strawberry.field(description="Where to share it.")
    total_size: float = strawberry.field(description="Bytes, all files.")
    files: list[RecordingFile] = strawberry.field(description="Its files.")

    @classmethod
    def of(cls, data: dict[str, Any]) -> MeetingRecording:
        return cls(
            uuid=str(data.get("uuid") or ""),
            meeting_id=str(data.get("id") or ""),
            topic=str(data.get("topic") or ""),
            start_time=_time(data.get("start_time")),
            share_url=data.get("share_url"),
            total_size=float(data.get("total_size") or 0),
            files=[
                RecordingFile(
                    id=str(f.get("id") or ""),
                    file_type=str(f.get("file_type") or ""),
                    file_size=float(f.get("file_size") or 0),
                    play_url=f.get("play_url"),
                    download_url=f.get("download_url"),
                    recording_start=_time(f.get("recording_start")),
                    recording_end=_time(f.get("recording_end")),
                    status=str(f.get("status") or ""),
                )
                for f in data.get("recording_files") or []
                if isinstance(f, dict)
            ],
        )


@strawberry.type(description="A meeting as Zoom lists it.")
class ZoomMeeting:
    id: str = strawberry.field(description="Zoom's meeting number.")
    uuid: str = strawberry.field(description="Its current instance's uuid.")
    topic: str = strawberry.field(description="Its topic.")
    type: int = strawberry.field(description="Zoom's type (1, 2, 3, 8).")
    start_time: dt.datetime | None = strawberry.field(description="When it starts.")
    duration_minutes: int | None = strawberry.field(description="How long.")
    join_url: str | None = strawberry.field(description="Where to join.")

    @classmethod
    def of(cls, data: dict[str, Any]) -> ZoomMeeting:
        return cls(
            id=str(data.get("id") or ""),
            uuid=str(data.get("uuid") or ""),
            topic=str(data.get("topic") or ""),
            type=int(data.get("type") or 0),
            start_time=_time(data.get("start_time")),
            duration_minutes=data.get("duration"),
            join_url=data.get("join_url"),
        )


def _connection(page: VendorPage[Any], convert: Any, cls: Any) -> Any:
    return cls(
        edges=[
            Edge(cursor=c, node=convert(i)) for c, i in zip(page.cursors, page.items, strict=True)
        ],
        page_info=PageInfo(
            has_next_page=page.has_next,
            has_previous_page=page.has_previous,
            start_cursor=page.cursors[0] if page.cursors else None,
            end_cursor=page.cursors[-1] if page.cursors else None,
        ),
    )


@strawberry.type(description="A page of registrants, Relay style.")
class MeetingRegistrantConnection:
    edges: list[Edge[MeetingRegistrant]] = strawberry.field(description="This page's items.")
    page_info: PageInfo = strawberry.field(description="Pagination state.")


@strawberry.type(description="A page of participants, Relay style.")
class MeetingParticipantConnection:
    edges: list[Edge[MeetingParticipant]] = strawberry.field(description="This page's items.")
    page_info: PageInfo = strawberry.field(description="Pagination state.")


@strawberry.type(description="A page of recordings, Relay style.")
class MeetingRecordingConnection:
    edges: list[Edge[MeetingRecording]] = strawberry.field(description="This page's items.")
    page_info: PageInfo = strawberry.field(description="Pagination state.")


@strawberry.type(description="A page of Zoom's meetings, Relay style.")
class ZoomMeetingConnection:
    edges: list[Edge[ZoomMeeting]] = strawberry.field(description="This page's items.")
    page_info: PageInfo = strawberry.field(description="Pagination state.")


@strawberry.type(description="A Zoom meeting the gateway created.")
class Meeting(ModelNode):
    _model: ClassVar[type] = models.Meeting
    _permission: ClassVar[str] = "meetings:read"
    id: relay.NodeID[int]
    zoom_id: str = strawberry.field(description="Zoom's meeting number.")
    meeting_type: MeetingType = strawberry.field(description="Instant, scheduled or recurring.")
    status: MeetingStatus = strawberry.field(description="Where it is.")
    topic: str = strawberry.field(description="Its topic.")
    agenda: str = strawberry.field(description="Its agenda.")
    start_time: dt.datetime | None = strawberry.field(description="When it starts.")
    duration_minutes: int | None = strawberry.field(description="How long it is planned.")
    timezone: str = strawberry.field(description="Its time zone.")
    join_url: str = strawberry.field(description="Where attendees join.")
    host_email: str = strawberry.field(description="The host's Zoom account.")
    recurrence: JSON | None = strawberry.field(description="Its rule, as Zoom keeps it.")
    started_at: dt.datetime | None = strawberry.field(description="When it last started.")
    ended_at: dt.datetime | None = strawberry.field(description="When it last ended.")
    recording_ready_at: dt.datetime | None = strawberry.field(
        description="When its cloud recording was ready."
    )
    invited_at: dt.datetime | None = strawberry.field(
        description="When the invitation was last mailed to its contact."
    )
    created_at: dt.datetime = strawberry.field(description="When it was created.")
    _lead_id: strawberry.Private[int | None] = None
    _contact_id: strawberry.Private[int | None] = None

    @classmethod
    def from_row(cls, row: Any) -> Meeting:
        return cls(
            id=row.id,
            zoom_id=row.zoom_id,
            meeting_type=MeetingType(row.meeting_type),
            status=MeetingStatus(row.status),
            topic=row.topic,
            agenda=row.agenda,
            start_time=row.start_time,
            duration_minutes=row.duration_minutes,
            timezone=row.timezone,
            join_url=row.join_url,
            host_email=row.host_email,
            recurrence=row.recurrence,
            started_at=row.started_at,
            ended_at=row.ended_at,
            recording_ready_at=row.recording_ready_at,
            invited_at=row.invited_at,
            created_at=row.created_at,
            _lead_id=row.lead_id,
            _contact_id=row.contact_id,
        )

    @strawberry.field(description="The lead it is about, if any.")
    async def lead(self, info: Info) -> Lead | None:
        row = await crm_leads.load_lead(info.context, self._lead_id)
        return None if row is None else Lead.from_row(row)

    @strawberry.field(description="The contact it is with, if any.")
    async def contact(self, info: Info) -> Contact | None:
        row = await crm.load_contact(info.context, self._contact_id)
        return None if row is None else Contact.from_row(row)

    @strawberry.field(description="Who registered (from Zoom).")
    async def registrants(
        self, info: Info, first: First = None, after: After = None
    ) -> MeetingRegistrantConnection:
        page = await mtg.list_registrants(info.context, self.id, first=first, after=after)
        return _connection(page, MeetingRegistrant.of, MeetingRegistrantConnection)

    @strawberry.field(description="Who attended its last occurrence that ended (from Zoom).")
    async def participants(
        self, info: Info, first: First = None, after: After = None
    ) -> MeetingParticipantConnection:
        page = await mtg.list_participants(info.context, self.id, first=first, after=after)
        return _connection(page, MeetingParticipant.of, MeetingParticipantConnection)

    @strawberry.field(description="The cloud recording of its last occurrence, if any.")
    async def recording(self, info: Info) -> MeetingRecording | None:
        data = await mtg.meeting_recording(info.context, self.id)
        return None if data is None else MeetingRecording.of(data)


@strawberry.input(description="How a recurring meeting repeats.")
class RecurrenceInput:
    kind: RecurrenceKind = strawberry.field(description="Daily, weekly or monthly.")
    repeat_interval: int = strawberry.field(
        default=1, description="Every how many days/weeks/months."
    )
    weekly_days: list[int] | None = strawberry.field(
        default=None, description="Weekly: the days, 1 (Sunday) to 7 (Saturday)."
    )
    monthly_day: int | None = strawberry.field(default=None, description="Monthly: the day.")
    end_times: int | None = strawberry.field(default=None, description="After this many (≤ 60).")
    end_date_time: dt.datetime | None = strawberry.field(default=None, description="Or until then.")


@strawberry.input(description="A meeting's fields; on update, the ones given change.")
class MeetingInput:
    topic: str | None = strawberry.field(default=None, description="Its topic (≤ 200).")
    type: MeetingType = strawberry.field(
        default=MeetingType.SCHEDULED, description="Instant, scheduled or recurring (create only)."
    )
    start_time: dt.datetime | None = strawberry.field(default=None, description="When it starts.")
    duration_minutes: int | None = strawberry.field(default=None, description="1 to 1440.")
    timezone: str | None = strawberry.field(default=None, description="IANA time zone.")
    agenda: str | None = strawberry.field(default=None, description="Its agenda (≤ 2000).")
    recurrence: RecurrenceInput | None = strawberry.field(
        default=None, description="Recurring meetings: the rule."
    )
    waiting_room: bool | None = strawberry.field(default=None, description="Use a waiting room.")
    join_before_host: bool | None = strawberry.field(
        default=None, description="Attendees may join before the host."
    )
    registration: bool | None = strawberry.field(
        default=None, description="Attendees register (approved automatically)."
    )
    lead_id: relay.GlobalID | None = strawberry.field(
        default=None, description="The lead it is about (its contact is invited)."
    )
    contact_id: relay.GlobalID | None = strawberry.field(
        default=None, description="The contact it is with."
    )

    def to_meeting(self) -> mtg.MeetingIn:
        rule = self.recurrence
        return mtg.MeetingIn(
            topic=self.topic,
            meeting_type=self.type,
            start_time=self.start_time,
            duration_minutes=self.duration_minutes,
            timezone=self.timezone,
            agenda=self.agenda,
            recurrence=None
            if rule is None
            else mtg.RecurrenceIn(
                kind=rule.kind.value,
                repeat_interval=rule.repeat_interval,
                weekly_days=list(rule.weekly_days or []),
                monthly_day=rule.monthly_day,
                end_times=rule.end_times,
                end_date_time=rule.end_date_time,
            ),
            waiting_room=self.waiting_room,
            join_before_host=self.join_before_host,
            registration=self.registration,
            lead_id=None if self.lead_id is None else decode_id(self.lead_id, "Lead"),
            contact_id=None if self.contact_id is None else decode_id(self.contact_id, "Contact"),
        )


@strawberry.input(description="A new meeting.")
class CreateMeetingInput:
    meeting: MeetingInput = strawberry.field(description="The meeting.")
    invite: bool = strawberry.field(
        default=False, description="Mail the join URL to its contact (the lead's contact)."
    )


@strawberry.input(description="Changes to a meeting.")
class UpdateMeetingInput:
    id: relay.GlobalID = strawberry.field(description="The meeting.")
    meeting: MeetingInput = strawberry.field(description="The fields that change.")


@strawberry.input(description="A meeting.")
class MeetingIdInput:
    id: relay.GlobalID = strawberry.field(description="The meeting.")


@strawberry.input(description="A person to register for a meeting.")
class AddMeetingRegistrantInput:
    meeting_id: relay.GlobalID = strawberry.field(description="The meeting.")
    email: str = strawberry.field(description="Their address.")
    first_name: str = strawberry.field(description="Their first name.")
    last_name: str = strawberry.field(default="", description="Their last name.")


@strawberry.type(description="The meeting as it is now.")
class MeetingPayload:
    meeting: Meeting = strawberry.field(description="The meeting.")


@strawberry.type(description="The registrant added.")
class AddMeetingRegistrantPayload:
    registrant: MeetingRegistrant = strawberry.field(description="As Zoom registered them.")


@strawberry.type
class Query:
    @query(
        operation=mtg.list_meetings,
        description="The meetings the organization created, newest first.",
    )
    async def meetings(
        self,
        info: Info,
        status: MeetingStatus | None = None,
        first: First = None,
        after: After = None,
    ) -> Connection[Meeting]:
        page = await mtg.list_meetings(
            info.context, first=first, after=after, status=None if status is None else status.value
        )
        return Connection.of(page, Meeting.from_row)

    @query(
        operation=mtg.get_meeting,
        description="One meeting; `refresh` reads it again from Zoom first.",
    )
    async def meeting(self, info: Info, id: relay.GlobalID, refresh: bool = False) -> Meeting:
        row = await mtg.get_meeting(info.context, decode_id(id, "Meeting"), refresh=refresh)
        return Meeting.from_row(row)

    @query(
        operation=mtg.list_zoom_meetings,
        description="The Zoom account's upcoming meetings, as Zoom lists them.",
    )
    async def zoom_meetings(
        self, info: Info, first: First = None, after: After = None
    ) -> ZoomMeetingConnection:
        page = await mtg.list_zoom_meetings(info.context, first=first, after=after)
        return _connection(page, ZoomMeeting.of, ZoomMeetingConnection)

    @query(
        operation=mtg.list_recordings,
        description="The Zoom account's cloud recordings between two dates (a month at most).",
    )
    async def meeting_recordings(
        self,
        info: Info,
        date_from: dt.date,
        date_to: dt.date,
        first: First = None,
        after: After = None,
    ) -> MeetingRecordingConnection:
        page = await mtg.list_recordings(
            info.context, date_from=date_from, date_to=date_to, first=first, after=after
        )
        return _connection(page, MeetingRecording.of, MeetingRecordingConnection)


@strawberry.type
class Mutation:
    @mutation(
        operation=mtg.create_meeting,
        description="Create a Zoom meeting (instant, scheduled, recurring), about a lead or a "
        "contact; `invite` mails its join URL to the contact.",
    )
    async def create_meeting(self, info: Info, input: CreateMeetingInput) -> MeetingPayload:
        row = await mtg.create_meeting(
            info.context, input.meeting.to_meeting(), invite=input.invite
        )
        return MeetingPayload(meeting=Meeting.from_row(row))

    @mutation(operation=mtg.update_meeting, description="Change a Zoom meeting.")
    async def update_meeting(self, info: Info, input: UpdateMeetingInput) -> MeetingPayload:
        row = await mtg.update_meeting(
            info.context, decode_id(input.id, "Meeting"), input.meeting.to_meeting()
        )
        return MeetingPayload(meeting=Meeting.from_row(row))

    @mutation(operation=mtg.delete_meeting, description="Delete a Zoom meeting.")
    async def delete_meeting(self, info: Info, input: MeetingIdInput) -> MeetingPayload:
        row = await mtg.delete_meeting(info.context, decode_id(input.id, "Meeting"))
        return MeetingPayload(meeting=Meeting.from_row(row))

    @mutation(
        operation=mtg.add_registrant,
        description="Register a person for a meeting (it needs registration on).",
    )
    async def add_meeting_registrant(
        self, info: Info, input: AddMeetingRegistrantInput
    ) -> AddMeetingRegistrantPayload:
        data = await mtg.add_registrant(
            info.context,
            decode_id(input.meeting_id, "Meeting"),
            email=input.email,
            first_name=input.first_name,
            last_name=input.last_name,
        )
        return AddMeetingRegistrantPayload(registrant=MeetingRegistrant.of(data))

    @mutation(
        operation=mtg.send_invitation,
        description="Mail the meeting's join URL to its contact (the lead's contact), with "
        "the `meeting_invitation` template.",
    )
    async def send_meeting_invitation(self, info: Info, input: MeetingIdInput) -> MeetingPayload:
        row = await mtg.send_invitation(info.context, decode_id(input.id, "Meeting"))
        return MeetingPayload(meeting=Meeting.from_row(row))

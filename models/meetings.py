"""Zoom meetings the gateway created: one row per meeting, its status from Zoom's webhooks
(forward only within an occurrence), and what it is about in the CRM."""

from enum import StrEnum
from typing import Any

from tortoise import fields

from models.base import TenantModel


class MeetingType(StrEnum):
    INSTANT = "INSTANT"  # Zoom type 1
    SCHEDULED = "SCHEDULED"  # type 2
    RECURRING = "RECURRING"  # type 8: recurring with a fixed time


class MeetingStatus(StrEnum):
    WAITING = "WAITING"  # created, not started (or the next occurrence not yet)
    STARTED = "STARTED"
    ENDED = "ENDED"
    DELETED = "DELETED"


class Meeting(TenantModel):
    account: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "switchboard.ConnectedAccount", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    account_id: int | None
    zoom_id = fields.CharField(max_length=32, db_index=True)  # the meeting number
    occurrence_uuid = fields.CharField(max_length=128, default="")  # Zoom's instance uuid
    meeting_type = fields.CharField(max_length=12)
    status = fields.CharField(max_length=12, default=MeetingStatus.WAITING.value)
    topic = fields.CharField(max_length=200)
    agenda = fields.TextField(default="")
    start_time = fields.DatetimeField(null=True)
    duration_minutes = fields.IntField(null=True)
    timezone = fields.CharField(max_length=64, default="")
    join_url = fields.CharField(max_length=1000, default="")
    host_email = fields.CharField(max_length=320, default="")
    recurrence: fields.Field[dict[str, Any]] = fields.JSONField(null=True)
    contact: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "switchboard.Contact", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    contact_id: int | None
    lead: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "switchboard.Lead", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    lead_id: int | None
    created_by_id = fields.BigIntField(null=True)
    started_at = fields.DatetimeField(null=True)
    ended_at = fields.DatetimeField(null=True)
    recording_ready_at = fields.DatetimeField(null=True)
    status_changed_at = fields.DatetimeField(null=True)
    invited_at = fields.DatetimeField(null=True)

    class Meta:
        table = "meetings"
        unique_together = (("tenant_id", "zoom_id"),)

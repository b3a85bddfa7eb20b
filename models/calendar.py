"""Calendar events' links to the CRM: an event in a connected Google Calendar about a
contact, a lead or a task of the organization (the event itself lives at Google)."""

from tortoise import fields

from models.base import TenantModel


class CalendarEventLink(TenantModel):
    account: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "switchboard.ConnectedAccount", related_name=False, on_delete=fields.CASCADE
    )
    account_id: int
    calendar_id = fields.CharField(max_length=255)
    event_id = fields.CharField(max_length=255)
    contact: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "switchboard.Contact", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    contact_id: int | None
    lead: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "switchboard.Lead", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    lead_id: int | None
    task: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "switchboard.Task", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    task_id: int | None
    created_by_id = fields.BigIntField(null=True)

    class Meta:
        table = "calendar_event_links"
        unique_together = (("account_id", "calendar_id", "event_id"),)
        indexes = (("tenant_id", "task_id"),)

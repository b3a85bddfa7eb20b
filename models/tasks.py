"""CRM tasks: to-dos assigned to a member, linked to a lead or a contact (at most one)."""

from enum import StrEnum

from tortoise import fields

from models.base import TenantModel


class TaskStatus(StrEnum):
    OPEN = "OPEN"
    DONE = "DONE"
    CANCELLED = "CANCELLED"


class Task(TenantModel):
    title = fields.CharField(max_length=200)
    description = fields.TextField(default="")
    assignee: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "switchboard.User", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    assignee_id: int | None
    due_at = fields.DatetimeField(null=True)
    status = fields.CharEnumField(TaskStatus, max_length=16, default=TaskStatus.OPEN)
    completed_at = fields.DatetimeField(null=True)
    lead: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "switchboard.Lead", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    lead_id: int | None
    contact: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "switchboard.Contact", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    contact_id: int | None

    class Meta:
        table = "crm_tasks"
        indexes = (
            ("tenant_id", "contact_id", "status"),
            ("tenant_id", "lead_id", "status"),
            ("tenant_id", "assignee_id"),
        )

"""CRM leads: sales opportunities moving through a status pipeline."""

from decimal import Decimal
from enum import StrEnum

from tortoise import fields

from models.base import TenantModel


class LeadStatus(StrEnum):
    NEW = "NEW"
    CONTACTED = "CONTACTED"
    QUALIFIED = "QUALIFIED"
    WON = "WON"
    LOST = "LOST"


class Lead(TenantModel):
    title = fields.CharField(max_length=200)
    status = fields.CharEnumField(LeadStatus, max_length=16, default=LeadStatus.NEW)
    # Monetary value in `currency` (ISO 4217). Named `amount`: VALUE is an SQL keyword.
    amount = fields.DecimalField(max_digits=18, decimal_places=4, default=Decimal("0"))
    currency = fields.CharField(max_length=3, default="USD")
    source = fields.CharField(max_length=100, default="")
    contact: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "switchboard.Contact", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    contact_id: int | None
    owner: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "switchboard.User", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    owner_id: int | None
    closed_at = fields.DatetimeField(null=True)  # when it became WON or LOST
    external_id = fields.CharField(max_length=200, null=True)

    class Meta:
        table = "crm_leads"
        unique_together = (("tenant_id", "external_id"),)
        indexes = (("tenant_id", "status"), ("tenant_id", "owner_id"))

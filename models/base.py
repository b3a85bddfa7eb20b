"""Base classes: timestamps, and tenant ownership for every tenant-owned row."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model


class TimestampedModel(Model):
    id = fields.BigIntField(primary_key=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        abstract = True


class TenantModel(TimestampedModel):
    """A row that belongs to one tenant. Read and write it only through `models.tenancy`."""

    tenant: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "switchboard.Tenant", related_name=False, on_delete=fields.CASCADE, db_index=True
    )
    tenant_id: int

    class Meta:
        abstract = True

"""Memberships (a user's role in a tenant) and invitations to join one."""

from tortoise import fields

from models.base import TenantModel


class Membership(TenantModel):
    """A user's role in one tenant. Tenant-owned, so it is read through `models.tenancy`."""

    user: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "switchboard.User", related_name=False, on_delete=fields.CASCADE
    )
    user_id: int
    role = fields.CharField(max_length=16)

    class Meta:
        table = "memberships"
        unique_together = (("user_id", "tenant_id"),)


class Invitation(TenantModel):
    """Single-use, expiring invitation to join a tenant. The token is stored hashed."""

    email = fields.CharField(max_length=320, db_index=True)  # lower-cased
    role = fields.CharField(max_length=16)
    token_hash = fields.CharField(max_length=64, unique=True)
    invited_by: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "switchboard.User", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    invited_by_id: int | None
    expires_at = fields.DatetimeField()
    accepted_at = fields.DatetimeField(null=True)
    revoked_at = fields.DatetimeField(null=True)

    class Meta:
        table = "invitations"

"""Users, their sessions (refresh-token families) and single-use email tokens."""

from tortoise import fields
from tortoise.models import Model


class User(Model):
    id = fields.BigIntField(primary_key=True)
    email = fields.CharField(max_length=320, unique=True)  # stored lower-cased
    name = fields.CharField(max_length=200, default="")
    password_hash = fields.CharField(max_length=255)
    email_verified_at = fields.DatetimeField(null=True)
    # A phone the user proved they hold (checkVerificationCode), E.164.
    phone = fields.CharField(max_length=32, null=True)
    phone_verified_at = fields.DatetimeField(null=True)
    is_active = fields.BooleanField(default=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "users"


class RefreshToken(Model):
    """One rotation step of a session. Presenting a rotated token revokes the family."""

    id = fields.BigIntField(primary_key=True)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "switchboard.User", related_name=False, on_delete=fields.CASCADE
    )
    user_id: int
    tenant: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "switchboard.Tenant", related_name=False, on_delete=fields.CASCADE
    )
    tenant_id: int
    family = fields.CharField(max_length=64, db_index=True)
    token_hash = fields.CharField(max_length=64, unique=True)
    expires_at = fields.DatetimeField()
    rotated_at = fields.DatetimeField(null=True)
    revoked_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "refresh_tokens"


class EmailToken(Model):
    """Single-use, expiring token mailed to a user (email verification, password reset)."""

    id = fields.BigIntField(primary_key=True)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "switchboard.User", related_name=False, on_delete=fields.CASCADE
    )
    user_id: int
    purpose = fields.CharField(max_length=32)
    token_hash = fields.CharField(max_length=64, unique=True)
    expires_at = fields.DatetimeField()
    used_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "email_tokens"

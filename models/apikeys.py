"""API keys for machine clients: shown once, stored hashed."""

from tortoise import fields

from models.base import TenantModel


class ApiKey(TenantModel):
    name = fields.CharField(max_length=120)
    role = fields.CharField(max_length=16)
    prefix = fields.CharField(max_length=16)  # the first characters, to recognise a key in a list
    key_hash = fields.CharField(max_length=64, unique=True)
    created_by: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "switchboard.User", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    created_by_id: int | None
    last_used_at = fields.DatetimeField(null=True)
    revoked_at = fields.DatetimeField(null=True)

    class Meta:
        table = "api_keys"

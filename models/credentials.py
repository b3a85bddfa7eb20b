"""Credentials for third-party providers, encrypted at rest by the vault.

One row per (tenant, provider, slot): slot `tenant` for the organization's key,
`user:<id>` for a member's own key. The secret fields are one JSON object
encrypted with `kit.vault`; only a hint (the last four characters of the
main secret) is stored in clear, for lists.
"""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model

from models.base import TenantModel

TENANT_SLOT = "tenant"


def user_slot(user_id: int) -> str:
    return f"user:{user_id}"


class Credential(TenantModel):
    provider = fields.CharField(max_length=32)
    slot = fields.CharField(max_length=40)  # "tenant" or "user:<id>"
    user: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "switchboard.User", related_name=False, null=True, on_delete=fields.CASCADE
    )
    user_id: int | None
    ciphertext = fields.TextField()  # vault token of the JSON object of secret fields
    hint = fields.CharField(max_length=8, default="")  # last four characters of the main secret
    field_names = fields.CharField(max_length=300, default="")  # comma-separated, no values
    set_by: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "switchboard.User", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    set_by_id: int | None

    class Meta:
        table = "credentials"
        unique_together = (("tenant_id", "provider", "slot"),)


# Every (model, column) holding a vault token; `switchboard rotate-vault-key` re-encrypts
# them all. Areas that store other secrets with the vault append theirs here.
VAULT_COLUMNS: list[tuple[type[Model], str]] = [(Credential, "ciphertext")]

"""Notion as each user's second brain: a user's connection (their integration key, in the
vault, and the database they chose), the Notion page each CRM contact was written to, and
the runs of the contact sync with their per-contact errors."""

from enum import StrEnum

from tortoise import fields

from models.base import TenantModel
from models.credentials import VAULT_COLUMNS


class NotionSyncStatus(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"  # every contact written (or refused one by one: see errors)
    FAILED = "FAILED"  # stopped: the key was refused, the database is gone


class NotionConnection(TenantModel):
    """One user's Notion: their integration key (a vault token, never returned) and the
    database their pages go to. Inactive once Notion refused the key; connecting again
    makes it active."""

    user: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "switchboard.User", related_name=False, on_delete=fields.CASCADE
    )
    user_id: int
    api_key = fields.TextField()  # vault token
    key_hint = fields.CharField(max_length=8, default="")  # last four characters
    database_id = fields.CharField(max_length=36)
    database_title = fields.CharField(max_length=300, default="")
    workspace_name = fields.CharField(max_length=300, default="")
    active = fields.BooleanField(default=True)
    inactive_reason = fields.CharField(max_length=500, null=True)

    class Meta:
        table = "notion_connections"
        unique_together = (("tenant_id", "user_id"),)


class NotionContactPage(TenantModel):
    """The Notion page a contact was written to through one connection, and the contact's
    `updated_at` it holds: a contact whose `updated_at` differs (or that has no row) is
    written again by the next sync. `page_id` is empty between asking Notion to create the
    page and hearing back: a run cut there looks the page up before creating another."""

    connection: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "switchboard.NotionConnection", related_name=False, on_delete=fields.CASCADE
    )
    connection_id: int
    contact: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "switchboard.Contact", related_name=False, on_delete=fields.CASCADE
    )
    contact_id: int
    page_id = fields.CharField(max_length=36, null=True)
    contact_updated_at = fields.DatetimeField(null=True)

    class Meta:
        table = "notion_contact_pages"
        unique_together = (("connection_id", "contact_id"),)


class NotionSync(TenantModel):
    """One run of the contact sync of a connection, with its counts as it goes."""

    connection: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "switchboard.NotionConnection", related_name=False, on_delete=fields.CASCADE
    )
    connection_id: int
    status = fields.CharField(max_length=16, default=NotionSyncStatus.QUEUED.value)
    full = fields.BooleanField(default=False)  # every contact, changed or not
    total = fields.IntField(default=0)  # contacts to write (known once it runs)
    created = fields.IntField(default=0)
    updated = fields.IntField(default=0)
    failed = fields.IntField(default=0)
    reason = fields.CharField(max_length=500, null=True)  # why it FAILED
    started_at = fields.DatetimeField(null=True)
    finished_at = fields.DatetimeField(null=True)

    class Meta:
        table = "notion_syncs"
        indexes = (("connection_id", "status"),)


class NotionSyncError(TenantModel):
    """A contact Notion refused during a sync (the others went on)."""

    sync: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "switchboard.NotionSync", related_name=False, on_delete=fields.CASCADE
    )
    sync_id: int
    contact_id = fields.BigIntField()
    message = fields.CharField(max_length=500)

    class Meta:
        table = "notion_sync_errors"


VAULT_COLUMNS.append((NotionConnection, "api_key"))

"""The support inbox (resolvers/inbox.py): one conversation per tenant, channel and
contact address; its messages are `models.messaging.Message` rows pointing at it."""

from __future__ import annotations

from enum import StrEnum

from tortoise import fields

from models.base import TenantModel


class ConversationStatus(StrEnum):
    OPEN = "OPEN"  # waiting for the organization
    PENDING = "PENDING"  # answered, waiting for the contact
    CLOSED = "CLOSED"  # done; a new incoming message opens it again


class InboxConversation(TenantModel):
    contact: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "switchboard.Contact", related_name=False, on_delete=fields.CASCADE
    )
    contact_id: int
    channel = fields.CharField(max_length=10)  # SMS, WHATSAPP, EMAIL
    address = fields.CharField(max_length=320)  # the contact's E.164 number or email
    status = fields.CharField(max_length=10, default=ConversationStatus.OPEN.value)
    assignee: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "switchboard.User", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    assignee_id: int | None
    unread = fields.IntField(default=0)  # incoming messages since an agent last read it
    last_message_at = fields.DatetimeField(null=True)
    last_preview = fields.CharField(max_length=200, default="")
    subject = fields.CharField(max_length=300, default="")  # email: the thread's subject
    closed_at = fields.DatetimeField(null=True)

    class Meta:
        table = "inbox_conversations"
        unique_together = (("tenant_id", "channel", "address"),)
        indexes = (("tenant_id", "status"), ("tenant_id", "last_message_at"))

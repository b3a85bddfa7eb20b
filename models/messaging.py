"""Messaging (resolvers/messaging/): SMS and WhatsApp messages from queueing to their last
known state, incoming ones, the bulk sends that group them, each tenant's opt-out list,
and verification codes."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from tortoise import fields

from models.base import TenantModel


class Channel(StrEnum):
    SMS = "SMS"
    WHATSAPP = "WHATSAPP"
    EMAIL = "EMAIL"  # a mail reply landing in the inbox (resolvers/inbox.py)


class Direction(StrEnum):
    OUTBOUND = "OUTBOUND"
    INBOUND = "INBOUND"


class MessageStatus(StrEnum):
    QUEUED = "QUEUED"  # waiting for the send job (or its next try)
    SENDING = "SENDING"  # a send call was started; its outcome is being recorded
    ACCEPTED = "ACCEPTED"  # Twilio took it (its `queued` / `accepted` / `sending`)
    SENT = "SENT"  # the carrier took it
    DELIVERED = "DELIVERED"  # the handset took it
    READ = "READ"  # read receipt (WhatsApp)
    UNDELIVERED = "UNDELIVERED"  # the carrier could not deliver it
    FAILED = "FAILED"  # refused (a bad number, an opted-out one, out of tries)
    RECEIVED = "RECEIVED"  # an incoming message


class OptOutReason(StrEnum):
    KEYWORD = "KEYWORD"  # the recipient replied STOP (or another opt-out keyword)
    PROVIDER = "PROVIDER"  # Twilio refused a send with 21610 (unsubscribed recipient)
    MANUAL = "MANUAL"  # added by the organization


class SmsBatch(TenantModel):
    """One `sendBulkSms`: its messages point here."""

    total = fields.IntField()  # recipients asked for
    queued = fields.IntField()  # of them, messages written
    created_by_id = fields.BigIntField(null=True)

    class Meta:
        table = "sms_batch"


class Message(TenantModel):
    """An SMS or WhatsApp message (or, in a conversation, an email), either way."""

    direction = fields.CharField(max_length=10, default=Direction.OUTBOUND.value)
    channel = fields.CharField(max_length=10, db_index=True)
    kind = fields.CharField(max_length=20)  # direct, bulk, verification, reply, inbound
    recipient = fields.CharField(max_length=320, db_index=True)  # E.164 (or an address)
    sender = fields.CharField(max_length=320, default="")  # E.164, a Messaging Service
    body = fields.TextField(default="")
    subject = fields.CharField(max_length=300, default="")  # email only
    media_urls: fields.Field[list[str]] = fields.JSONField(default=list)
    content_sid = fields.CharField(max_length=34, null=True)  # an approved template
    content_variables: fields.Field[dict[str, Any]] = fields.JSONField(default=dict)
    status = fields.CharField(max_length=12, default=MessageStatus.QUEUED.value, db_index=True)
    attempts = fields.IntField(default=0)
    provider = fields.CharField(max_length=40, null=True)  # twilio, twilio-sandbox
    provider_sid = fields.CharField(max_length=64, null=True, unique=True)
    error_code = fields.CharField(max_length=20, null=True)
    last_error = fields.TextField(null=True)
    segments = fields.IntField(null=True)
    batch: fields.ForeignKeyNullableRelation[SmsBatch] = fields.ForeignKeyField(
        "switchboard.SmsBatch", null=True, on_delete=fields.CASCADE, related_name=False
    )
    batch_id: int | None
    conversation: fields.ForeignKeyNullableRelation[Any] = fields.ForeignKeyField(
        "switchboard.InboxConversation", null=True, on_delete=fields.CASCADE, related_name=False
    )
    conversation_id: int | None
    author_id = fields.BigIntField(null=True)  # the member who sent it
    claimed_at = fields.DatetimeField(null=True)  # when its send call was started
    sent_at = fields.DatetimeField(null=True)
    delivered_at = fields.DatetimeField(null=True)
    status_changed_at = fields.DatetimeField(null=True)

    class Meta:
        table = "messages"
        indexes = (("tenant_id", "conversation_id"),)


class PhoneOptOut(TenantModel):
    """A number this tenant's messages no longer go to (E.164)."""

    number = fields.CharField(max_length=32)
    reason = fields.CharField(max_length=10)
    detail = fields.CharField(max_length=200, default="")

    class Meta:
        table = "phone_opt_out"
        unique_together = (("tenant_id", "number"),)


class VerificationCode(TenantModel):
    """A code sent to prove a member holds a phone: stored as a keyed hash, never as
    it is; at most `VERIFICATION_MAX_ATTEMPTS` checks; used once."""

    user_id = fields.BigIntField(db_index=True)
    phone = fields.CharField(max_length=32)
    channel = fields.CharField(max_length=10)
    code_hash = fields.CharField(max_length=64)
    expires_at = fields.DatetimeField()
    attempts = fields.IntField(default=0)
    verified_at = fields.DatetimeField(null=True)
    superseded = fields.BooleanField(default=False)  # a newer code was sent
    message: fields.ForeignKeyNullableRelation[Message] = fields.ForeignKeyField(
        "switchboard.Message", null=True, on_delete=fields.SET_NULL, related_name=False
    )
    message_id: int | None

    class Meta:
        table = "verification_codes"
        indexes = (("user_id", "phone"),)

"""Outgoing mail (resolvers/mail/): one row per message from queueing to its last known
state, the bulk sends that group them, and each tenant's suppression list."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from tortoise import fields

from models.base import TenantModel


class EmailStatus(StrEnum):
    QUEUED = "QUEUED"  # waiting for the send job (or for its next try)
    SENT = "SENT"  # a provider accepted it
    DEFERRED = "DEFERRED"  # the receiving server asked the provider to try later
    DELIVERED = "DELIVERED"  # the receiving server took it
    OPENED = "OPENED"
    CLICKED = "CLICKED"
    BOUNCED = "BOUNCED"  # the receiving server refused it for good
    COMPLAINED = "COMPLAINED"  # the recipient marked it as spam
    FAILED = "FAILED"  # refused for good by the provider, or every try spent


class SuppressionReason(StrEnum):
    BOUNCED = "BOUNCED"  # a hard bounce
    COMPLAINED = "COMPLAINED"  # a spam complaint
    UNSUBSCRIBED = "UNSUBSCRIBED"  # the recipient's one-click unsubscribe
    MANUAL = "MANUAL"  # added by the organization


class EmailBatch(TenantModel):
    """One `sendBulkEmail`: its messages are OutboundEmail rows pointing here."""

    subject = fields.CharField(max_length=300)
    template = fields.CharField(max_length=60, null=True)
    broadcast = fields.BooleanField(default=True)  # carries List-Unsubscribe
    total = fields.IntField()  # recipients asked for
    queued = fields.IntField()  # of them, messages written
    created_by_id = fields.BigIntField(null=True)

    class Meta:
        table = "email_batch"


class OutboundEmail(TenantModel):
    """A message the gateway sends: written with its job in the caller's transaction."""

    kind = fields.CharField(max_length=40, db_index=True)  # verify_email, invitation, ...
    recipient = fields.CharField(max_length=320, db_index=True)  # the first `To`
    recipient_name = fields.CharField(max_length=200, default="")
    # Further addresses, each `{"email", "name"}`: the rest of `To`, `Cc` and `Bcc`.
    to_more: fields.Field[list[dict[str, Any]]] = fields.JSONField(default=list)
    cc: fields.Field[list[dict[str, Any]]] = fields.JSONField(default=list)
    bcc: fields.Field[list[dict[str, Any]]] = fields.JSONField(default=list)
    reply_to = fields.CharField(max_length=400, default="")
    sender = fields.CharField(max_length=400)
    subject = fields.CharField(max_length=300)
    html = fields.TextField()
    text = fields.TextField()
    batch: fields.ForeignKeyNullableRelation[EmailBatch] = fields.ForeignKeyField(
        "switchboard.EmailBatch", null=True, on_delete=fields.CASCADE, related_name=False
    )
    batch_id: int | None
    # A broadcast's one-click unsubscribe (RFC 8058) token; null for transactional mail,
    # which carries no List-Unsubscribe. Kept as is, not hashed: the body stored beside it
    # holds the same link, and the header needs it at every try.
    unsubscribe_token = fields.CharField(max_length=64, null=True, unique=True)
    status = fields.CharField(max_length=16, default=EmailStatus.QUEUED.value, db_index=True)
    attempts = fields.IntField(default=0)
    # The RFC 5322 Message-ID, fixed at queueing: every try (and every provider) sends the
    # same one, and it is Resend's idempotency key.
    message_id = fields.CharField(max_length=255, unique=True)
    provider = fields.CharField(max_length=40, null=True)  # the one that took it
    provider_message_id = fields.CharField(max_length=255, null=True, db_index=True)
    last_error = fields.TextField(null=True)
    sent_at = fields.DatetimeField(null=True)
    delivered_at = fields.DatetimeField(null=True)
    status_changed_at = fields.DatetimeField(null=True)

    class Meta:
        table = "outbound_email"

    def addresses(self) -> list[str]:
        """Every address the message goes to (To, Cc, Bcc)."""
        more = [a["email"] for a in (*self.to_more, *self.cc, *self.bcc)]
        return [self.recipient, *more]


class EmailSuppression(TenantModel):
    """An address this tenant's mail no longer goes to (lower-cased)."""

    address = fields.CharField(max_length=320)
    reason = fields.CharField(max_length=16)
    detail = fields.CharField(max_length=500, default="")
    email: fields.ForeignKeyNullableRelation[OutboundEmail] = fields.ForeignKeyField(
        "switchboard.OutboundEmail", null=True, on_delete=fields.SET_NULL, related_name=False
    )
    email_id: int | None

    class Meta:
        table = "email_suppression"
        unique_together = (("tenant_id", "address"),)

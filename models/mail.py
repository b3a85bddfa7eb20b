"""Outgoing mail: one row per message, from queueing to its outcome (resolvers/mail.py)."""

from __future__ import annotations

from enum import StrEnum

from tortoise import fields

from models.base import TenantModel


class EmailStatus(StrEnum):
    QUEUED = "QUEUED"  # waiting for the send job (or for its next try)
    SENT = "SENT"  # a provider accepted it
    FAILED = "FAILED"  # refused for good, or every try spent


class OutboundEmail(TenantModel):
    """A message the gateway sends: written with its job in the caller's transaction."""

    kind = fields.CharField(max_length=40, db_index=True)  # verify_email, invitation, ...
    recipient = fields.CharField(max_length=320, db_index=True)
    recipient_name = fields.CharField(max_length=200, default="")
    sender = fields.CharField(max_length=400)
    subject = fields.CharField(max_length=300)
    html = fields.TextField()
    text = fields.TextField()
    status = fields.CharField(max_length=16, default=EmailStatus.QUEUED.value, db_index=True)
    attempts = fields.IntField(default=0)
    # The RFC 5322 Message-ID, fixed at queueing: every try (and every provider) sends the
    # same one, and it is Resend's idempotency key.
    message_id = fields.CharField(max_length=255, unique=True)
    provider = fields.CharField(max_length=40, null=True)  # the one that took it
    provider_message_id = fields.CharField(max_length=255, null=True)
    last_error = fields.TextField(null=True)
    sent_at = fields.DatetimeField(null=True)

    class Meta:
        table = "outbound_email"

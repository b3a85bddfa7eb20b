"""Mail read from mailboxes (IMAP) and the PDF documents taken from it (resolvers/mailbox.py).

- `ReceivedMessage`: one row per message read, unique per (tenant, mailbox, UIDVALIDITY,
  UID), so a message read twice (a poll that died before marking it seen, two workers at
  once) is one row; FAILED with an error when it could not be read or an attachment was
  refused.
- `ReceivedDocument`: a PDF from a message, unique per (tenant, SHA-256): the same file
  mailed twice is one document. Its bytes live in `ReceivedDocumentContent`, a row of its
  own so that lists never load them (file storage takes them over with the files area).
- `MailboxState`: when each configured mailbox was last read, and how that went.
"""

from __future__ import annotations

from enum import StrEnum

from tortoise import fields

from models.base import TenantModel


class MessageStatus(StrEnum):
    RECEIVED = "RECEIVED"  # read; its PDFs (if any) are documents
    FAILED = "FAILED"  # not readable, or an attachment was refused (see `error`)


class DocumentStatus(StrEnum):
    RECEIVED = "RECEIVED"  # taken from a mailbox, waiting for the invoice pipeline


class ReceivedMessage(TenantModel):
    mailbox = fields.CharField(max_length=255)  # imap://user@host:port
    uidvalidity = fields.BigIntField()
    uid = fields.BigIntField()
    message_id = fields.CharField(max_length=255, default="")
    sender = fields.CharField(max_length=320, default="")
    subject = fields.CharField(max_length=300, default="")
    size = fields.BigIntField(default=0)
    status = fields.CharField(max_length=16, db_index=True)
    error = fields.TextField(null=True)
    documents = fields.IntField(default=0)  # new documents it brought

    class Meta:
        table = "received_message"
        unique_together = (("tenant_id", "mailbox", "uidvalidity", "uid"),)


class ReceivedDocument(TenantModel):
    # The message that brought it first.
    source_message: fields.ForeignKeyNullableRelation[ReceivedMessage] = fields.ForeignKeyField(
        "switchboard.ReceivedMessage", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    source_message_id: int | None
    message_id = fields.CharField(max_length=255, default="")  # its Message-ID header
    filename = fields.CharField(max_length=200)
    content_type = fields.CharField(max_length=100)
    size = fields.BigIntField()
    sha256 = fields.CharField(max_length=64)
    sender = fields.CharField(max_length=320, default="")
    subject = fields.CharField(max_length=300, default="")
    received_at = fields.DatetimeField()
    status = fields.CharField(max_length=16, default=DocumentStatus.RECEIVED.value, db_index=True)

    class Meta:
        table = "received_document"
        unique_together = (("tenant_id", "sha256"),)


class ReceivedDocumentContent(TenantModel):
    """A document's bytes (until the files area stores them)."""

    document: fields.OneToOneRelation[ReceivedDocument] = fields.OneToOneField(
        "switchboard.ReceivedDocument", related_name=False, on_delete=fields.CASCADE
    )
    document_id: int
    content = fields.BinaryField()

    class Meta:
        table = "received_document_content"


class MailboxState(TenantModel):
    """How reading one mailbox went, last time (one row per tenant and mailbox)."""

    mailbox = fields.CharField(max_length=255)
    source = fields.CharField(max_length=16)  # SYSTEM (settings) or TENANT (the vault)
    last_polled_at = fields.DatetimeField(null=True)
    last_success_at = fields.DatetimeField(null=True)
    last_error = fields.TextField(null=True)
    uidvalidity = fields.BigIntField(null=True)

    class Meta:
        table = "mailbox_state"
        unique_together = (("tenant_id", "mailbox"),)

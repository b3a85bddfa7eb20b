"""Invoices read from mailboxes: `receivedDocuments` and `mailboxes` (resolvers/mailbox.py)."""

from __future__ import annotations

import datetime as dt
from typing import ClassVar

import strawberry
from strawberry import relay
from strawberry.types import Info

from models.mailbox import DocumentStatus
from models.mailbox import MailboxState as MailboxStateRow
from models.mailbox import ReceivedDocument as ReceivedDocumentRow
from resolvers import mailbox
from resolvers.credentials import CredentialSource
from schema.permissions import query
from schema.relay import After, Connection, First, ModelNode

strawberry.enum(
    DocumentStatus,
    description="Where a received document is. RECEIVED: taken from a mailbox, waiting for "
    "the invoice pipeline.",
)


@strawberry.type(description="A PDF taken from a message in one of the organization's mailboxes.")
class ReceivedDocument(ModelNode):
    _model: ClassVar[type] = ReceivedDocumentRow
    _permission: ClassVar[str] = "mailbox:read"
    id: relay.NodeID[int]
    filename: str = strawberry.field(
        description="Its file name as mailed, made safe (no directories or control "
        "characters; ends in `.pdf`)."
    )
    content_type: str = strawberry.field(
        description="Its media type, from its content (always `application/pdf`)."
    )
    size: int = strawberry.field(description="Its size in bytes.")
    sha256: str = strawberry.field(
        description="The SHA-256 of its bytes (hex): the same file mailed twice is one document."
    )
    sender: str = strawberry.field(description="The `From` of the message that brought it.")
    subject: str = strawberry.field(description="The subject of the message that brought it.")
    message_id: str = strawberry.field(
        description="The `Message-ID` of the message that brought it."
    )
    received_at: dt.datetime = strawberry.field(description="When the gateway read it.")
    status: DocumentStatus = strawberry.field(description="Where it is.")

    @classmethod
    def from_row(cls, row: ReceivedDocumentRow) -> ReceivedDocument:  # type: ignore[override]
        return cls(
            id=row.id,
            filename=row.filename,
            content_type=row.content_type,
            size=row.size,
            sha256=row.sha256,
            sender=row.sender,
            subject=row.subject,
            message_id=row.message_id,
            received_at=row.received_at,
            status=DocumentStatus(row.status),
        )


@strawberry.type(description="A mailbox the gateway reads for the organization.")
class Mailbox(ModelNode):
    _model: ClassVar[type] = MailboxStateRow
    _permission: ClassVar[str] = "mailbox:read"
    id: relay.NodeID[int]
    mailbox: str = strawberry.field(description="Which one: `imap://user@host:port`.")
    source: CredentialSource = strawberry.field(
        description="Whose settings: TENANT (the organization's `imap` credential) or "
        "SYSTEM (the operator's IMAP_* settings)."
    )
    last_polled_at: dt.datetime | None = strawberry.field(description="When it was last read.")
    last_success_at: dt.datetime | None = strawberry.field(
        description="When it was last read without an error."
    )
    last_error: str | None = strawberry.field(
        description="What went wrong on the last read (login refused, unreachable…); null "
        "when it went well. Each failure is in `integrationErrors` too."
    )

    @classmethod
    def from_row(cls, row: MailboxStateRow) -> Mailbox:  # type: ignore[override]
        return cls(
            id=row.id,
            mailbox=row.mailbox,
            source=CredentialSource(row.source),
            last_polled_at=row.last_polled_at,
            last_success_at=row.last_success_at,
            last_error=row.last_error,
        )


@strawberry.type
class Query:
    @query(
        operation=mailbox.list_received_documents,
        description="PDFs read from the organization's mailboxes, newest first (their "
        "bytes are not served here).",
    )
    async def received_documents(
        self, info: Info, first: First = None, after: After = None
    ) -> Connection[ReceivedDocument]:
        page = await mailbox.list_received_documents(info.context, first=first, after=after)
        return Connection.of(page, ReceivedDocument.from_row)

    @query(
        operation=mailbox.list_mailboxes,
        description="The organization's mailboxes that the gateway has read, with how the "
        "last read went.",
    )
    async def mailboxes(
        self, info: Info, first: First = None, after: After = None
    ) -> Connection[Mailbox]:
        page = await mailbox.list_mailboxes(info.context, first=first, after=after)
        return Connection.of(page, Mailbox.from_row)

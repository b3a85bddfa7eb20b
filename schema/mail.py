"""Mail the organization's gateway sent (or is sending): the `sentEmails` list."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, ClassVar

import strawberry
from strawberry import relay
from strawberry.types import Info

from models.mail import EmailStatus
from models.mail import OutboundEmail as EmailRow
from resolvers import mail
from schema.permissions import query
from schema.relay import After, Connection, First, ModelNode

strawberry.enum(
    EmailStatus,
    description="Where a message is: QUEUED (waiting for its next try), SENT (a provider "
    "accepted it) or FAILED (refused for good, or out of tries).",
)


@strawberry.type(description="A message the gateway sends for the current organization.")
class SentEmail(ModelNode):
    _model: ClassVar[type] = EmailRow
    _permission: ClassVar[str] = "mail:read"
    id: relay.NodeID[int]
    kind: str = strawberry.field(
        description="What it is: `verify_email`, `reset_password`, `invitation`."
    )
    recipient: str = strawberry.field(description="The address it goes to.")
    subject: str = strawberry.field(description="Its subject.")
    text: str | None = strawberry.field(
        description="Its plain-text body, only when the Resend sandbox took it (nothing was "
        "delivered, so this is where a developer reads it); null otherwise, since bodies "
        "carry other people's single-use tokens."
    )
    html: str | None = strawberry.field(description="Its HTML body, on the same terms as `text`.")
    status: EmailStatus = strawberry.field(description="Where it is.")
    attempts: int = strawberry.field(description="Tries spent so far.")
    message_id: str = strawberry.field(description="Its Message-ID header, the same on every try.")
    provider: str | None = strawberry.field(
        description="The provider that took it (`resend`, `resend-sandbox`, `smtp`) or refused "
        "it for good; null while queued."
    )
    last_error: str | None = strawberry.field(description="What went wrong on the last try.")
    created_at: dt.datetime = strawberry.field(description="When it was queued.")
    sent_at: dt.datetime | None = strawberry.field(description="When a provider accepted it.")

    @classmethod
    def from_row(cls, row: Any) -> SentEmail:
        readable = row.provider == mail.SANDBOX_PROVIDER
        return cls(
            id=row.id,
            kind=row.kind,
            recipient=row.recipient,
            subject=row.subject,
            text=row.text if readable else None,
            html=row.html if readable else None,
            status=EmailStatus(row.status),
            attempts=row.attempts,
            message_id=row.message_id,
            provider=row.provider,
            last_error=row.last_error,
            created_at=row.created_at,
            sent_at=row.sent_at,
        )


@strawberry.type
class Query:
    @query(
        operation=mail.list_sent_emails,
        description="Mail of the current organization, newest first, with each message's "
        "status, tries and last error.",
    )
    async def sent_emails(
        self,
        info: Info,
        status: Annotated[
            EmailStatus | None, strawberry.argument(description="Only messages in this state.")
        ] = None,
        first: First = None,
        after: After = None,
    ) -> Connection[SentEmail]:
        page = await mail.list_sent_emails(
            info.context,
            status=None if status is None else status.value,
            first=first,
            after=after,
        )
        return Connection.of(page, SentEmail.from_row)

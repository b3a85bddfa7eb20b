"""Mail: what the organization sends (`sentEmails`, `sendEmail`, `sendBulkEmail`, the
`emailStatus` subscription), its templates and its suppression list."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncGenerator
from enum import Enum
from typing import Annotated, Any, ClassVar

import strawberry
from strawberry import relay
from strawberry.scalars import JSON
from strawberry.types import Info

from models.mail import EmailBatch as BatchRow
from models.mail import EmailStatus, SuppressionReason
from models.mail import EmailSuppression as SuppressionRow
from models.mail import OutboundEmail as EmailRow
from resolvers import mail
from schema.permissions import mutation, query, subscription
from schema.relay import After, Connection, First, ModelNode, decode_id

strawberry.enum(
    EmailStatus,
    description="Where a message is, in this order (it only moves forward): QUEUED (waiting "
    "for its next try), SENT (a provider took it), DEFERRED (the receiving server asked to "
    "try later), DELIVERED, OPENED, CLICKED, BOUNCED (refused for good by the receiving "
    "server), COMPLAINED (marked as spam), FAILED (refused by the provider, suppressed, or "
    "out of tries).",
)
strawberry.enum(
    SuppressionReason,
    description="Why an address is suppressed: a hard BOUNCED, a spam complaint "
    "(COMPLAINED), the recipient's one-click unsubscribe (UNSUBSCRIBED), or added by hand "
    "(MANUAL).",
)


@strawberry.type(description="An address of a message.")
class EmailAddress:
    email: str = strawberry.field(description="The address.")
    name: str = strawberry.field(description="The name shown with it; empty if none.")


def _addresses(rows: list[dict[str, Any]]) -> list[EmailAddress]:
    return [EmailAddress(email=r["email"], name=r.get("name", "")) for r in rows]


@strawberry.type(description="A message the gateway sends for the current organization.")
class SentEmail(ModelNode):
    _model: ClassVar[type] = EmailRow
    _permission: ClassVar[str] = "mail:read"
    id: relay.NodeID[int]
    kind: str = strawberry.field(
        description="What it is: `verify_email`, `reset_password`, `invitation` (account "
        "mail), `direct` (`sendEmail`) or `bulk` (`sendBulkEmail`)."
    )
    recipient: str = strawberry.field(description="The first address it goes to.")
    to: list[EmailAddress] = strawberry.field(description="Every `To` address.")
    cc: list[EmailAddress] = strawberry.field(description="`Cc` addresses.")
    bcc: list[EmailAddress] = strawberry.field(description="`Bcc` addresses.")
    sender: str = strawberry.field(description="The `From` header as queued.")
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
        description="The provider that took it (`resend`, `resend-sandbox`, `sendgrid`, "
        "`smtp`) or refused it for good; null while queued."
    )
    last_error: str | None = strawberry.field(description="What went wrong on the last try.")
    batch_id: strawberry.ID | None = strawberry.field(
        description="The bulk send it belongs to (an `EmailBatch` id); null otherwise."
    )
    created_at: dt.datetime = strawberry.field(description="When it was queued.")
    sent_at: dt.datetime | None = strawberry.field(description="When a provider took it.")
    delivered_at: dt.datetime | None = strawberry.field(
        description="When the receiving server took it (as the provider reported)."
    )
    status_changed_at: dt.datetime | None = strawberry.field(
        description="When its status last changed."
    )

    @classmethod
    def from_row(cls, row: Any) -> SentEmail:
        readable = row.provider == mail.SANDBOX_PROVIDER
        return cls(
            id=row.id,
            kind=row.kind,
            recipient=row.recipient,
            to=[
                EmailAddress(email=row.recipient, name=row.recipient_name),
                *_addresses(row.to_more),
            ],
            cc=_addresses(row.cc),
            bcc=_addresses(row.bcc),
            sender=row.sender,
            subject=row.subject,
            text=row.text if readable else None,
            html=row.html if readable else None,
            status=EmailStatus(row.status),
            attempts=row.attempts,
            message_id=row.message_id,
            provider=row.provider,
            last_error=row.last_error,
            batch_id=None
            if row.batch_id is None
            else strawberry.ID(str(relay.GlobalID("EmailBatch", str(row.batch_id)))),
            created_at=row.created_at,
            sent_at=row.sent_at,
            delivered_at=row.delivered_at,
            status_changed_at=row.status_changed_at,
        )


@strawberry.type(description="One `sendBulkEmail`: its messages are in `sentEmails(batchId:)`.")
class EmailBatch(ModelNode):
    _model: ClassVar[type] = BatchRow
    _permission: ClassVar[str] = "mail:read"
    id: relay.NodeID[int]
    subject: str = strawberry.field(description="The first message's subject.")
    template: str | None = strawberry.field(description="The template used; null for a body.")
    broadcast: bool = strawberry.field(description="Whether its mail carries List-Unsubscribe.")
    total: int = strawberry.field(description="Recipients asked for.")
    queued: int = strawberry.field(description="Of them, messages queued.")
    created_at: dt.datetime = strawberry.field(description="When it was sent.")


@strawberry.type(description="An address the organization's mail no longer goes to.")
class EmailSuppression(ModelNode):
    _model: ClassVar[type] = SuppressionRow
    _permission: ClassVar[str] = "mail:suppressions"
    id: relay.NodeID[int]
    address: str = strawberry.field(description="The address (lower-case).")
    reason: SuppressionReason = strawberry.field(description="Why.")
    detail: str = strawberry.field(description="What the provider or person said.")
    created_at: dt.datetime = strawberry.field(description="Since when.")

    @classmethod
    def from_row(cls, row: Any) -> EmailSuppression:
        return cls(
            id=row.id,
            address=row.address,
            reason=SuppressionReason(row.reason),
            detail=row.detail,
            created_at=row.created_at,
        )


@strawberry.type(description="A variable of a mail template.")
class EmailTemplateVariable:
    name: str = strawberry.field(description="Its name in `variables`.")
    description: str = strawberry.field(description="What it is.")
    required: bool = strawberry.field(description="Whether a message must give it.")
    sample: str = strawberry.field(description="The value previews use when none is given.")


@strawberry.type(description="A mail template: HTML and plain text, rendered with variables.")
class EmailTemplate:
    name: str = strawberry.field(description="Its name, for `template` arguments.")
    description: str = strawberry.field(description="What it is for.")
    subject: str = strawberry.field(description="Its subject, a template over its variables.")
    sendable: bool = strawberry.field(
        description="Whether `sendEmail` may use it (account mail is the gateway's own)."
    )
    variables: list[EmailTemplateVariable] = strawberry.field(description="What it takes.")

    @classmethod
    def of(cls, template: mail.Template) -> EmailTemplate:
        return cls(
            name=template.name,
            description=template.description,
            subject=template.subject,
            sendable=template.sendable,
            variables=[
                EmailTemplateVariable(
                    name=v.name, description=v.description, required=v.required, sample=v.sample
                )
                for v in template.variables
            ],
        )


@strawberry.type(description="A template rendered, as a recipient would see it.")
class EmailPreview:
    subject: str = strawberry.field(description="The subject.")
    html: str = strawberry.field(description="The HTML body.")
    text: str = strawberry.field(description="The plain-text body.")


@strawberry.input(description="An address to send to.")
class EmailRecipientInput:
    email: str = strawberry.field(description="The address.")
    name: str | None = strawberry.field(default=None, description="The name shown with it.")


_TEMPLATE = (
    "A template's name (`emailTemplates`, sendable ones); or give `subject` with `html` "
    "and/or `text`."
)
_VARIABLES = "The template's variables: an object of text, numbers or booleans."


@strawberry.input(description="One message to one or more recipients.")
class SendEmailInput:
    to: list[EmailRecipientInput] = strawberry.field(description="Recipients (at least one).")
    cc: list[EmailRecipientInput] = strawberry.field(default_factory=list, description="Copies.")
    bcc: list[EmailRecipientInput] = strawberry.field(
        default_factory=list, description="Blind copies; to, cc and bcc at most 50 in all."
    )
    reply_to: str | None = strawberry.field(default=None, description="Where replies go.")
    subject: str | None = strawberry.field(
        default=None, description="The subject (with a template: overrides its own)."
    )
    template: str | None = strawberry.field(default=None, description=_TEMPLATE)
    variables: JSON | None = strawberry.field(default=None, description=_VARIABLES)
    html: str | None = strawberry.field(default=None, description="The HTML body.")
    text: str | None = strawberry.field(
        default=None, description="The plain-text body (made from `html` when not given)."
    )

    def to_request(self) -> mail.SendEmailIn:
        return mail.SendEmailIn(
            to=[mail.RecipientIn(r.email, r.name) for r in self.to],
            cc=[mail.RecipientIn(r.email, r.name) for r in self.cc],
            bcc=[mail.RecipientIn(r.email, r.name) for r in self.bcc],
            reply_to=self.reply_to,
            subject=self.subject,
            template=self.template,
            variables=self.variables,
            html=self.html,
            text=self.text,
        )


@strawberry.type(description="The queued message.")
class SendEmailPayload:
    email: SentEmail = strawberry.field(
        description="The message, QUEUED; follow it with `emailStatus`."
    )


@strawberry.input(description="One recipient of a bulk send.")
class BulkEmailRecipientInput:
    email: str = strawberry.field(description="The address.")
    name: str | None = strawberry.field(default=None, description="The name shown with it.")
    variables: JSON | None = strawberry.field(
        default=None, description="This recipient's variables, over the shared ones."
    )


@strawberry.input(description="One message per recipient, each with its own variables.")
class SendBulkEmailInput:
    recipients: list[BulkEmailRecipientInput] = strawberry.field(
        description="At most 1,000 recipients."
    )
    subject: str | None = strawberry.field(
        default=None, description="The subject (with a template: overrides its own)."
    )
    template: str | None = strawberry.field(default=None, description=_TEMPLATE)
    variables: JSON | None = strawberry.field(
        default=None, description="Variables shared by every recipient."
    )
    html: str | None = strawberry.field(default=None, description="The HTML body.")
    text: str | None = strawberry.field(default=None, description="The plain-text body.")
    broadcast: bool = strawberry.field(
        default=True,
        description="Carry `List-Unsubscribe` with one-click unsubscribe (RFC 8058) and an "
        "unsubscribe link; an unsubscribe suppresses the address.",
    )

    def to_request(self) -> mail.SendBulkEmailIn:
        return mail.SendBulkEmailIn(
            recipients=[mail.RecipientIn(r.email, r.name, r.variables) for r in self.recipients],
            subject=self.subject,
            template=self.template,
            variables=self.variables,
            html=self.html,
            text=self.text,
            broadcast=self.broadcast,
        )


@strawberry.enum(description="What became of one recipient of a bulk send.")
class BulkEmailRecipientStatus(Enum):
    QUEUED = "QUEUED"
    SUPPRESSED = "SUPPRESSED"
    INVALID = "INVALID"
    DUPLICATE = "DUPLICATE"


@strawberry.type(description="One recipient of a bulk send.")
class BulkEmailResult:
    email: str = strawberry.field(description="The address as given (normalized when valid).")
    status: BulkEmailRecipientStatus = strawberry.field(description="What became of it.")
    sent_email: SentEmail | None = strawberry.field(description="Its message, when QUEUED.")
    error: str | None = strawberry.field(description="Why not, when not QUEUED.")


@strawberry.type(description="The bulk send and each recipient's result, in the order given.")
class SendBulkEmailPayload:
    batch: EmailBatch = strawberry.field(description="The bulk send.")
    results: list[BulkEmailResult] = strawberry.field(description="One per recipient.")


@strawberry.input(description="An address to suppress.")
class AddEmailSuppressionInput:
    address: str = strawberry.field(description="The address.")
    detail: str = strawberry.field(default="", description="Why, for the record.")


@strawberry.type(description="The suppression.")
class AddEmailSuppressionPayload:
    suppression: EmailSuppression = strawberry.field(description="The entry (new or existing).")


@strawberry.input(description="The suppression to remove.")
class RemoveEmailSuppressionInput:
    id: relay.GlobalID = strawberry.field(description="Id of the suppression.")


@strawberry.type(description="The removed suppression: mail goes to the address again.")
class RemoveEmailSuppressionPayload:
    suppression: EmailSuppression = strawberry.field(description="The entry, now gone.")


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
        batch_id: Annotated[
            relay.GlobalID | None, strawberry.argument(description="Only this bulk send's.")
        ] = None,
        recipient: Annotated[
            str | None, strawberry.argument(description="Only messages to this address.")
        ] = None,
        first: First = None,
        after: After = None,
    ) -> Connection[SentEmail]:
        page = await mail.list_sent_emails(
            info.context,
            status=None if status is None else status.value,
            batch_id=None if batch_id is None else decode_id(batch_id, "EmailBatch"),
            recipient=recipient,
            first=first,
            after=after,
        )
        return Connection.of(page, SentEmail.from_row)

    @query(operation=mail.list_templates, description="The mail templates and their variables.")
    async def email_templates(self, info: Info) -> list[EmailTemplate]:
        return [EmailTemplate.of(t) for t in await mail.list_templates(info.context)]

    @query(
        operation=mail.preview_template,
        description="A template rendered with `variables` (samples fill the rest) and the "
        "organization as sender.",
    )
    async def preview_email_template(
        self,
        info: Info,
        name: Annotated[str, strawberry.argument(description="The template's name.")],
        variables: Annotated[JSON | None, strawberry.argument(description=_VARIABLES)] = None,
    ) -> EmailPreview:
        shown = await mail.preview_template(info.context, name, variables)
        return EmailPreview(subject=shown.subject, html=shown.html, text=shown.text)

    @query(
        operation=mail.list_suppressions,
        description="Addresses the organization's mail no longer goes to, newest first.",
    )
    async def email_suppressions(
        self,
        info: Info,
        address: Annotated[
            str | None, strawberry.argument(description="Only this address.")
        ] = None,
        first: First = None,
        after: After = None,
    ) -> Connection[EmailSuppression]:
        page = await mail.list_suppressions(info.context, first=first, after=after, address=address)
        return Connection.of(page, EmailSuppression.from_row)


@strawberry.type
class Mutation:
    @mutation(
        operation=mail.send_email,
        description="Queue a message (a template with variables, or a body) to up to 50 "
        "recipients; EMAIL_SUPPRESSED when one is on the suppression list.",
    )
    async def send_email(self, info: Info, input: SendEmailInput) -> SendEmailPayload:
        row = await mail.send_email(info.context, input.to_request())
        return SendEmailPayload(email=SentEmail.from_row(row))

    @mutation(
        operation=mail.send_bulk_email,
        description="Queue one message per recipient (up to 1,000), paced by the providers' "
        "limits; invalid, duplicate and suppressed recipients are reported, not sent.",
    )
    async def send_bulk_email(self, info: Info, input: SendBulkEmailInput) -> SendBulkEmailPayload:
        done = await mail.send_bulk_email(info.context, input.to_request())
        return SendBulkEmailPayload(
            batch=EmailBatch.from_row(done.batch),
            results=[
                BulkEmailResult(
                    email=r.email,
                    status=BulkEmailRecipientStatus(r.status),
                    sent_email=None if r.message is None else SentEmail.from_row(r.message),
                    error=r.error,
                )
                for r in done.results
            ],
        )

    @mutation(
        operation=mail.add_suppression,
        description="Suppress an address: the organization's mail no longer goes to it.",
    )
    async def add_email_suppression(
        self, info: Info, input: AddEmailSuppressionInput
    ) -> AddEmailSuppressionPayload:
        row = await mail.add_suppression(info.context, address=input.address, detail=input.detail)
        return AddEmailSuppressionPayload(suppression=EmailSuppression.from_row(row))

    @mutation(
        operation=mail.remove_suppression,
        description="Remove a suppression: mail goes to the address again.",
    )
    async def remove_email_suppression(
        self, info: Info, input: RemoveEmailSuppressionInput
    ) -> RemoveEmailSuppressionPayload:
        row = await mail.remove_suppression(
            info.context, suppression_id=decode_id(input.id, "EmailSuppression")
        )
        return RemoveEmailSuppressionPayload(suppression=EmailSuppression.from_row(row))


@strawberry.type
class Subscription:
    @subscription(
        operation=mail.email_status,
        description="A message now, then at each change of its status; completes once it "
        "is BOUNCED, COMPLAINED or FAILED.",
    )
    async def email_status(
        self,
        info: Info,
        id: Annotated[relay.GlobalID, strawberry.argument(description="Id of the message.")],
    ) -> AsyncGenerator[SentEmail, None]:
        async for row in mail.email_status(info.context, decode_id(id, "SentEmail")):
            yield SentEmail.from_row(row)

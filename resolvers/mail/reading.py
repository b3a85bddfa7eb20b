"""Reading the organization's mail: the `sentEmails` list and single messages."""

from __future__ import annotations

from kit.errors import BadUserInput
from models.mail import EmailBatch, EmailStatus, OutboundEmail
from models.tenancy import get_scoped, scoped
from resolvers.context import Context
from resolvers.operations import operation
from resolvers.pagination import Page, page_of


@operation("mail:read")
async def list_sent_emails(
    ctx: Context,
    *,
    status: str | None,
    first: int | None,
    after: str | None,
    batch_id: int | None = None,
    recipient: str | None = None,
) -> Page[OutboundEmail]:
    """The caller's organization's messages, newest first (optionally of one status, one
    bulk send, or one recipient)."""
    principal = ctx.require("mail:read")
    qs = scoped(OutboundEmail, principal.tenant_id)
    if status is not None:
        if status not in {s.value for s in EmailStatus}:
            raise BadUserInput("Unknown email status.", details={"status": "is not a status"})
        qs = qs.filter(status=status)
    if batch_id is not None:
        await get_scoped(EmailBatch, principal.tenant_id, batch_id)  # NOT_FOUND if foreign
        qs = qs.filter(batch_id=batch_id)
    if recipient:
        qs = qs.filter(recipient=recipient.strip().lower())
    return await page_of(ctx, qs, first=first, after=after)

"""Reading the organization's messages: the `messages` list."""

from __future__ import annotations

from kit.errors import BadUserInput
from kit.phones import e164
from models.messaging import Channel, Message, MessageStatus, SmsBatch
from models.tenancy import get_scoped, scoped
from resolvers.context import Context
from resolvers.operations import operation
from resolvers.pagination import Page, page_of


@operation("messaging:read")
async def list_messages(
    ctx: Context,
    *,
    first: int | None,
    after: str | None,
    channel: str | None = None,
    status: str | None = None,
    batch_id: int | None = None,
    number: str | None = None,
) -> Page[Message]:
    """The organization's SMS and WhatsApp messages (both ways), newest first."""
    principal = ctx.require("messaging:read")
    qs = scoped(Message, principal.tenant_id).filter(
        channel__in=[Channel.SMS.value, Channel.WHATSAPP.value]
    )
    if channel is not None:
        qs = qs.filter(channel=channel)
    if status is not None:
        if status not in {s.value for s in MessageStatus}:
            raise BadUserInput("Unknown message status.", details={"status": "is not a status"})
        qs = qs.filter(status=status)
    if batch_id is not None:
        await get_scoped(SmsBatch, principal.tenant_id, batch_id)  # NOT_FOUND if foreign
        qs = qs.filter(batch_id=batch_id)
    if number:
        qs = qs.filter(recipient=e164(number, "number"))
    return await page_of(ctx, qs, first=first, after=after)

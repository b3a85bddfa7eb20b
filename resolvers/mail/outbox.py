"""Queueing: every message is an `OutboundEmail` row and a send job, written in the
caller's transaction, with an `email.queued` event; nothing is sent here."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from kit.settings import Settings
from kit.text import header_safe
from models.mail import OutboundEmail
from models.tenants import Tenant
from resolvers.events import emit, global_id
from resolvers.jobs import enqueue
from resolvers.mail.compose import Recipient, sender_address
from resolvers.mail.templates import Rendered

SEND_JOB = "mail.send"


def new_message_id(domain: str) -> str:
    return f"<{uuid.uuid4().hex}@{domain or 'switchboard.localhost'}>"


def event_data(email: OutboundEmail) -> dict[str, object]:
    """What `email.*` events say about a message (never its body)."""
    return {
        "email_id": global_id("SentEmail", email.id),
        "kind": email.kind,
        "recipient": email.recipient,
        "status": email.status,
    }


async def organization_name(tenant_id: int, connection: BaseDBAsyncClient | None = None) -> str:
    tenant = await Tenant.filter(id=tenant_id).using_db(connection).only("name").first()
    return tenant.name if tenant is not None else ""


async def queue(
    *,
    settings: Settings,
    tenant_id: int,
    kind: str,
    to: Recipient | Sequence[Recipient],
    body: Rendered,
    cc: Sequence[Recipient] = (),
    bcc: Sequence[Recipient] = (),
    reply_to: Recipient | None = None,
    organization: str | None = None,
    connection: BaseDBAsyncClient | None = None,
) -> OutboundEmail:
    """Write the message, its send job and its `email.queued` event; with `connection`, in
    the caller's transaction. The sender is the organization's name at EMAIL_FROM."""
    if connection is None:
        async with in_transaction() as conn:
            return await queue(
                settings=settings,
                tenant_id=tenant_id,
                kind=kind,
                to=to,
                body=body,
                cc=cc,
                bcc=bcc,
                reply_to=reply_to,
                organization=organization,
                connection=conn,
            )
    first, *more = [to] if isinstance(to, Recipient) else list(to)
    if organization is None:
        organization = await organization_name(tenant_id, connection)
    sender = sender_address(settings, organization)
    email = await OutboundEmail.create(
        tenant_id=tenant_id,
        kind=kind,
        recipient=first.email,
        recipient_name=first.name,
        to_more=[r.as_json() for r in more],
        cc=[r.as_json() for r in cc],
        bcc=[r.as_json() for r in bcc],
        reply_to=str(reply_to) if reply_to else "",
        sender=str(sender),
        subject=header_safe(body.subject)[:300],
        html=body.html,
        text=body.text,
        message_id=new_message_id(sender.domain),
        using_db=connection,
    )
    await enqueue(SEND_JOB, {"email_id": email.id}, tenant_id=tenant_id, connection=connection)
    await emit(tenant_id, "email.queued", event_data(email), connection=connection)
    return email

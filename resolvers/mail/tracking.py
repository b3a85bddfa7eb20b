"""Where each message is: status changes from our own sends and from the providers'
delivery webhooks, in one order, each an `email.<status>` event.

Statuses only move forward (`RANK`): a DELIVERED never goes back to SENT when Resend's
`email.sent` arrives after its `email.delivered`; a DEFERRED after a DELIVERED is
ignored. The update is conditional in the store (`status IN (lower ranks)`), so two
events racing for one message cannot move it backwards either.

Delivery webhooks arrive through the inbox (resolvers/webhooks_in.py: verified, stored
once per event id, processed by a job): Resend's (Svix-signed) and SendGrid's Event
Webhook (ECDSA-signed batches). An event is applied to the message it names — of the
source's tenant only, when it came through a tenant's webhook source. Hard bounces and
complaints put the address on the tenant's suppression list. An event that names a
message whose send has not been recorded yet (the webhook outran our own commit) is
retried by the inbox job rather than lost.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncGenerator
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from kit.errors import NotFound
from models.mail import EmailStatus, OutboundEmail, SuppressionReason
from models.webhooks import WebhookInbox
from resolvers.context import Context
from resolvers.events import follow, global_id, move_forward
from resolvers.mail.chain import SENDGRID_EMAIL_ARG
from resolvers.mail.outbox import event_data
from resolvers.mail.suppression import suppress
from resolvers.operations import operation
from resolvers.webhooks_in import inbox_handler

log = logging.getLogger("switchboard.mail")

RANK: dict[str, int] = {
    s.value: i
    for i, s in enumerate(
        (
            EmailStatus.QUEUED,
            EmailStatus.SENT,
            EmailStatus.DEFERRED,
            EmailStatus.DELIVERED,
            EmailStatus.OPENED,
            EmailStatus.CLICKED,
            EmailStatus.BOUNCED,
            EmailStatus.COMPLAINED,
            EmailStatus.FAILED,
        )
    )
}
# Nothing more will happen to a message in these states: `emailStatus` completes.
FINAL = frozenset(
    {EmailStatus.BOUNCED.value, EmailStatus.COMPLAINED.value, EmailStatus.FAILED.value}
)
# How long an event may name a message we have no record of before it is dropped: the
# provider's webhook can outrun the commit of our own send.
UNKNOWN_GRACE = dt.timedelta(minutes=10)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def advance(
    email: OutboundEmail,
    status: EmailStatus,
    *,
    connection: BaseDBAsyncClient,
    **fields: Any,
) -> bool:
    """Move `email` to `status` (and set `fields`) unless it is there or further already;
    emit `email.<status>`. True when it moved."""
    at = now()
    values: dict[str, Any] = {"status_changed_at": at, "updated_at": at}
    if status == EmailStatus.DELIVERED:
        values["delivered_at"] = at
    values.update(fields)
    return await move_forward(
        email,
        status.value,
        RANK,
        values,
        event_type=f"email.{status.value.lower()}",
        event_data=event_data,
        connection=connection,
    )


# Provider events ----------------------------------------------------------------------

RESEND_STATUS = {
    "email.sent": EmailStatus.SENT,
    "email.delivery_delayed": EmailStatus.DEFERRED,
    "email.delivered": EmailStatus.DELIVERED,
    "email.opened": EmailStatus.OPENED,
    "email.clicked": EmailStatus.CLICKED,
    "email.bounced": EmailStatus.BOUNCED,
    "email.complained": EmailStatus.COMPLAINED,
    "email.failed": EmailStatus.FAILED,
}
SENDGRID_STATUS = {
    "processed": EmailStatus.SENT,
    "deferred": EmailStatus.DEFERRED,
    "delivered": EmailStatus.DELIVERED,
    "open": EmailStatus.OPENED,
    "click": EmailStatus.CLICKED,
    "bounce": EmailStatus.BOUNCED,
    "dropped": EmailStatus.FAILED,
    "spamreport": EmailStatus.COMPLAINED,
}
SENDGRID_UNSUBSCRIBES = {"unsubscribe", "group_unsubscribe"}


class NotYetRecorded(Exception):
    """The event names a message whose send we have not recorded yet: try again later."""


async def apply_provider_event(
    email: OutboundEmail,
    status: EmailStatus,
    *,
    connection: BaseDBAsyncClient,
    hard_bounce: bool = True,
    detail: str = "",
) -> None:
    """One delivery event for `email`: its status, and suppression when it calls for it."""
    fields: dict[str, Any] = {}
    if status in (EmailStatus.BOUNCED, EmailStatus.FAILED) and detail:
        fields["last_error"] = detail[:2000]
    await advance(email, status, connection=connection, **fields)
    reason = None
    if status == EmailStatus.BOUNCED and hard_bounce:
        reason = SuppressionReason.BOUNCED
    elif status == EmailStatus.COMPLAINED:
        reason = SuppressionReason.COMPLAINED
    if reason is not None:
        for address in email.addresses():
            await suppress(
                email.tenant_id,
                address,
                reason,
                detail=detail,
                email_id=email.id,
                connection=connection,
            )


def _received_recently(event: WebhookInbox) -> bool:
    created = event.created_at or now()
    return now() - created < UNKNOWN_GRACE


async def _find(
    event: WebhookInbox, connection: BaseDBAsyncClient, **where: Any
) -> OutboundEmail | None:
    qs = OutboundEmail.filter(**where).using_db(connection)
    if event.tenant_id is not None:  # a tenant's own webhook source: its messages only
        qs = qs.filter(tenant_id=event.tenant_id)
    found = await qs.select_for_update().first()
    if found is None and _received_recently(event):
        raise NotYetRecorded(f"no message for {where}")
    return found


@inbox_handler("resend", "email.*")
async def on_resend_event(event: WebhookInbox, connection: BaseDBAsyncClient) -> None:
    status = RESEND_STATUS.get(event.event_type)
    data = event.payload.get("data") if isinstance(event.payload, dict) else None
    if status is None or not isinstance(data, dict):
        return
    provider_id = data.get("email_id")
    if not isinstance(provider_id, str) or not provider_id:
        return
    email = await _find(
        event, connection, provider_message_id=provider_id[:255], provider__startswith="resend"
    )
    if email is None:
        log.info("a Resend event for an unknown message", extra={"event_id": event.event_id})
        return
    raw_bounce = data.get("bounce")
    bounce: dict[str, Any] = raw_bounce if isinstance(raw_bounce, dict) else {}
    # Resend: bounce.type "Permanent" (hard) or "Transient"/"Undetermined" (soft).
    hard = str(bounce.get("type", "Permanent")).lower() not in {"transient", "undetermined"}
    detail = str(bounce.get("message") or data.get("failed") or "")[:500]
    await apply_provider_event(
        email, status, connection=connection, hard_bounce=hard, detail=detail
    )


def _sendgrid_row_id(item: dict[str, Any]) -> int | None:
    raw = item.get(SENDGRID_EMAIL_ARG)
    if isinstance(raw, str) and raw.isdigit() and len(raw) < 19:
        return int(raw)
    return None


@inbox_handler("sendgrid")
async def on_sendgrid_events(event: WebhookInbox, connection: BaseDBAsyncClient) -> None:
    """SendGrid posts a batch: each item is one message's event."""
    items = event.payload if isinstance(event.payload, list) else []
    for item in items[:1000]:
        if not isinstance(item, dict):
            continue
        kind = str(item.get("event", ""))
        status = SENDGRID_STATUS.get(kind)
        if status is None and kind not in SENDGRID_UNSUBSCRIBES:
            continue
        row_id = _sendgrid_row_id(item)
        sg_id = str(item.get("sg_message_id") or "").split(".", 1)[0][:255]
        if row_id is not None:
            email = await _find(event, connection, id=row_id, provider__startswith="sendgrid")
        elif sg_id:
            email = await _find(
                event, connection, provider_message_id=sg_id, provider__startswith="sendgrid"
            )
        else:
            continue
        if email is None:
            continue
        if kind in SENDGRID_UNSUBSCRIBES:
            address = str(item.get("email") or email.recipient)
            if address.lower() in {a.lower() for a in email.addresses()}:
                await suppress(
                    email.tenant_id,
                    address,
                    SuppressionReason.UNSUBSCRIBED,
                    detail="SendGrid unsubscribe",
                    email_id=email.id,
                    connection=connection,
                )
            continue
        assert status is not None
        hard = not (kind == "bounce" and item.get("type") == "blocked")
        detail = str(item.get("reason") or item.get("response") or "")[:500]
        await apply_provider_event(
            email, status, connection=connection, hard_bounce=hard, detail=detail
        )


# The emailStatus subscription -----------------------------------------------------------


@operation("mail:read")
async def email_status(ctx: Context, email_id: int) -> AsyncGenerator[OutboundEmail, None]:
    """The message now, then again at each change; ends when nothing more can happen."""
    principal = ctx.require("mail:read")
    tenant_id = principal.tenant_id
    if not await OutboundEmail.filter(id=email_id, tenant_id=tenant_id).exists():
        raise NotFound("SentEmail not found.")  # another tenant's id, before anything
    wanted = global_id("SentEmail", email_id)
    stream = follow(
        tenant_id,
        ["email.*"],
        about=lambda event: event.data.get("email_id") == wanted,
        load=lambda: OutboundEmail.filter(id=email_id, tenant_id=tenant_id).first(),
        state=lambda row: (row.status, row.attempts),
        final=lambda row: row.status in FINAL,
    )
    try:
        async for row in stream:
            yield row
    finally:
        await stream.aclose()

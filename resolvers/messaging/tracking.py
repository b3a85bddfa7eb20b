"""Where each message is: status changes from our own sends and from Twilio's signed
status callbacks, in one order, each a `message.<status>` event.

Statuses only move forward (`RANK`): QUEUED → SENDING → ACCEPTED → SENT → DELIVERED →
READ → UNDELIVERED → FAILED. A `sent` callback that arrives after `delivered` changes
nothing; the update is conditional in the store (`status IN (lower ranks)`), so two
callbacks racing for one message cannot move it backwards either.

Callbacks arrive through the inbox (resolvers/webhooks_in.py: verified against the public
URL, stored once per message and status, processed by a job). A callback is applied to
the message it names — of the source's tenant only, when it came through a tenant's
webhook source. One that names a message whose send has not been recorded yet (Twilio
outran our commit) is retried by the inbox job rather than lost. A 21610 error code
(the recipient unsubscribed at Twilio) puts the number on the tenant's opt-out list.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncGenerator
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from kit.errors import NotFound
from models.messaging import Channel, Direction, Message, MessageStatus, OptOutReason
from models.webhooks import WebhookInbox
from providers import twilio
from resolvers.context import Context
from resolvers.events import follow, global_id, move_forward
from resolvers.messaging.optout import opt_out
from resolvers.messaging.outbox import event_data
from resolvers.operations import operation
from resolvers.webhooks_in import inbox_handler

log = logging.getLogger("switchboard.messaging")

RANK: dict[str, int] = {
    s.value: i
    for i, s in enumerate(
        (
            MessageStatus.QUEUED,
            MessageStatus.SENDING,
            MessageStatus.ACCEPTED,
            MessageStatus.SENT,
            MessageStatus.DELIVERED,
            MessageStatus.READ,
            MessageStatus.UNDELIVERED,
            MessageStatus.FAILED,
        )
    )
}
# Nothing more will happen to a message in these states: `messageStatus` completes. An
# SMS ends at DELIVERED too (only WhatsApp reports reading).
FINAL = frozenset(
    {
        MessageStatus.READ.value,
        MessageStatus.UNDELIVERED.value,
        MessageStatus.FAILED.value,
        MessageStatus.RECEIVED.value,
    }
)
TWILIO_STATUS = {
    "queued": MessageStatus.ACCEPTED,
    "accepted": MessageStatus.ACCEPTED,
    "scheduled": MessageStatus.ACCEPTED,
    "sending": MessageStatus.ACCEPTED,
    "sent": MessageStatus.SENT,
    "delivered": MessageStatus.DELIVERED,
    "read": MessageStatus.READ,
    "undelivered": MessageStatus.UNDELIVERED,
    "failed": MessageStatus.FAILED,
    "canceled": MessageStatus.FAILED,
}
UNKNOWN_GRACE = dt.timedelta(minutes=10)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def is_final(message: Message) -> bool:
    return message.status in FINAL or (
        message.status == MessageStatus.DELIVERED.value and message.channel == Channel.SMS.value
    )


async def advance(
    message: Message,
    status: MessageStatus,
    *,
    connection: BaseDBAsyncClient,
    **fields: Any,
) -> bool:
    """Move `message` to `status` (and set `fields`) unless it is there or further
    already; emit `message.<status>`. True when it moved."""
    at = now()
    values: dict[str, Any] = {"status_changed_at": at, "updated_at": at}
    if status == MessageStatus.DELIVERED:
        values["delivered_at"] = at
    values.update(fields)
    return await move_forward(
        message,
        status.value,
        RANK,
        values,
        event_type=f"message.{status.value.lower()}",
        event_data=event_data,
        connection=connection,
    )


class NotYetRecorded(Exception):
    """The callback names a message whose send we have not recorded yet: try again later."""


def _received_recently(event: WebhookInbox) -> bool:
    created = event.created_at or now()
    return now() - created < UNKNOWN_GRACE


@inbox_handler("twilio", "message.status")
async def on_status(event: WebhookInbox, connection: BaseDBAsyncClient) -> None:
    payload = event.payload if isinstance(event.payload, dict) else {}
    status = TWILIO_STATUS.get(str(payload.get("MessageStatus", "")).lower())
    sid = str(payload.get("MessageSid") or "")[:64]
    if status is None or not sid:
        return
    qs = Message.filter(provider_sid=sid, direction=Direction.OUTBOUND.value).using_db(connection)
    if event.tenant_id is not None:  # a tenant's own webhook source: its messages only
        qs = qs.filter(tenant_id=event.tenant_id)
    message = await qs.select_for_update().first()
    if message is None:
        if _received_recently(event):
            raise NotYetRecorded(f"no message {sid}")
        log.info("a Twilio callback for an unknown message", extra={"event_id": event.event_id})
        return
    fields: dict[str, Any] = {}
    code = str(payload.get("ErrorCode") or "")[:20]
    if code and status in (MessageStatus.UNDELIVERED, MessageStatus.FAILED):
        fields["error_code"] = code
        fields["last_error"] = f"Twilio error {code}"
    if status == MessageStatus.SENT:
        fields["sent_at"] = now()
    await advance(message, status, connection=connection, **fields)
    if code == twilio.UNSUBSCRIBED:
        await opt_out(
            message.tenant_id,
            message.recipient,
            OptOutReason.PROVIDER,
            detail="Twilio 21610: unsubscribed recipient",
            connection=connection,
        )


# The messageStatus subscription ---------------------------------------------------------


@operation("messaging:read")
async def message_status(ctx: Context, message_id: int) -> AsyncGenerator[Message, None]:
    """The message now, then again at each change; ends when nothing more can happen."""
    principal = ctx.require("messaging:read")
    tenant_id = principal.tenant_id
    if not await Message.filter(id=message_id, tenant_id=tenant_id).exists():
        raise NotFound("Message not found.")  # another tenant's id, before anything
    wanted = global_id("Message", message_id)
    stream = follow(
        tenant_id,
        ["message.*"],
        about=lambda event: event.data.get("message_id") == wanted,
        load=lambda: Message.filter(id=message_id, tenant_id=tenant_id).first(),
        state=lambda row: (row.status, row.attempts),
        final=is_final,
    )
    try:
        async for row in stream:
            yield row
    finally:
        await stream.aclose()

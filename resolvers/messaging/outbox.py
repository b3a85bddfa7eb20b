"""Queueing: every outgoing message is a `Message` row and a send job, written in the
caller's transaction with a `message.queued` event; nothing is sent here."""

from __future__ import annotations

import json
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from kit.settings import Settings
from kit.vault import vault_for
from models.messaging import Channel, Direction, Message
from resolvers.events import emit, global_id
from resolvers.jobs import enqueue

SEND_JOB = "messaging.send"
# A message whose text is a secret (a verification code) is stored sealed with the vault
# until it is sent, then replaced by this.
SEALED_KIND = "verification"
REDACTED = "[verification code]"
BATCH_JOB = "messaging.send_batch"


def seal(settings: Settings, text: str, code: str) -> str:
    """A verification message's text and code, sealed with the vault."""
    return vault_for(settings.vault_keys).encrypt(json.dumps({"text": text, "code": code}))


def _opened(settings: Settings, message: Message) -> dict[str, str]:
    if message.kind == SEALED_KIND and message.body and message.body != REDACTED:
        opened = json.loads(vault_for(settings.vault_keys).decrypt(message.body))
        return {str(k): str(v) for k, v in opened.items()}
    return {"text": message.body}


def text_of(settings: Settings, message: Message) -> str:
    """The text to send (a sealed one opened)."""
    return _opened(settings, message).get("text", "")


def code_of(settings: Settings, message: Message) -> str | None:
    """A sealed verification message's code (for a WhatsApp template's variable)."""
    return _opened(settings, message).get("code")


def shown_body(message: Message) -> str:
    """The text the API shows: never a sealed one."""
    return REDACTED if message.kind == SEALED_KIND else message.body


def event_data(message: Message) -> dict[str, object]:
    """What `message.*` events say about a message (never its body)."""
    data: dict[str, object] = {
        "message_id": global_id("Message", message.id),
        "channel": message.channel,
        "direction": message.direction,
        "kind": message.kind,
        "status": message.status,
    }
    if message.error_code:
        data["error_code"] = message.error_code
    if message.conversation_id is not None:
        data["conversation_id"] = global_id("InboxConversation", message.conversation_id)
    return data


async def queue(
    *,
    tenant_id: int,
    channel: Channel,
    kind: str,
    recipient: str,
    body: str = "",
    media_urls: list[str] | None = None,
    content_sid: str | None = None,
    content_variables: dict[str, Any] | None = None,
    author_id: int | None = None,
    conversation_id: int | None = None,
    connection: BaseDBAsyncClient | None = None,
) -> Message:
    """Write the message, its send job and its `message.queued` event; with `connection`,
    in the caller's transaction."""
    if connection is None:
        async with in_transaction() as conn:
            return await queue(
                tenant_id=tenant_id,
                channel=channel,
                kind=kind,
                recipient=recipient,
                body=body,
                media_urls=media_urls,
                content_sid=content_sid,
                content_variables=content_variables,
                author_id=author_id,
                conversation_id=conversation_id,
                connection=conn,
            )
    message = await Message.create(
        tenant_id=tenant_id,
        direction=Direction.OUTBOUND.value,
        channel=channel.value,
        kind=kind,
        recipient=recipient,
        body=body,
        media_urls=list(media_urls or []),
        content_sid=content_sid,
        content_variables=dict(content_variables or {}),
        author_id=author_id,
        conversation_id=conversation_id,
        using_db=connection,
    )
    await enqueue(SEND_JOB, {"message_id": message.id}, tenant_id=tenant_id, connection=connection)
    await emit(tenant_id, "message.queued", event_data(message), connection=connection)
    return message

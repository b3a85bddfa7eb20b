"""Conversations: who owns one (a member, or an API key on its own), the history a completion
continues, and the reads (lists, node lookups, messages). Every read goes through
`owner_fields`, so only the caller's own conversations are ever found. A read first waits
for this process's prompt writes of what it looks for (`PendingPrompts`): a stream names
its conversation before its rows are committed, and the client may ask for it at once."""

from __future__ import annotations

from typing import Any

from tortoise.expressions import Subquery

from kit.errors import NotFound
from kit.security import Principal
from models.ai import ChatMessage, Conversation
from models.tenancy import scoped
from resolvers.ai.state import ai_state
from resolvers.context import Context
from resolvers.operations import operation
from resolvers.pagination import Order, Page, page_of

HISTORY_MESSAGES = 50


def owner_fields(principal: Principal) -> dict[str, Any]:
    """A conversation belongs to the member, or to the API key alone (a key never sees a
    member's conversations, nor the other way round)."""
    if principal.api_key_id is not None:
        return {"owner_id": None, "api_key_id": principal.api_key_id}
    return {"owner_id": principal.user_id, "api_key_id": None}


def _conversations(principal: Principal) -> Any:
    return scoped(Conversation, principal.tenant_id).filter(**owner_fields(principal))


async def own_conversation(
    ctx: Context, principal: Principal, conversation_id: int
) -> Conversation:
    await ai_state(ctx.services).pending.wait(conversations=[conversation_id])
    conversation = await _conversations(principal).filter(id=conversation_id).first()
    if conversation is None:
        raise NotFound("Conversation not found.")
    return conversation


async def history_of(
    principal: Principal, conversation: Conversation
) -> tuple[list[dict[str, str]], int]:
    """The text of the conversation's last HISTORY_MESSAGES messages, oldest first, as sent
    upstream, and the newest message's id (the next messages' ids must be above it)."""
    rows = (
        await scoped(ChatMessage, principal.tenant_id)
        .filter(conversation_id=conversation.id)
        .order_by("-id")
        .limit(HISTORY_MESSAGES)
    )
    history = [
        {"role": r.role.value.lower(), "content": r.content} for r in reversed(rows) if r.content
    ]
    return history, rows[0].id if rows else 0


@operation("ai:use")
async def list_conversations(ctx: Context, *, first: int | None, after: str | None) -> Page:
    principal = ctx.require_principal()
    await ai_state(ctx.services).pending.wait(owner=principal.key)
    return await page_of(ctx, _conversations(principal), first=first, after=after)


@operation("ai:use")
async def get_conversation(ctx: Context, conversation_id: int) -> Conversation:
    principal = ctx.require_principal()
    return await own_conversation(ctx, principal, conversation_id)


async def conversations_by_ids(ctx: Context, ids: list[int]) -> list[Conversation | None]:
    """Node lookups: only the caller's own conversations are found."""
    principal = ctx.require("ai:use")
    await ai_state(ctx.services).pending.wait(conversations=ids)
    rows = {c.id: c for c in await _conversations(principal).filter(id__in=ids)}
    return [rows.get(i) for i in ids]


async def messages_by_ids(ctx: Context, ids: list[int]) -> list[ChatMessage | None]:
    principal = ctx.require("ai:use")
    await ai_state(ctx.services).pending.wait(messages=ids)
    own = _conversations(principal).values_list("id", flat=True)
    rows = {
        m.id: m
        for m in await scoped(ChatMessage, principal.tenant_id).filter(
            id__in=ids, conversation_id__in=Subquery(own)
        )
    }
    return [rows.get(i) for i in ids]


async def list_messages(
    ctx: Context, conversation: Conversation, *, first: int | None, after: str | None
) -> Page:
    principal = ctx.require("ai:use")
    if conversation.tenant_id != principal.tenant_id:
        raise NotFound("Conversation not found.")
    await ai_state(ctx.services).pending.wait(conversations=[conversation.id])
    return await page_of(
        ctx,
        scoped(ChatMessage, principal.tenant_id).filter(conversation_id=conversation.id),
        first=first,
        after=after,
        order=Order("id"),
    )

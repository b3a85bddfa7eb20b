"""The prompt's rows (the conversation, the caller's messages and the answer's row),
stored while the answer is on its way so that the database write does not delay the
first token, and removed again when the vendor refuses the request."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from tortoise.transactions import in_transaction

from models.ai import ChatMessage, Conversation, MessageRole, MessageStatus
from resolvers.ai.conversations import owner_fields
from resolvers.ai.state import ai_state
from resolvers.ai.types import Plan
from resolvers.context import Context
from resolvers.group_commit import on_running_loop


async def store_prompt(ctx: Context, plan: Plan) -> tuple[Conversation, ChatMessage]:
    """The conversation (new or touched), the caller's messages and the answer's row, in
    one transaction, shared with the other prompts being stored at the same moment
    (a burst of streams starting at once commits a few times, not once each)."""
    state = ai_state(ctx.services)
    state.prompts = writer = on_running_loop(state.prompts, _write_prompts)
    result: tuple[Conversation, ChatMessage] = await writer(plan)
    return result


async def _write_prompts(plans: list[Plan]) -> list[tuple[Conversation, ChatMessage]]:
    written = []
    async with in_transaction() as conn:
        for plan in plans:
            written.append(await _write_prompt(plan, conn))
    # Only once committed: `undo` removes what exists.
    for plan, (_, _, created) in zip(plans, written, strict=True):
        plan.created.extend(created)
    return [(conversation, answer) for conversation, answer, _ in written]


async def _write_prompt(plan: Plan, conn: Any) -> tuple[Conversation, ChatMessage, list[Any]]:
    tenant_id = plan.principal.tenant_id
    created: list[Any] = []
    conversation = plan.conversation
    if conversation is None:
        conversation = await Conversation.create(
            tenant_id=tenant_id,
            title=plan.title,
            model=plan.model,
            using_db=conn,
            **owner_fields(plan.principal),
        )
        created.append(conversation)
    else:
        conversation.model = plan.model
        await conversation.save(update_fields=["model", "updated_at"], using_db=conn)
    for m in plan.request_messages:
        created.append(
            await ChatMessage.create(
                tenant_id=tenant_id,
                conversation_id=conversation.id,
                role=MessageRole(m["role"].upper()),
                content=m["content"],
                status=MessageStatus.COMPLETE,
                using_db=conn,
            )
        )
    answer = await ChatMessage.create(
        tenant_id=tenant_id,
        conversation_id=conversation.id,
        role=MessageRole.ASSISTANT,
        content="",
        status=MessageStatus.STREAMING,
        model=plan.model,
        using_db=conn,
    )
    created.append(answer)
    return conversation, answer, created


async def undo(plan: Plan, stored: asyncio.Task[Any]) -> None:
    """The vendor refused before answering: remove what this call stored."""
    with contextlib.suppress(Exception):
        await stored
    if plan.conversation is None:
        for row in plan.created:
            if isinstance(row, Conversation):
                await row.delete()  # cascades to its messages
                return
    for row in plan.created:
        if isinstance(row, ChatMessage):
            await row.delete()

"""The prompt's rows (the conversation, the caller's messages and the answer's row),
stored while the answer is on its way so that the database write does not delay the
first token, and removed again when the vendor refuses the request.

Their ids are the gateway's (`assign_ids`, from the process's stocks, `models.ids`), so
a stream names its conversation and answer in its first event without waiting for the
write; reads in this process wait for a write still under way (`PendingPrompts`)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from tortoise.transactions import in_transaction

from models.ai import ChatMessage, Conversation, MessageRole, MessageStatus
from models.ids import for_loop
from resolvers.ai.conversations import owner_fields
from resolvers.ai.state import PendingPrompt, ai_state
from resolvers.ai.types import Plan
from resolvers.context import Context
from resolvers.group_commit import on_running_loop


def prefetch_ids(ctx: Context, plan: Plan) -> None:
    """Have the ids `assign_ids` will take ready by then (a refill, if one is needed,
    runs while the caller does its other work)."""
    state = ai_state(ctx.services)
    if plan.conversation is None:
        state.conversation_ids = for_loop(state.conversation_ids, Conversation)
        state.conversation_ids.prefetch(1)
    state.message_ids = for_loop(state.message_ids, ChatMessage)
    state.message_ids.prefetch(len(plan.request_messages) + 1)


async def assign_ids(ctx: Context, plan: Plan) -> None:
    """Name the prompt's rows: the conversation (its own id when it exists), the
    caller's messages and the answer, in that order, after the conversation's newest."""
    if plan.answer_id is not None:
        return
    state = ai_state(ctx.services)
    if plan.conversation is None:
        state.conversation_ids = blocks = for_loop(state.conversation_ids, Conversation)
        [plan.conversation_id] = await blocks.take(1)
    else:
        plan.conversation_id = plan.conversation.id
    state.message_ids = blocks = for_loop(state.message_ids, ChatMessage)
    *plan.message_ids, plan.answer_id = await blocks.take(
        len(plan.request_messages) + 1, above=plan.newest_message_id
    )


async def store_prompt(ctx: Context, plan: Plan) -> tuple[Conversation, ChatMessage]:
    """The conversation (new or touched), the caller's messages and the answer's row, in
    one transaction, shared with the other prompts being stored at the same moment
    (a burst of streams starting at once commits a few times, not once each)."""
    await assign_ids(ctx, plan)
    state = ai_state(ctx.services)
    state.prompts = writer = on_running_loop(state.prompts, _write_prompts)
    result: tuple[Conversation, ChatMessage] = await writer(plan)
    return result


def start_storing(
    ctx: Context, plan: Plan, *, after: asyncio.Event | None = None
) -> asyncio.Task[tuple[Conversation, ChatMessage]]:
    """`store_prompt` as a task (once `after` is set), which this process's reads of the
    rows wait for from now on (the plan's ids are assigned already)."""
    assert plan.conversation_id is not None and plan.answer_id is not None
    stored = asyncio.create_task(_store_after(ctx, plan, after))
    ai_state(ctx.services).pending.add(
        stored,
        PendingPrompt(
            plan.principal.key,
            plan.conversation_id,
            frozenset([*plan.message_ids, plan.answer_id]),
            after,
        ),
    )
    return stored


async def _store_after(
    ctx: Context, plan: Plan, after: asyncio.Event | None
) -> tuple[Conversation, ChatMessage]:
    if after is not None:
        await after.wait()
    return await store_prompt(ctx, plan)


async def _write_prompts(plans: list[Plan]) -> list[tuple[Conversation, ChatMessage]]:
    """Every prompt of the batch in one transaction: the ids are known, so one INSERT
    for the new conversations and one for all the messages, whatever their number."""
    written = [_rows(plan) for plan in plans]
    async with in_transaction() as conn:
        new = [conversation for plan, (conversation, _) in zip(plans, written, strict=True)
               if plan.conversation is None]  # fmt: skip
        if new:
            await Conversation.bulk_create(new, using_db=conn)
        for plan in plans:
            if plan.conversation is not None:
                plan.conversation.model = plan.model
                await plan.conversation.save(update_fields=["model", "updated_at"], using_db=conn)
        rows = [message for _, messages in written for message in messages]
        await ChatMessage.bulk_create(rows, using_db=conn)
    # Only once committed: `undo` removes what exists.
    results = []
    for plan, (conversation, messages) in zip(plans, written, strict=True):
        if plan.conversation is None:
            plan.created.append(conversation)
        plan.created.extend(messages)
        results.append((conversation, messages[-1]))
    return results


def _rows(plan: Plan) -> tuple[Conversation, list[ChatMessage]]:
    tenant_id = plan.principal.tenant_id
    conversation = plan.conversation or Conversation(
        id=plan.conversation_id,
        tenant_id=tenant_id,
        title=plan.title,
        model=plan.model,
        **owner_fields(plan.principal),
    )
    messages = [
        ChatMessage(
            id=message_id,
            tenant_id=tenant_id,
            conversation_id=plan.conversation_id,
            role=MessageRole(m["role"].upper()),
            content=m["content"],
            status=MessageStatus.COMPLETE,
        )
        for message_id, m in zip(plan.message_ids, plan.request_messages, strict=True)
    ]
    messages.append(
        ChatMessage(
            id=plan.answer_id,
            tenant_id=tenant_id,
            conversation_id=plan.conversation_id,
            role=MessageRole.ASSISTANT,
            content="",
            status=MessageStatus.STREAMING,
            model=plan.model,
        )
    )
    return conversation, messages


async def undo(plan: Plan, stored: asyncio.Task[Any]) -> None:
    """The vendor refused before answering: remove what this call stored."""
    with contextlib.suppress(Exception):
        await stored
    if any(isinstance(row, Conversation) for row in plan.created):
        await Conversation.filter(id=plan.conversation_id).delete()  # cascades to its messages
        return
    ids = [row.id for row in plan.created if isinstance(row, ChatMessage)]
    if ids:
        await ChatMessage.filter(id__in=ids).delete()

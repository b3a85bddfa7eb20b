"""Plain (not streamed) completions: the prompt is stored while the request is out, and
removed again when the vendor refuses it."""

from __future__ import annotations

import asyncio
import time

from models.ai import MessageStatus, UsageOutcome
from providers.errors import ProviderError
from providers.openai import Completion
from resolvers.ai.ledger import bill, usage_of
from resolvers.ai.plan import make_plan
from resolvers.ai.prices import estimate_tokens
from resolvers.ai.prompts import assign_ids, start_storing, undo
from resolvers.ai.quota import release_unbilled
from resolvers.ai.types import ChatRequest, CompletionResult, Plan
from resolvers.ai.vendor import gateway_error, provider
from resolvers.context import Context
from resolvers.operations import operation


@operation("ai:use")
async def create_chat_completion(ctx: Context, request: ChatRequest) -> CompletionResult:
    principal = ctx.require_principal()
    plan = await make_plan(ctx, principal, request, "chat")
    return await complete(ctx, plan)


async def complete(ctx: Context, plan: Plan) -> CompletionResult:
    """Run a planned completion; its reservation is released if it ends without a bill.
    Shared with the CRM task summary (`resolvers.tasks`)."""
    try:
        return await _complete_reserved(ctx, plan)
    finally:
        await asyncio.shield(release_unbilled(plan))


async def _complete_reserved(ctx: Context, plan: Plan) -> CompletionResult:
    client = provider(ctx.services)
    started = time.perf_counter()
    await assign_ids(ctx, plan)
    stored = start_storing(ctx, plan)
    try:
        result: Completion = await client.chat(
            plan.cred,
            messages=plan.messages,
            model=plan.model,
            temperature=plan.temperature,
            max_tokens=plan.max_tokens,
            user=plan.vendor_user,
        )
    except ProviderError as error:
        await asyncio.shield(undo(plan, stored))
        usage = usage_of(ctx, plan, None, 0, opened=False)
        await bill(
            ctx, plan, conversation_id=None, usage=usage, outcome=UsageOutcome.FAILED,
            latency=time.perf_counter() - started, first_token=None,
            error_code=error.vendor_code,
        )  # fmt: skip
        raise gateway_error(error) from None
    except BaseException:
        await asyncio.shield(undo(plan, stored))
        raise
    conversation, answer = await stored
    latency = time.perf_counter() - started
    vendor = (result.prompt_tokens, result.completion_tokens) if result.prompt_tokens else None
    usage = usage_of(ctx, plan, vendor, estimate_tokens(result.text), opened=True)
    answer.content = result.text
    answer.status = MessageStatus.COMPLETE
    answer.finish_reason = result.finish_reason
    await bill(
        ctx, plan, conversation_id=conversation.id, usage=usage,
        outcome=UsageOutcome.COMPLETE, latency=latency, first_token=latency, answer=answer,
    )  # fmt: skip
    return CompletionResult(conversation, answer, usage, plan.citations)

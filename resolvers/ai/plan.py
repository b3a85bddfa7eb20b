"""Everything a completion decides before the upstream call, in order: the input checks,
the conversation and its history, the credential, and last the quota reservation, so
that a request refused earlier reserves nothing (and from the reservation on, the caller
must settle it: a bill, or `quota.release_unbilled`)."""

from __future__ import annotations

from kit.security import Principal
from resolvers.ai.conversations import history_of, own_conversation
from resolvers.ai.quota import reserve
from resolvers.ai.types import ChatRequest, Plan
from resolvers.ai.validation import clean_request
from resolvers.ai.vendor import credential
from resolvers.context import Context


async def make_plan(
    ctx: Context, principal: Principal, request: ChatRequest, operation: str, title: str = ""
) -> Plan:
    messages, model = clean_request(ctx, request)
    conversation = None
    history: list[dict[str, str]] = []
    if request.conversation_id is not None:
        conversation = await own_conversation(principal, request.conversation_id)
        history = await history_of(principal, conversation)
    cred, source = await credential(ctx)
    if not title:
        first_user = next((m["content"] for m in messages if m["role"] == "user"), "")
        title = " ".join(first_user.split())[:80] or "Conversation"
    plan = Plan(
        principal=principal,
        request_messages=messages,
        messages=history + messages,
        model=model,
        temperature=request.temperature,
        max_tokens=request.max_tokens,
        cred=cred,
        source=source,
        operation=operation,
        conversation=conversation,
        title=title,
    )
    # Last: from here on the caller must settle it (a bill, or `release_unbilled`).
    plan.reservation = await reserve(ctx, plan)
    return plan

"""Everything a completion decides before the upstream call, in order: the input checks,
the conversation and its history, the credential, and last the quota reservation, so
that a request refused earlier reserves nothing (and from the reservation on, the caller
must settle it: a bill, or `quota.release_unbilled`)."""

from __future__ import annotations

from kit.security import Principal
from resolvers.ai.conversations import history_of, own_conversation
from resolvers.ai.prompts import prefetch_ids
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
    newest = 0
    if request.conversation_id is not None:
        conversation = await own_conversation(ctx, principal, request.conversation_id)
        history, newest = await history_of(principal, conversation)
    grounding: list[dict[str, str]] = []
    citations: list[object] = []
    if request.knowledge:
        # Imported here: the knowledge area answers through this module (askKnowledgeBase).
        from resolvers.knowledge.search import grounding_for

        question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        system, hits = await grounding_for(ctx, question)
        grounding, citations = [{"role": "system", "content": system}], list(hits)
    cred, source = await credential(ctx)
    if not title:
        first_user = next((m["content"] for m in messages if m["role"] == "user"), "")
        title = " ".join(first_user.split())[:80] or "Conversation"
    plan = Plan(
        principal=principal,
        request_messages=messages,
        messages=grounding + history + messages,
        model=model,
        temperature=request.temperature,
        max_tokens=request.max_tokens,
        cred=cred,
        source=source,
        operation=operation,
        conversation=conversation,
        title=title,
        citations=citations,
        newest_message_id=newest,
    )
    # The rows' ids, if the process's stock runs short, fetched during the reservation.
    prefetch_ids(ctx, plan)
    # Last: from here on the caller must settle it (a bill, or `release_unbilled`).
    plan.reservation = await reserve(ctx, plan)
    return plan

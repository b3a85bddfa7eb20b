"""The bill: one `AiUsage` row per completion with its tokens, latency and cost, written
with the answer's final state and the quota reservation it settles in one transaction,
so the ledger, the answer and the quota never disagree."""

from __future__ import annotations

from tortoise.transactions import in_transaction

from models.ai import AiUsage, ChatMessage, UsageOutcome
from resolvers import ai_quota as quotas
from resolvers.ai.prices import cost_of, estimate_prompt_tokens
from resolvers.ai.state import ai_state
from resolvers.ai.types import Bill, Plan, Usage
from resolvers.context import Context
from resolvers.group_commit import on_running_loop


async def bill(
    ctx: Context,
    plan: Plan,
    *,
    conversation_id: int | None,
    usage: Usage,
    outcome: UsageOutcome,
    latency: float,
    first_token: float | None,
    error_code: str | None = None,
    answer: ChatMessage | None = None,
) -> None:
    """One ledger row (and the answer's final state, in the same transaction)."""
    row = AiUsage(
        tenant_id=plan.principal.tenant_id,
        owner_id=plan.principal.user_id if plan.principal.api_key_id is None else None,
        api_key_id=plan.principal.api_key_id,
        conversation_id=conversation_id,
        operation=plan.operation,
        model=plan.model,
        credential_source=plan.source,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        estimated=usage.estimated,
        cost=usage.cost,
        latency_ms=int(latency * 1000),
        first_token_ms=None if first_token is None else int(first_token * 1000),
        outcome=outcome,
        error_code=error_code,
    )
    state = ai_state(ctx.services)
    state.ledger = ledger = on_running_loop(state.ledger, _write_bills)
    reservation = plan.reservation
    if reservation is not None and reservation.settled:
        reservation = None  # billed once already: this bill only adds to the ledger
    await ledger((answer, row, reservation))
    if reservation is not None:
        reservation.settled = True


_ANSWER_FIELDS = ["content", "status", "finish_reason", "updated_at"]


async def _write_bills(bills: list[Bill]) -> list[None]:
    """Answers, their ledger rows and the quota they settle, in one transaction: one
    UPDATE statement for the answers and one INSERT for the ledger rows, each executed
    for all the rows at once (executemany: pipelined on PostgreSQL), however many there
    are, then one DELETE of the reservations and one UPDATE per tenant's month."""
    answers = [answer for answer, _, _ in bills if answer is not None]
    async with in_transaction() as conn:
        if len(answers) == 1:
            await answers[0].save(update_fields=_ANSWER_FIELDS, using_db=conn)
        elif answers:
            # The statement `save(update_fields=...)` runs, with every answer's values:
            # bulk_update builds a CASE per row and field, which costs far more CPU.
            fields = ChatMessage._meta.fields_map
            pk = ChatMessage._meta.pk
            sql = conn.executor_class(model=ChatMessage, db=conn).get_update_sql(
                _ANSWER_FIELDS, None
            )
            await conn.execute_many(
                sql,
                [
                    [fields[f].to_db_value(getattr(a, f), a) for f in _ANSWER_FIELDS]
                    + [pk.to_db_value(a.pk, a)]
                    for a in answers
                ],
            )
        await AiUsage.bulk_create([row for _, row, _ in bills], using_db=conn)
        await quotas.settle(
            conn, [(held, row.total_tokens) for _, row, held in bills if held is not None]
        )
    return [None] * len(bills)


def usage_of(
    ctx: Context,
    plan: Plan,
    vendor: tuple[int, int] | None,
    received_chunks: int,
    opened: bool,
) -> Usage:
    """What to bill: the vendor's counts when it sent them; else, once the vendor took the
    request, estimates (flagged); nothing when it refused before answering."""
    if vendor is not None:
        prompt, completion = vendor
        estimated = False
    elif opened:
        prompt, completion = estimate_prompt_tokens(plan.messages), received_chunks
        estimated = True
    else:
        prompt, completion, estimated = 0, 0, False
    return Usage(
        prompt, completion, estimated, cost_of(ctx.services, plan.model, prompt, completion)
    )

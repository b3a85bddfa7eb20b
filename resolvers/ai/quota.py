"""The completion's side of the monthly token quota (the store's side, the atomic
reservation and its settlement, is `resolvers.ai_quota`).

Before any upstream call a completion reserves the most it can cost: the prompt's
estimate plus `max_tokens` (or AI_MAX_OUTPUT_TOKENS). QUOTA_EXCEEDED comes before the
vendor is asked when that does not fit, so concurrent completions, in any number of
processes, never use more than the quota. A completion that ends without a bill gives
its reservation back (`release_unbilled`); one whose process died leaves it to expire.
"""

from __future__ import annotations

import datetime as dt
import logging

from tortoise.functions import Sum

from kit.errors import QuotaExceeded
from models.ai import AiUsage
from models.tenants import Tenant
from resolvers import ai_quota as quotas
from resolvers.ai.prices import estimate_prompt_tokens
from resolvers.ai.state import ai_state
from resolvers.ai.types import Plan
from resolvers.context import Context
from resolvers.group_commit import on_running_loop
from resolvers.operations import operation

log = logging.getLogger("switchboard.ai")


def _month_start(now: dt.datetime | None = None) -> dt.datetime:
    now = now or dt.datetime.now(dt.UTC)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


async def quota_state(tenant_id: int, default_quota: int) -> tuple[int, int]:
    """(tokens used this calendar month (UTC), monthly quota) for the tenant."""
    tenant = await Tenant.filter(id=tenant_id).only("id", "ai_monthly_token_quota").first()
    quota = default_quota
    if tenant is not None and tenant.ai_monthly_token_quota is not None:
        quota = int(tenant.ai_monthly_token_quota)
    rows = (
        await AiUsage.filter(tenant_id=tenant_id, created_at__gte=_month_start())
        .annotate(used=Sum("total_tokens"))
        .values("used")
    )
    used = int(rows[0]["used"] or 0) if rows else 0
    return used, quota


def _reservation_tokens(ctx: Context, plan: Plan) -> int:
    """The most a completion can cost: the prompt's estimate (words and punctuation, at
    least a token per four characters, plus framing) and every output token allowed."""
    return estimate_prompt_tokens(plan.messages) + (
        plan.max_tokens or ctx.settings.ai_max_output_tokens
    )


async def reserve(ctx: Context, plan: Plan) -> quotas.Reservation:
    """Hold the completion's maximum in the tenant's monthly quota, or QUOTA_EXCEEDED.

    Completions starting at the same moment reserve together (group commit, as their
    prompts are stored): one statement for all of a tenant's when their sum fits; a lone
    completion pays one statement (PostgreSQL)."""
    want = quotas.Want(
        tenant_id=plan.principal.tenant_id,
        month=quotas.month_of(),
        tokens=_reservation_tokens(ctx, plan),
        default_quota=ctx.settings.ai_monthly_token_quota,
    )
    area = ai_state(ctx.services)
    area.reservations = writer = on_running_loop(area.reservations, quotas.reserve_batch)
    reservation: quotas.Reservation | None = await writer(want)
    if reservation is None:
        reservation = await quotas.reserve_again(want)
    if reservation is None:
        state = await quotas.month_state(want.tenant_id, want.month, want.default_quota)
        raise QuotaExceeded(
            "The organization's monthly AI token quota is used up."
            if state.used >= state.quota
            else "The organization's monthly AI token quota has too few tokens left for this "
            "completion; lower maxTokens or shorten the prompt.",
            quota=state.quota,
            used=state.used,
            reserved=state.reserved,
            requested=want.tokens,
            resetsAt=_next_month(_month_start()).isoformat(),
        )
    return reservation


def _next_month(start: dt.datetime) -> dt.datetime:
    return (start + dt.timedelta(days=32)).replace(day=1)


async def release_unbilled(plan: Plan) -> None:
    """The completion ended without a bill (cancelled before the vendor answered, or
    the bill could not be written): give its reservation back."""
    if plan.reservation is not None and not plan.reservation.settled:
        try:
            await quotas.release_unbilled(plan.reservation)
        except Exception:
            # It expires (RESERVATION_SECONDS) and is swept when the quota looks full.
            log.exception(
                "could not release a reservation", extra={"tenant": plan.principal.tenant_id}
            )


@operation("ai:use")
async def ai_quota(ctx: Context) -> tuple[int, int]:
    """(tokens used this month, monthly quota) for the caller's organization."""
    principal = ctx.require_principal()
    return await quota_state(principal.tenant_id, ctx.settings.ai_monthly_token_quota)

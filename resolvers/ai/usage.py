"""The usage report: tokens and cost per model and per member over a period, summed from
the ledger (`AiUsage`) in the store."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from tortoise.functions import Count, Sum

from kit.errors import BadUserInput
from models.accounts import User
from models.ai import AiUsage
from models.tenancy import scoped
from resolvers.ai.prices import CENTS8
from resolvers.ai.types import UsageGroup, UsageReport
from resolvers.context import Context
from resolvers.operations import operation

MAX_REPORT_DAYS = 366


@operation("ai:usage")
async def ai_usage(ctx: Context, start: dt.date, end: dt.date) -> UsageReport:
    """Tokens and cost from `start` to `end` (whole UTC days, both included)."""
    principal = ctx.require_principal()
    if end < start:
        raise BadUserInput("`to` is before `from`.", details={"to": "must not be before from"})
    if (end - start).days >= MAX_REPORT_DAYS:
        raise BadUserInput(
            "The period is too long.", details={"to": f"at most {MAX_REPORT_DAYS} days after from"}
        )
    lo = dt.datetime.combine(start, dt.time.min, tzinfo=dt.UTC)
    hi = dt.datetime.combine(end + dt.timedelta(days=1), dt.time.min, tzinfo=dt.UTC)
    base = scoped(AiUsage, principal.tenant_id).filter(created_at__gte=lo, created_at__lt=hi)

    async def grouped(column: str) -> list[UsageGroup]:
        rows = (
            await base.annotate(
                calls=Count("id"),
                prompt=Sum("prompt_tokens"),
                completion=Sum("completion_tokens"),
                spent=Sum("cost"),
            )
            .group_by(column)
            .values(column, "calls", "prompt", "completion", "spent")
        )
        groups = [
            UsageGroup(
                key="" if row[column] is None else str(row[column]),
                calls=int(row["calls"] or 0),
                prompt_tokens=int(row["prompt"] or 0),
                completion_tokens=int(row["completion"] or 0),
                cost=Decimal(str(row["spent"] or 0)).quantize(CENTS8),
            )
            for row in rows
        ]
        return sorted(groups, key=lambda g: (-g.total_tokens, g.key))

    by_model = await grouped("model")
    by_owner = await grouped("owner_id")
    users = {
        u.id: u for u in await User.filter(id__in=[int(g.key) for g in by_owner if g.key.isdigit()])
    }
    total = UsageGroup(
        key="",
        calls=sum(g.calls for g in by_model),
        prompt_tokens=sum(g.prompt_tokens for g in by_model),
        completion_tokens=sum(g.completion_tokens for g in by_model),
        cost=sum((g.cost for g in by_model), Decimal(0)),
    )
    return UsageReport(
        start=start,
        end=end,
        total=total,
        by_model=by_model,
        by_user=[(users.get(int(g.key)) if g.key.isdigit() else None, g) for g in by_owner],
    )

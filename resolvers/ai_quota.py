"""The monthly AI token quota, held before each completion and settled by its bill.

A completion may cost at most its prompt (estimated) plus its `max_tokens` (or the
output cap). That much is *reserved* before the upstream call, atomically in the store:

    UPDATE ai_quota_months SET reserved = reserved + n
    WHERE tenant_id = t AND month = m AND used + reserved + n <= quota

The row's lock (PostgreSQL) or the database's write lock (SQLite) makes concurrent
completions take turns, in one process or many, so `used + reserved` never passes the
quota; a completion whose reservation does not fit is refused before it costs anything.
The quota is read in the same statement (the tenant's own, else the setting), so a
quota an operator lowers applies to the next completion.

The bill settles the reservation in the bill's own transaction (`settle`): the
reservation row is deleted, what it held is released, and the tokens really used are
added to `used`. Settling is idempotent (only the transaction that deletes the row
releases it), and every way a completion ends settles: the bill (complete, failed,
interrupted), or, when no bill could be written (cancelled before the vendor answered,
the store failed), a release without usage. A process that dies mid-completion leaves
its reservation row behind; it expires after RESERVATION_SECONDS and is swept the next
time the tenant's quota looks full (`sweep`).

Usage counts in the month the completion was reserved in. The month's row starts from
the ledger's sum for that month (`AiUsage`), so usage billed before this row existed
still counts.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.functions import Sum
from tortoise.transactions import in_transaction

from models.ai import AiQuotaMonth, AiReservation, AiUsage
from models.tenants import Tenant

# Longer than any completion can run (4096 output tokens at a slow 5 tokens/s take
# under 14 minutes), so only a reservation whose process died is ever swept.
RESERVATION_SECONDS = 3600

_PARAM = re.compile(r"\$(\d+)")

_RESERVE_SQL = (
    "UPDATE ai_quota_months SET reserved = reserved + $1, updated_at = $5 "
    "WHERE tenant_id = $2 AND month = $3 AND used + reserved + $1 <= "
    "COALESCE((SELECT ai_monthly_token_quota FROM tenants WHERE id = $2), $4)"
)
_SETTLE_SQL = (
    "UPDATE ai_quota_months SET used = used + $1, reserved = reserved - $2, updated_at = $5 "
    "WHERE tenant_id = $3 AND month = $4"
)


@dataclass(frozen=True, slots=True)
class Want:
    """A reservation asked for: `tokens` for `tenant_id` in `month`, within the tenant's
    quota or `default_quota` when the tenant has none of its own."""

    tenant_id: int
    month: int
    tokens: int
    default_quota: int


@dataclass(slots=True)
class Reservation:
    id: int
    tenant_id: int
    month: int
    tokens: int
    settled: bool = field(default=False)


@dataclass(frozen=True, slots=True)
class QuotaMonth:
    used: int
    reserved: int
    quota: int


def month_of(moment: dt.datetime | None = None) -> int:
    """The calendar month (UTC) as YYYYMM."""
    moment = moment or dt.datetime.now(dt.UTC)
    return moment.year * 100 + moment.month


def _sql(conn: BaseDBAsyncClient, sql: str) -> str:
    """`$n` parameters as the connection's dialect numbers them (SQLite: `?n`)."""
    return sql if conn.capabilities.dialect == "postgres" else _PARAM.sub(r"?\1", sql)


async def _try_reserve(conn: BaseDBAsyncClient, want: Want) -> Reservation | None:
    moment = dt.datetime.now(dt.UTC)
    updated, _ = await conn.execute_query(
        _sql(conn, _RESERVE_SQL),
        [want.tokens, want.tenant_id, want.month, want.default_quota, moment],
    )
    if not updated:
        return None
    row = await AiReservation.create(
        tenant_id=want.tenant_id,
        month=want.month,
        tokens=want.tokens,
        expires_at=moment + dt.timedelta(seconds=RESERVATION_SECONDS),
        using_db=conn,
    )
    return Reservation(row.id, want.tenant_id, want.month, want.tokens)


async def reserve_batch(wants: list[Want]) -> list[Reservation | None]:
    """Reservations for completions starting at the same moment, in one transaction (the
    caller's group commit), taken tenant by tenant (one lock order for every writer).
    None where it does not fit, or where the month's row does not exist yet: `reserve`
    decides those."""
    results: list[Reservation | None] = [None] * len(wants)
    order = sorted(range(len(wants)), key=lambda i: (wants[i].tenant_id, wants[i].month))
    async with in_transaction() as conn:
        for i in order:
            results[i] = await _try_reserve(conn, wants[i])
    return results


async def reserve_again(want: Want) -> Reservation | None:
    """The slow path after a reservation did not fit: create the month's row if it is
    missing, release expired reservations, and try once more. None: the quota is full."""
    if not await AiQuotaMonth.filter(tenant_id=want.tenant_id, month=want.month).exists():
        await _open_month(want.tenant_id, want.month)
    await sweep(want.tenant_id)
    async with in_transaction() as conn:
        return await _try_reserve(conn, want)


async def _open_month(tenant_id: int, month: int) -> None:
    start = dt.datetime(month // 100, month % 100, 1, tzinfo=dt.UTC)
    end = (start + dt.timedelta(days=32)).replace(day=1)
    rows = (
        await AiUsage.filter(tenant_id=tenant_id, created_at__gte=start, created_at__lt=end)
        .annotate(total=Sum("total_tokens"))
        .values("total")
    )
    used = int(rows[0]["total"] or 0) if rows else 0
    # Two processes opening the month at once: the first row stays.
    await AiQuotaMonth.bulk_create(
        [AiQuotaMonth(tenant_id=tenant_id, month=month, used=used, reserved=0)],
        ignore_conflicts=True,
    )


async def sweep(tenant_id: int, now: dt.datetime | None = None) -> int:
    """Release the tenant's expired reservations (their process died before billing);
    the number released."""
    now = now or dt.datetime.now(dt.UTC)
    expired = await AiReservation.filter(tenant_id=tenant_id, expires_at__lt=now).values_list(
        "id", flat=True
    )
    if not expired:
        return 0
    async with in_transaction() as conn:
        released = await _release(conn, [int(i) for i in expired])  # type: ignore[call-overload]
        await _apply(conn, {key: (0, tokens) for key, tokens in released.items()})
    return len(expired)


async def _release(conn: BaseDBAsyncClient, ids: Sequence[int]) -> dict[tuple[int, int], int]:
    """Delete the reservation rows that still exist; tokens they held per (tenant, month).
    Only the transaction whose DELETE removes a row releases it (idempotent settling)."""
    if not ids:
        return {}
    marks = ", ".join(f"${i + 1}" for i in range(len(ids)))
    rows = await conn.execute_query_dict(
        _sql(
            conn,
            f"DELETE FROM ai_reservations WHERE id IN ({marks}) "  # noqa: S608 - only marks
            "RETURNING tenant_id, month, tokens",
        ),
        list(ids),
    )
    held: dict[tuple[int, int], int] = {}
    for row in rows:
        key = (int(row["tenant_id"]), int(row["month"]))
        held[key] = held.get(key, 0) + int(row["tokens"])
    return held


async def _apply(conn: BaseDBAsyncClient, changes: dict[tuple[int, int], tuple[int, int]]) -> None:
    """(tenant, month) -> (tokens used, tokens released), in one lock order."""
    moment = dt.datetime.now(dt.UTC)
    for (tenant_id, month), (used, released) in sorted(changes.items()):
        if used or released:
            await conn.execute_query(
                _sql(conn, _SETTLE_SQL), [used, released, tenant_id, month, moment]
            )


async def settle(conn: BaseDBAsyncClient, bills: Sequence[tuple[Reservation, int]]) -> None:
    """In the bills' transaction: release each reservation (if still held) and add the
    tokens really used to its month."""
    if not bills:
        return
    held = await _release(conn, [reservation.id for reservation, _ in bills])
    changes: dict[tuple[int, int], tuple[int, int]] = {
        key: (0, tokens) for key, tokens in held.items()
    }
    for reservation, used in bills:
        key = (reservation.tenant_id, reservation.month)
        before = changes.get(key, (0, 0))
        changes[key] = (before[0] + used, before[1])
    await _apply(conn, changes)


async def release_unbilled(reservation: Reservation) -> None:
    """A completion that ended without a bill: give back what it held, nothing used."""
    if reservation.settled:
        return
    async with in_transaction() as conn:
        await settle(conn, [(reservation, 0)])
    reservation.settled = True


async def month_state(tenant_id: int, month: int, default_quota: int) -> QuotaMonth:
    """The month's row as stored now (for the refusal's details and for tests)."""
    row = await AiQuotaMonth.filter(tenant_id=tenant_id, month=month).first()
    tenant = await Tenant.filter(id=tenant_id).only("id", "ai_monthly_token_quota").first()
    quota = default_quota
    if tenant is not None and tenant.ai_monthly_token_quota is not None:
        quota = int(tenant.ai_monthly_token_quota)
    if row is None:
        return QuotaMonth(0, 0, quota)
    return QuotaMonth(int(row.used), int(row.reserved), quota)

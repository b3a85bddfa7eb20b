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

Each hold is recorded in an `ai_reservations` row with an expiry. Completions of one
tenant starting at the same moment (the caller's group commit) hold their sum with one
statement and share one row, each owning its part; when the sum does not fit, they try
one by one. On PostgreSQL the hold and its row are one statement (a data-modifying CTE),
so a lone completion, or one tenant's burst whose sum fits, pays one round trip.

The bill settles a completion's part in the bill's own transaction (`settle`): the part
is taken off its row (the row is deleted once empty), released from `reserved`, and the
tokens really used are added to `used`. Every way a completion ends settles once: the
bill (complete, failed, interrupted) or, when no bill could be written (cancelled
before the vendor answered, the store failed), a release without usage. A process that
dies mid-completion leaves its row behind: it expires after RESERVATION_SECONDS and is
swept (deleted, what it still held released) the next time the tenant's quota looks
full. A part settled after its row was swept releases nothing and still adds its usage.

Usage counts in the month the completion was reserved in. The month's row starts from
the ledger's sum for that month (`AiUsage`), so usage billed before it existed counts.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from tortoise import connections
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.functions import Sum
from tortoise.transactions import in_transaction

from models.ai import AiQuotaMonth, AiReservation, AiUsage
from models.tenants import Tenant

# Longer than any completion can run (4096 output tokens at a slow 5 tokens/s take
# under 14 minutes), so only a reservation whose process died is ever swept.
RESERVATION_SECONDS = 3600

_PARAM = re.compile(r"\$(\d+)")

# $1 tokens, $2 tenant, $3 month, $4 the default quota, $5 now.
_HOLD_SQL = (
    "UPDATE ai_quota_months SET reserved = reserved + $1, updated_at = $5 "
    "WHERE tenant_id = $2 AND month = $3 AND used + reserved + $1 <= "
    "COALESCE((SELECT ai_monthly_token_quota FROM tenants WHERE id = $2), $4)"
)
# PostgreSQL: the hold and its reservation row in one atomic statement; $6 expiry.
_HOLD_ROW_SQL = (
    f"WITH held AS ({_HOLD_SQL} RETURNING tenant_id, month) "  # noqa: S608 - constant SQL
    "INSERT INTO ai_reservations (tenant_id, month, tokens, expires_at, created_at, "
    "updated_at) SELECT tenant_id, month, $1, $6, $5, $5 FROM held RETURNING id"
)
_TAKE_SQL = (
    "UPDATE ai_reservations SET tokens = tokens - $1 WHERE id = $2 "
    "RETURNING tenant_id, month, tokens"
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
    """One completion's part (`tokens`) of the reservation row `row_id`."""

    row_id: int
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


def _postgres(conn: BaseDBAsyncClient) -> bool:
    return conn.capabilities.dialect == "postgres"


def _sql(conn: BaseDBAsyncClient, sql: str) -> str:
    """`$n` parameters as the connection's dialect numbers them (SQLite: `?n`)."""
    return sql if _postgres(conn) else _PARAM.sub(r"?\1", sql)


async def _hold(conn: BaseDBAsyncClient, want: Want, tokens: int) -> int | None:
    """Hold `tokens` in the want's month and record it; the reservation row's id, or
    None when it does not fit (or the month's row does not exist yet). On SQLite the
    caller runs it in a transaction (two statements)."""
    moment = dt.datetime.now(dt.UTC)
    expires = moment + dt.timedelta(seconds=RESERVATION_SECONDS)
    values = [tokens, want.tenant_id, want.month, want.default_quota, moment]
    if _postgres(conn):
        rows = await conn.execute_query_dict(_HOLD_ROW_SQL, [*values, expires])
        return int(rows[0]["id"]) if rows else None
    updated, _ = await conn.execute_query(_sql(conn, _HOLD_SQL), values)
    if not updated:
        return None
    row = await AiReservation.create(
        tenant_id=want.tenant_id, month=want.month, tokens=tokens, expires_at=expires,
        using_db=conn,
    )  # fmt: skip
    return int(row.id)


async def _reserve_group(conn: BaseDBAsyncClient, wants: list[Want]) -> list[Reservation | None]:
    """Wants of one tenant and month: their sum at once when it fits, else one by one."""
    first = wants[0]
    row_id = await _hold(conn, first, sum(w.tokens for w in wants)) if len(wants) > 1 else None
    if row_id is not None:
        return [Reservation(row_id, w.tenant_id, w.month, w.tokens) for w in wants]
    results: list[Reservation | None] = []
    for want in wants:
        one = await _hold(conn, want, want.tokens)
        results.append(
            None if one is None else Reservation(one, want.tenant_id, want.month, want.tokens)
        )
    return results


async def reserve_batch(wants: list[Want]) -> list[Reservation | None]:
    """Reservations for completions starting at the same moment (the caller's group
    commit), tenant by tenant in one lock order for every writer, all or none (one
    transaction, except one tenant's sum that fits on PostgreSQL: one statement). None
    where it does not fit, or where the month's row does not exist yet: `reserve_again`
    decides those."""
    groups: dict[tuple[int, int, int], list[int]] = {}
    for i, want in enumerate(wants):
        groups.setdefault((want.tenant_id, want.month, want.default_quota), []).append(i)
    results: list[Reservation | None] = [None] * len(wants)
    conn = connections.get("default")
    if len(groups) == 1 and _postgres(conn):
        # One tenant (a lone completion, or a burst of one tenant's streams): its sum is
        # one statement, atomic alone, so no transaction round trips when it fits.
        row_id = await _hold(conn, wants[0], sum(w.tokens for w in wants))
        if row_id is not None:
            return [Reservation(row_id, w.tenant_id, w.month, w.tokens) for w in wants]
        if len(wants) == 1:
            return results
    async with in_transaction() as conn:
        for _, indexes in sorted(groups.items()):
            held = await _reserve_group(conn, [wants[i] for i in indexes])
            for i, reservation in zip(indexes, held, strict=True):
                results[i] = reservation
    return results


async def reserve_again(want: Want) -> Reservation | None:
    """The slow path after a reservation did not fit: create the month's row if it is
    missing, release expired reservations, and try once more. None: the quota is full."""
    if not await AiQuotaMonth.filter(tenant_id=want.tenant_id, month=want.month).exists():
        await _open_month(want.tenant_id, want.month)
    await sweep(want.tenant_id)
    async with in_transaction() as conn:
        row_id = await _hold(conn, want, want.tokens)
    return None if row_id is None else Reservation(row_id, want.tenant_id, want.month, want.tokens)


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
    """Release the tenant's expired reservation rows (their process died before
    billing); the number of rows released."""
    now = now or dt.datetime.now(dt.UTC)
    expired = await AiReservation.filter(tenant_id=tenant_id, expires_at__lt=now).values_list(
        "id", flat=True
    )
    if not expired:
        return 0
    ids = [int(i) for i in expired]  # type: ignore[call-overload]
    marks = ", ".join(f"${i + 1}" for i in range(len(ids)))
    async with in_transaction() as conn:
        # Only the transaction whose DELETE removes a row releases what it still held.
        rows = await conn.execute_query_dict(
            _sql(
                conn,
                f"DELETE FROM ai_reservations WHERE id IN ({marks}) "  # noqa: S608 - marks only
                "RETURNING tenant_id, month, tokens",
            ),
            ids,
        )
        changes: dict[tuple[int, int], tuple[int, int]] = {}
        for row in rows:
            key = (int(row["tenant_id"]), int(row["month"]))
            changes[key] = (0, changes.get(key, (0, 0))[1] + int(row["tokens"]))
        await _apply(conn, changes)
    return len(rows)


async def _apply(conn: BaseDBAsyncClient, changes: dict[tuple[int, int], tuple[int, int]]) -> None:
    """(tenant, month) -> (tokens used, tokens released), in one lock order."""
    moment = dt.datetime.now(dt.UTC)
    for (tenant_id, month), (used, released) in sorted(changes.items()):
        if used or released:
            await conn.execute_query(
                _sql(conn, _SETTLE_SQL), [used, released, tenant_id, month, moment]
            )


async def settle(conn: BaseDBAsyncClient, bills: Sequence[tuple[Reservation, int]]) -> None:
    """In the bills' transaction: take each completion's part off its reservation row
    (release it, unless the row was swept), delete the rows left empty, and add the
    tokens really used to each completion's month."""
    if not bills:
        return
    parts: dict[int, int] = {}
    changes: dict[tuple[int, int], tuple[int, int]] = {}
    for reservation, used in bills:
        parts[reservation.row_id] = parts.get(reservation.row_id, 0) + reservation.tokens
        key = (reservation.tenant_id, reservation.month)
        before = changes.get(key, (0, 0))
        changes[key] = (before[0] + used, before[1])
    empty = []
    for row_id, tokens in sorted(parts.items()):
        taken = await conn.execute_query_dict(_sql(conn, _TAKE_SQL), [tokens, row_id])
        for row in taken:  # none when the row was swept: it released everything then
            key = (int(row["tenant_id"]), int(row["month"]))
            before = changes.get(key, (0, 0))
            changes[key] = (before[0], before[1] + tokens)
            if int(row["tokens"]) <= 0:
                empty.append(row_id)
    if empty:
        marks = ", ".join(f"${i + 1}" for i in range(len(empty)))
        await conn.execute_query(
            _sql(conn, f"DELETE FROM ai_reservations WHERE id IN ({marks}) AND tokens <= 0"),  # noqa: S608
            empty,
        )
    await _apply(conn, changes)


async def release_unbilled(reservation: Reservation) -> None:
    """A completion that ended without a bill: give back what it held, nothing used."""
    if reservation.settled:
        return
    async with in_transaction() as conn:
        await settle(conn, [(reservation, 0)])
    reservation.settled = True


async def month_state(tenant_id: int, month: int, default_quota: int) -> QuotaMonth:
    """The month's row as stored now (for the refusal's details)."""
    row = await AiQuotaMonth.filter(tenant_id=tenant_id, month=month).first()
    tenant = await Tenant.filter(id=tenant_id).only("id", "ai_monthly_token_quota").first()
    quota = default_quota
    if tenant is not None and tenant.ai_monthly_token_quota is not None:
        quota = int(tenant.ai_monthly_token_quota)
    if row is None:
        return QuotaMonth(0, 0, quota)
    return QuotaMonth(int(row.used), int(row.reserved), quota)

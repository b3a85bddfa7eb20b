"""Each tenant's opt-out list: numbers its SMS and WhatsApp messages no longer go to.

A number gets there when its holder replies STOP (or STOPALL, UNSUBSCRIBE, CANCEL, END,
QUIT, OPTOUT, REVOKE: Twilio's opt-out keywords) to one of the tenant's messages, when
Twilio refuses a send with 21610 (the recipient unsubscribed at Twilio), or by hand.
START (or YES, UNSTOP) from the number lifts it, as does removing it by hand. A send to a
listed number is refused with PHONE_OPTED_OUT before anything is written; a bulk send
reports it per recipient; a queued message whose number was listed meanwhile fails
without a provider call.
"""

from __future__ import annotations

from collections.abc import Iterable

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from kit.errors import GatewayError, NotFound
from kit.phones import e164
from kit.text import header_safe
from models.messaging import OptOutReason, PhoneOptOut
from models.tenancy import get_scoped, scoped
from resolvers.context import Context
from resolvers.events import emit
from resolvers.operations import operation
from resolvers.pagination import Page, page_of

OPT_OUT_KEYWORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"}
)
OPT_IN_KEYWORDS = frozenset({"START", "YES", "UNSTOP"})


class OptedOut(GatewayError):
    """The recipient opted out of the organization's messages."""

    code = "PHONE_OPTED_OUT"
    http_status = 422


def keyword(body: str) -> str | None:
    """`OUT` or `IN` when the whole message is an opt-out / opt-in keyword, as Twilio reads
    them (case and surrounding spaces ignored); None otherwise."""
    word = body.strip().upper()
    if word in OPT_OUT_KEYWORDS:
        return "OUT"
    if word in OPT_IN_KEYWORDS:
        return "IN"
    return None


async def opted_out(
    tenant_id: int, numbers: Iterable[str], connection: BaseDBAsyncClient | None = None
) -> set[str]:
    """Which of `numbers` (E.164) the tenant's list holds."""
    wanted = set(numbers)
    if not wanted:
        return set()
    rows = (
        await scoped(PhoneOptOut, tenant_id)
        .filter(number__in=list(wanted))
        .using_db(connection)
        .values_list("number", flat=True)
    )
    return {str(n) for n in rows}


def refuse(number: str, field: str) -> OptedOut:
    return OptedOut(
        f"{number} opted out of this organization's messages.",
        details={field: "opted out (replied STOP)"},
    )


async def opt_out(
    tenant_id: int,
    number: str,
    reason: OptOutReason,
    *,
    detail: str = "",
    connection: BaseDBAsyncClient,
) -> bool:
    """Put `number` on the list (True), or leave the entry already there (False)."""
    exists = await scoped(PhoneOptOut, tenant_id).filter(number=number).using_db(connection)
    if exists:
        return False
    # ON CONFLICT DO NOTHING: a lost race must not abort the caller's transaction.
    await PhoneOptOut.bulk_create(
        [
            PhoneOptOut(
                tenant_id=tenant_id,
                number=number,
                reason=reason.value,
                detail=header_safe(detail)[:200],
            )
        ],
        ignore_conflicts=True,
        using_db=connection,
    )
    await emit(
        tenant_id,
        "message.opted_out",
        {"number": number, "reason": reason.value},
        connection=connection,
    )
    return True


async def opt_in(tenant_id: int, number: str, *, connection: BaseDBAsyncClient) -> bool:
    """Take `number` off the list (True when it was there)."""
    deleted = (
        await scoped(PhoneOptOut, tenant_id).filter(number=number).using_db(connection).delete()
    )
    if deleted:
        await emit(tenant_id, "message.opted_in", {"number": number}, connection=connection)
    return bool(deleted)


# The API ------------------------------------------------------------------------------


@operation("messaging:opt_outs")
async def list_opt_outs(
    ctx: Context, *, first: int | None, after: str | None, number: str | None = None
) -> Page[PhoneOptOut]:
    principal = ctx.require("messaging:opt_outs")
    qs = scoped(PhoneOptOut, principal.tenant_id)
    if number:
        qs = qs.filter(number=e164(number, "number"))
    return await page_of(ctx, qs, first=first, after=after)


@operation("messaging:opt_outs")
async def add_opt_out(ctx: Context, *, number: str, detail: str = "") -> PhoneOptOut:
    principal = ctx.require("messaging:opt_outs")
    clean = e164(number, "number")
    async with in_transaction() as conn:
        await opt_out(
            principal.tenant_id, clean, OptOutReason.MANUAL, detail=detail, connection=conn
        )
        row = await scoped(PhoneOptOut, principal.tenant_id).using_db(conn).get(number=clean)
    return row


@operation("messaging:opt_outs")
async def remove_opt_out(ctx: Context, *, opt_out_id: int) -> PhoneOptOut:
    """Take a number off the list: messages go to it again."""
    principal = ctx.require("messaging:opt_outs")
    async with in_transaction() as conn:
        row = await get_scoped(PhoneOptOut, principal.tenant_id, opt_out_id)
        if not await opt_in(principal.tenant_id, row.number, connection=conn):
            raise NotFound("PhoneOptOut not found.")
    return row

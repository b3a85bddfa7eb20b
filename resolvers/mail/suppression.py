"""Each tenant's suppression list: addresses its mail no longer goes to.

An address gets there by a hard bounce or a spam complaint (the providers' delivery
webhooks, `resolvers/mail/tracking.py`), by the recipient's one-click unsubscribe from a
broadcast (RFC 8058, the `/mail/unsubscribe/{token}` route), or by hand. `sendEmail`
refuses a suppressed recipient with EMAIL_SUPPRESSED; a bulk send reports it per
recipient; a queued message whose address was suppressed meanwhile fails without a
provider call. Removing an address lets mail go to it again.
"""

from __future__ import annotations

from collections.abc import Iterable

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from kit.errors import GatewayError, NotFound
from kit.text import header_safe, normalize_email
from models.mail import EmailSuppression, OutboundEmail, SuppressionReason
from models.tenancy import get_scoped, scoped
from resolvers.context import Context
from resolvers.events import emit
from resolvers.operations import operation
from resolvers.pagination import Page, page_of


class Suppressed(GatewayError):
    """A recipient is on the organization's suppression list."""

    code = "EMAIL_SUPPRESSED"
    http_status = 422


async def suppressed(
    tenant_id: int, addresses: Iterable[str], connection: BaseDBAsyncClient | None = None
) -> set[str]:
    """Which of `addresses` (lower-cased) the tenant suppresses."""
    wanted = {a.lower() for a in addresses}
    if not wanted:
        return set()
    rows = (
        await scoped(EmailSuppression, tenant_id)
        .filter(address__in=list(wanted))
        .using_db(connection)
        .values_list("address", flat=True)
    )
    return {str(a) for a in rows}


def refuse(addresses: set[str], field: str = "to") -> Suppressed:
    listed = ", ".join(sorted(addresses)[:10])
    return Suppressed(
        f"Suppressed recipients: {listed}.",
        details={field: "is on the suppression list"},
        addresses=sorted(addresses)[:100],
    )


async def suppress(
    tenant_id: int,
    address: str,
    reason: SuppressionReason,
    *,
    detail: str = "",
    email_id: int | None = None,
    connection: BaseDBAsyncClient,
) -> bool:
    """Put `address` on the list (True), or leave the entry already there (False)."""
    address = address.lower()
    exists = await scoped(EmailSuppression, tenant_id).filter(address=address).using_db(connection)
    if exists:
        return False
    # ON CONFLICT DO NOTHING: losing a race to the same insert must not abort the
    # caller's transaction (PostgreSQL would, on a unique violation).
    await EmailSuppression.bulk_create(
        [
            EmailSuppression(
                tenant_id=tenant_id,
                address=address,
                reason=reason.value,
                detail=header_safe(detail)[:500],
                email_id=email_id,
            )
        ],
        ignore_conflicts=True,
        using_db=connection,
    )
    await emit(
        tenant_id,
        "email.suppressed",
        {"address": address, "reason": reason.value},
        connection=connection,
    )
    return True


async def unsubscribe(token: str) -> bool:
    """The one-click unsubscribe of a broadcast (True when `token` named one)."""
    if not token or len(token) > 64:
        return False
    async with in_transaction() as conn:
        email = await OutboundEmail.filter(unsubscribe_token=token).using_db(conn).first()
        if email is None:
            return False
        await suppress(
            email.tenant_id,
            email.recipient,
            SuppressionReason.UNSUBSCRIBED,
            detail="one-click unsubscribe",
            email_id=email.id,
            connection=conn,
        )
    return True


# The API ------------------------------------------------------------------------------


@operation("mail:suppressions")
async def list_suppressions(
    ctx: Context, *, first: int | None, after: str | None, address: str | None = None
) -> Page[EmailSuppression]:
    principal = ctx.require("mail:suppressions")
    qs = scoped(EmailSuppression, principal.tenant_id)
    if address:
        qs = qs.filter(address=address.strip().lower())
    return await page_of(ctx, qs, first=first, after=after)


@operation("mail:suppressions")
async def add_suppression(ctx: Context, *, address: str, detail: str = "") -> EmailSuppression:
    principal = ctx.require("mail:suppressions")
    clean = normalize_email(address, "address")
    async with in_transaction() as conn:
        await suppress(
            principal.tenant_id,
            clean,
            SuppressionReason.MANUAL,
            detail=detail,
            connection=conn,
        )
        row = await scoped(EmailSuppression, principal.tenant_id).using_db(conn).get(address=clean)
    return row


@operation("mail:suppressions")
async def remove_suppression(ctx: Context, *, suppression_id: int) -> EmailSuppression:
    """Take an address off the list: mail goes to it again."""
    principal = ctx.require("mail:suppressions")
    async with in_transaction() as conn:
        row = await get_scoped(EmailSuppression, principal.tenant_id, suppression_id)
        deleted = await EmailSuppression.filter(id=row.id).using_db(conn).delete()
        if not deleted:
            raise NotFound("EmailSuppression not found.")
        await emit(
            principal.tenant_id,
            "email.unsuppressed",
            {"address": row.address, "reason": row.reason},
            connection=conn,
        )
    return row

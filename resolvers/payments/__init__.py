"""Payments: one `Payment` row per charge whatever the vendor, with its refunds, kept in
step with the vendor by the mutations' answers and the vendor's webhooks.

Idempotency, twice over:

- The client's `idempotencyKey` (optional, per organization): the first call with a key
  inserts the row (unique per organization and key) and commits it before the vendor is
  called; a retry — or a second request racing it, on any process — finds that row
  (a unique violation sends the loser to it) and answers it, never a second payment. The
  same key with other input is CONFLICT.
- Every POST to the vendor carries an `Idempotency-Key` derived from the gateway's own
  row and operation (`sb-pay-<id>-create`, `sb-refund-<id>-create`, …), so two requests
  that both reach the vendor for one row (the race above, a retry after a crash between
  the vendor's answer and our commit) get the vendor's first answer again: one charge.

States (`PaymentStatus`) only move forward by rank — a conditional UPDATE, so a webhook
and a mutation's answer racing for one payment end in one state, and an older event
delivered late never moves a payment back:

    REQUIRES_PAYMENT_METHOD → REQUIRES_ACTION → FAILED → PROCESSING → SUCCEEDED | CANCELED
                                                     SUCCEEDED → PARTIALLY_REFUNDED → REFUNDED

FAILED (a decline, a failed 3-D Secure) ranks below PROCESSING and SUCCEEDED because the
customer may still pay the same intent with another card (Stripe.js with the client
secret); nothing moves a CANCELED or REFUNDED payment. Each change is a
`payment.<status>` event (outgoing webhooks, `activity`, `paymentStatus`).

Webhooks arrive through the inbox (once per event id): `payment_intent.*` carry the
intent's state, `charge.refunded` the refunded total, `refund.*` a refund's state. The
intent's metadata names our row (`switchboard_payment`), written before the vendor is
called, so an event that outruns the mutation's own answer (its row committed, the
vendor id not yet stored) is applied to the right row; an event naming a row this
process cannot see yet is retried by the inbox job for a while instead of being lost.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from decimal import Decimal

from tortoise.backends.base.client import BaseDBAsyncClient

from kit.errors import BadUserInput, Conflict, NotFound
from kit.money import from_minor
from models.payments import (
    Payment,
    PaymentCustomer,
    PaymentProvider,
    PaymentRefund,
    RefundStatus,
)
from models.tenancy import get_scoped, scoped
from resolvers.context import Context
from resolvers.events import follow, global_id
from resolvers.operations import operation
from resolvers.pagination import Page, page_of
from resolvers.payments import paypal, stripe
from resolvers.payments.states import (
    MAX_DESCRIPTION,
    MAX_REASON,
    REFUNDABLE,
    SETTLED,
    S,
    Vendor,
    _claim,
    _declined,
    _hash,
    _idempotency_key,
    _method,
    _money,
    _provider,
    _text,
    _url,
    claim_keyed,
)

# Each vendor's side of the operations below, by `Payment.provider`.
VENDORS: dict[str, Vendor] = {"stripe": stripe, "paypal": paypal}


@operation("payments:create")
async def create_customer(
    ctx: Context,
    *,
    email: str | None,
    name: str | None,
    idempotency_key: str | None,
    provider: str | None = None,
) -> PaymentCustomer:
    """A customer at the vendor, to charge and to list payments by."""
    principal = ctx.require("payments:create")
    vendor = _provider(provider)
    key = _idempotency_key(idempotency_key)
    email = _text(email, "email", 320)
    if email is not None and not re.match(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", email):
        raise BadUserInput("Invalid email.", details={"email": "an email address"})
    name = _text(name, "name", 256)
    digest = _hash(vendor, email, name)
    customer = await claim_keyed(
        PaymentCustomer, principal.tenant_id, key, digest,
        lambda conn: PaymentCustomer.create(
            tenant_id=principal.tenant_id, provider=vendor, email=email, name=name,
            idempotency_key=key, request_hash=digest, created_by_id=principal.user_id,
            using_db=conn,
        ),
    )  # fmt: skip
    if customer.vendor_id is None:
        await VENDORS[customer.provider].create_customer(ctx, customer)
    return customer


@operation("payments:read")
async def list_customers(
    ctx: Context, *, first: int | None, after: str | None
) -> Page[PaymentCustomer]:
    principal = ctx.require("payments:read")
    return await page_of(
        ctx, scoped(PaymentCustomer, principal.tenant_id), first=first, after=after
    )


async def load_customers(ctx: Context, ids: list[int]) -> dict[int, PaymentCustomer]:
    principal = ctx.require_principal()
    rows = await scoped(PaymentCustomer, principal.tenant_id).filter(id__in=ids)
    return {r.id: r for r in rows}


@operation("payments:create")
async def create_payment(
    ctx: Context,
    *,
    amount: Decimal,
    currency: str,
    customer_id: int | None = None,
    description: str | None = None,
    payment_method: str | None = None,
    confirm: bool = False,
    return_url: str | None = None,
    idempotency_key: str | None = None,
    provider: str | None = None,
) -> Payment:
    """A payment (Stripe: a payment intent), confirmed at once when `confirm` and a
    payment method are given. A retry with the same `idempotency_key` answers the same
    payment (never a second charge); a decline raises PAYMENT_DECLINED with the code."""
    principal = ctx.require("payments:create")
    tenant_id = principal.tenant_id
    customer = None
    if customer_id is not None:  # a foreign id is NOT_FOUND before any input check
        customer = await get_scoped(PaymentCustomer, tenant_id, customer_id)
    vendor = _provider(provider)
    key = _idempotency_key(idempotency_key)
    minor, code = _money(amount, currency)
    description = _text(description, "description", MAX_DESCRIPTION)
    method = _method(payment_method)
    url = _url(return_url)
    if confirm and method is None:
        raise BadUserInput(
            "Confirming needs a payment method.", details={"paymentMethod": "is required"}
        )
    if vendor == PaymentProvider.PAYPAL.value and (method is not None or confirm):
        raise BadUserInput(
            "A PayPal payment is approved by the payer at its `nextActionUrl`, then captured "
            "with confirmPayment.",
            details={"paymentMethod": "not for PayPal"},
        )
    digest = _hash(vendor, minor, code, customer_id, description, method, confirm, url)
    payment = await _claim(
        tenant_id, key, digest,
        dict(provider=vendor, amount_minor=minor, currency=code, customer_id=customer_id,
             description=description, payment_method=method, confirm_requested=confirm,
             return_url=url, created_by_id=principal.user_id),
    )  # fmt: skip
    if payment.vendor_id is None:
        await VENDORS[vendor].create(ctx, payment, customer)
    elif payment.status == S.FAILED.value and payment.decline_code:
        raise _declined(payment)  # the same answer as the first time
    return payment


@operation("payments:create")
async def confirm_payment(
    ctx: Context, payment_id: int, *, payment_method: str | None, return_url: str | None
) -> Payment:
    """Confirm a payment: Stripe confirms the intent with a payment method (a retry with
    the same method gets the vendor's first answer again); PayPal captures the order the
    payer approved (the documents' "execute")."""
    principal = ctx.require("payments:create")
    payment = await get_scoped(Payment, principal.tenant_id, payment_id)
    await VENDORS[payment.provider].confirm(
        ctx, payment, payment_method=payment_method, return_url=return_url
    )
    return payment


@operation("payments:create")
async def cancel_payment(ctx: Context, payment_id: int) -> Payment:
    """Cancel a payment that has not succeeded (Stripe: cancel the intent; PayPal: the
    order is abandoned, never captured)."""
    principal = ctx.require("payments:create")
    payment = await get_scoped(Payment, principal.tenant_id, payment_id)
    if payment.status == S.CANCELED.value:
        return payment
    if payment.status not in (
        S.REQUIRES_PAYMENT_METHOD.value, S.REQUIRES_ACTION.value, S.FAILED.value
    ):  # fmt: skip
        raise Conflict(
            f"A payment that is {payment.status} cannot be canceled.",
            details={"status": payment.status},
        )
    await VENDORS[payment.provider].cancel(ctx, payment)
    return await Payment.get(id=payment.id)


@operation("payments:read")
async def list_payments(
    ctx: Context,
    *,
    first: int | None,
    after: str | None,
    status: str | None = None,
    customer_id: int | None = None,
) -> Page[Payment]:
    principal = ctx.require("payments:read")
    qs = scoped(Payment, principal.tenant_id)
    if customer_id is not None:
        await get_scoped(PaymentCustomer, principal.tenant_id, customer_id)
        qs = qs.filter(customer_id=customer_id)
    if status is not None:
        qs = qs.filter(status=status)
    return await page_of(ctx, qs, first=first, after=after)


@operation("payments:read")
async def get_payment(ctx: Context, payment_id: int) -> Payment:
    principal = ctx.require("payments:read")
    return await get_scoped(Payment, principal.tenant_id, payment_id)


async def refunds_of(ctx: Context, payment_ids: list[int]) -> dict[int, list[PaymentRefund]]:
    """Refunds of each payment, oldest first (one query for a page of payments)."""
    principal = ctx.require_principal()
    rows = (
        await scoped(PaymentRefund, principal.tenant_id)
        .filter(payment_id__in=payment_ids)
        .order_by("id")
    )
    found: dict[int, list[PaymentRefund]] = {i: [] for i in payment_ids}
    for row in rows:
        found.setdefault(row.payment_id, []).append(row)
    return found


@operation("payments:refund")
async def refund_payment(
    ctx: Context,
    payment_id: int,
    *,
    amount: Decimal | None,
    reason: str | None,
    idempotency_key: str | None,
) -> tuple[Payment, PaymentRefund]:
    """Send money back: `amount` (at most what is left), or all that is left."""
    principal = ctx.require("payments:refund")
    tenant_id = principal.tenant_id
    payment = await get_scoped(Payment, tenant_id, payment_id)
    key = _idempotency_key(idempotency_key)
    requested = None
    if amount is not None:
        requested, _ = _money(amount, payment.currency)
    reason = _text(reason, "reason", MAX_REASON)
    digest = _hash(payment.id, requested, reason)
    refund = await claim_keyed(
        PaymentRefund, tenant_id, key, digest,
        lambda conn: _new_refund(payment, requested, reason, key, digest, principal.user_id,
                                 conn),
    )  # fmt: skip
    if refund.status == RefundStatus.PENDING.value:
        await VENDORS[payment.provider].refund(ctx, payment, refund)
    return await Payment.get(id=payment.id), refund


async def _new_refund(
    payment: Payment, requested: int | None, reason: str | None, key: str | None,
    digest: str, user_id: int | None, conn: BaseDBAsyncClient,
) -> PaymentRefund:  # fmt: skip
    """The refund row, in `conn` (the claim's transaction), with the payment locked so
    two refunds racing never send back more than was paid."""
    locked = await Payment.filter(id=payment.id).using_db(conn).select_for_update().first()
    assert locked is not None
    if locked.status not in REFUNDABLE or locked.vendor_id is None:
        raise Conflict(
            f"A payment that is {locked.status} cannot be refunded.",
            details={"status": locked.status},
        )
    pending = (
        await PaymentRefund.filter(
            payment_id=payment.id,
            status__in=[RefundStatus.PENDING.value, RefundStatus.SUCCEEDED.value],
        )
        .using_db(conn)
        .values_list("amount_minor", flat=True)
    )
    taken = sum(int(str(a)) for a in pending)
    left = locked.amount_minor - max(taken, locked.amount_refunded_minor)
    if left <= 0:
        raise Conflict("The payment is refunded in full already.", details={"amount": "0 left"})
    minor = left if requested is None else requested
    if minor > left:
        raise BadUserInput(
            "More than is left to refund.",
            details={"amount": f"at most {from_minor(left, locked.currency)} is left"},
        )
    return await PaymentRefund.create(
        tenant_id=payment.tenant_id, payment_id=payment.id, amount_minor=minor,
        currency=payment.currency, reason=reason, idempotency_key=key,
        request_hash=digest, created_by_id=user_id, using_db=conn,
    )  # fmt: skip


@operation("payments:read")
async def payment_status(ctx: Context, payment_id: int) -> AsyncGenerator[Payment, None]:
    """The payment now, then at each change, until it is settled (succeeded, failed,
    canceled, refunded)."""
    principal = ctx.require("payments:read")
    tenant_id = principal.tenant_id
    if not await Payment.filter(id=payment_id, tenant_id=tenant_id).exists():
        raise NotFound("Payment not found.")
    wanted = global_id("Payment", payment_id)
    stream = follow(
        tenant_id,
        ["payment.*"],
        about=lambda event: event.data.get("payment_id") == wanted,
        load=lambda: Payment.filter(id=payment_id, tenant_id=tenant_id).first(),
        state=lambda row: (row.status, row.amount_refunded_minor),
        final=lambda row: row.status in SETTLED,
    )
    try:
        async for row in stream:
            yield row
    finally:
        await stream.aclose()

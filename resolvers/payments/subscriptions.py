"""Subscriptions and invoices for the organization's own customers, at Stripe (the
organization's key → the operator's → the sandbox, as its payments).

A subscription is a `PaymentSubscription` row claimed (and committed) before Stripe is
called, like a payment: the client's `idempotencyKey` answers the same subscription again,
and every POST to Stripe carries a key derived from the row (`sb-sub-<id>-create`, a price
change's from the price), so a retry never makes a second one. Its state follows Stripe's
answers and `customer.subscription.*` events (an event older than the last one applied
changes nothing); each change is a `payment_subscription.<status>` event.

Invoices are Stripe's (not stored): listed per customer, made as drafts with their lines,
finalized, paid (a decline is PAYMENT_DECLINED with the decline code). An invoice id is
only ever acted on after Stripe says it belongs to one of the organization's customers.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from kit.errors import BadUserInput, Conflict, NotFound
from models.payments import PaymentCustomer, PaymentProvider, PaymentSubscription
from models.tenancy import get_scoped, scoped
from models.webhooks import WebhookInbox
from providers import stripe
from providers.errors import ProviderError
from resolvers.context import Context
from resolvers.events import emit
from resolvers.operations import operation
from resolvers.pagination import Page, page_of
from resolvers.payments import paypal
from resolvers.payments.states import (
    ENDED,
    META_TENANT,
    NotYetCreated,
    PaymentDeclined,
    SubscriptionState,
    _hash,
    _idempotency_key,
    _method,
    _money,
    _provider,
    _text,
    _url,
    _young,
    apply_state,
    claim_keyed,
    now,
    subscription_data,
)
from resolvers.payments.stripe import event_object, stripe_client
from resolvers.upstream import to_gateway_error

META_SUBSCRIPTION = "switchboard_subscription"
_PRICE = re.compile(r"^price_[A-Za-z0-9_]{1,200}$")
_PAYPAL_PLAN = re.compile(r"^P-[A-Z0-9-]{1,64}$")
_INVOICE = re.compile(r"^in_[A-Za-z0-9_]{1,200}$")
MAX_LINES = 50


def _plan(value: str) -> str:
    value = value.strip()
    if not _PAYPAL_PLAN.match(value):
        raise BadUserInput("Invalid plan.", details={"price": "a PayPal plan id (P-…)"})
    return value


def _price(value: str) -> str:
    value = value.strip()
    if not _PRICE.match(value):
        raise BadUserInput("Invalid price.", details={"price": "a Stripe price id (price_…)"})
    return value


async def _stripe_customer(ctx: Context, tenant_id: int, customer_id: int) -> PaymentCustomer:
    customer = await get_scoped(PaymentCustomer, tenant_id, customer_id)
    if customer.provider != PaymentProvider.STRIPE.value or not customer.vendor_id:
        raise Conflict(
            "The customer is not at Stripe (yet).", details={"customerId": "not a Stripe customer"}
        )
    return customer


# Subscriptions ---------------------------------------------------------------------------


@operation("payments:create")
async def create_subscription(
    ctx: Context,
    *,
    customer_id: int | None,
    price: str,
    payment_method: str | None,
    idempotency_key: str | None,
    provider: str | None = None,
    return_url: str | None = None,
) -> PaymentSubscription:
    """Subscribe to one of the organization's prices. Stripe: a customer, its first
    invoice charged to `payment_method` (declined or without one: `incomplete`, its
    invoice open to pay). PayPal: a plan (`P-…`), `incomplete` until its payer approves it
    at `approveUrl` (then `active`, by PayPal's webhook)."""
    principal = ctx.require("payments:create")
    tenant_id = principal.tenant_id
    vendor = _provider(provider)
    customer = None
    if vendor == PaymentProvider.STRIPE.value:
        if customer_id is None:
            raise BadUserInput("A customer is needed.", details={"customerId": "required"})
        customer = await _stripe_customer(ctx, tenant_id, customer_id)
        price = _price(price)
    else:
        if customer_id is not None or payment_method is not None:
            raise BadUserInput(
                "A PayPal subscription is approved and paid by its payer.",
                details={"customerId" if customer_id is not None else "paymentMethod":
                         "not for PayPal"},
            )  # fmt: skip
        price = _plan(price)
    method = _method(payment_method)
    url = _url(return_url)
    key = _idempotency_key(idempotency_key)
    digest = _hash("subscription", vendor, customer_id, price, method, url)

    async def create(conn: BaseDBAsyncClient) -> PaymentSubscription:
        row = await PaymentSubscription.create(
            tenant_id=tenant_id, provider=vendor, customer_id=customer_id, price=price,
            idempotency_key=key, request_hash=digest, created_by_id=principal.user_id,
            using_db=conn,
        )  # fmt: skip
        await emit(tenant_id, "payment_subscription.created", subscription_data(row),
                   connection=conn)  # fmt: skip
        return row

    row = await claim_keyed(PaymentSubscription, tenant_id, key, digest, create)
    if row.vendor_id is None:
        try:
            if customer is not None:
                assert customer.vendor_id is not None
                made = await (await stripe_client(ctx, tenant_id)).create_subscription(
                    customer=customer.vendor_id, price=price, payment_method=method,
                    idempotency_key=f"sb-sub-{row.id}-create",
                    metadata={META_SUBSCRIPTION: str(row.id), META_TENANT: str(tenant_id)},
                )  # fmt: skip
                state = stripe_state(made)
            else:
                state = await paypal.create_subscription(ctx, row, return_url=url)
        except ProviderError as err:
            if err.is_caller_error:
                await PaymentSubscription.filter(id=row.id, vendor_id=None).update(
                    status="incomplete_expired", updated_at=now()
                )
            raise to_gateway_error(err, field="price") from None
        async with in_transaction() as conn:
            await apply_state(row, state, at=int(time.time()), connection=conn)
    return await PaymentSubscription.get(id=row.id)


@operation("payments:create")
async def change_subscription(
    ctx: Context,
    subscription_id: int,
    *,
    price: str | None,
    cancel_at_period_end: bool | None,
) -> PaymentSubscription:
    """Move a subscription to another price, or set whether it ends at the period's end."""
    principal = ctx.require("payments:create")
    row = await get_scoped(PaymentSubscription, principal.tenant_id, subscription_id)
    if price is None and cancel_at_period_end is None:
        raise BadUserInput("Nothing to change.", details={"price": "give a price or a flag"})
    price = None if price is None else _price(price)
    if row.provider != PaymentProvider.STRIPE.value:
        raise BadUserInput(
            "A PayPal subscription changes plan by a new subscription its payer approves: "
            "cancel this one and create another.",
            details={"price": "not for PayPal"},
        )
    if row.status in ENDED or row.vendor_id is None:
        raise Conflict(f"A subscription that is {row.status} cannot change.",
                       details={"status": row.status})  # fmt: skip
    key = f"sb-sub-{row.id}-change-{_hash(price, cancel_at_period_end)[:16]}"
    try:
        made = await (await stripe_client(ctx, principal.tenant_id)).update_subscription(
            row.vendor_id, idempotency_key=key, price=price, item_id=row.item_id,
            cancel_at_period_end=cancel_at_period_end,
        )  # fmt: skip
    except ProviderError as err:
        raise to_gateway_error(err, field="price") from None
    async with in_transaction() as conn:
        await apply_state(row, stripe_state(made), at=int(time.time()), connection=conn)
    return await PaymentSubscription.get(id=row.id)


@operation("payments:create")
async def cancel_subscription(ctx: Context, subscription_id: int) -> PaymentSubscription:
    """End a subscription now (to end it at the period's end: `change_subscription`)."""
    principal = ctx.require("payments:create")
    row = await get_scoped(PaymentSubscription, principal.tenant_id, subscription_id)
    if row.status in ENDED:
        return row
    if row.vendor_id is None:
        raise Conflict("The subscription never reached Stripe.", details={"status": row.status})
    try:
        if row.provider == PaymentProvider.PAYPAL.value:
            state = await paypal.cancel_subscription(ctx, row)
        else:
            made = await (await stripe_client(ctx, principal.tenant_id)).cancel_subscription(
                row.vendor_id
            )
            state = stripe_state(made)
    except ProviderError as err:
        raise to_gateway_error(err, field="id") from None
    async with in_transaction() as conn:
        await apply_state(row, state, at=int(time.time()), connection=conn)
    return await PaymentSubscription.get(id=row.id)


@operation("payments:read")
async def list_subscriptions(
    ctx: Context, *, customer_id: int | None, first: int | None, after: str | None
) -> Page[PaymentSubscription]:
    principal = ctx.require("payments:read")
    qs = scoped(PaymentSubscription, principal.tenant_id)
    if customer_id is not None:
        await get_scoped(PaymentCustomer, principal.tenant_id, customer_id)
        qs = qs.filter(customer_id=customer_id)
    return await page_of(ctx, qs, first=first, after=after)


def stripe_state(sub: stripe.Subscription) -> SubscriptionState:
    end = (
        dt.datetime.fromtimestamp(sub.current_period_end, dt.UTC)
        if sub.current_period_end
        else None
    )
    return SubscriptionState(
        vendor_id=sub.id, status=sub.status, price=sub.price, item_id=sub.item_id,
        latest_invoice=sub.latest_invoice, current_period_end=end,
        cancel_at_period_end=sub.cancel_at_period_end,
    )  # fmt: skip


async def on_subscription_event(event: WebhookInbox, connection: BaseDBAsyncClient) -> None:
    """A `customer.subscription.*` event about one of the organizations' subscriptions
    (the row named by the metadata we wrote, else by Stripe's id); a tenant's own endpoint
    reaches its own rows only."""
    obj = event_object(event)
    if not obj:
        return
    sub = stripe.Subscription.of(obj)
    qs = PaymentSubscription.all().using_db(connection)
    if event.tenant_id is not None:
        qs = qs.filter(tenant_id=event.tenant_id)
    ours = sub.metadata.get(META_SUBSCRIPTION, "")
    row = None
    if ours.isdigit():
        row = await qs.filter(id=int(ours)).first()
        if (
            row is None
            and _young(event)
            and not await PaymentSubscription.filter(id=int(ours)).using_db(connection).exists()
        ):
            raise NotYetCreated(f"subscription {ours} is not visible yet")
        if row is not None and (
            (row.vendor_id not in (None, sub.id))
            or (event.tenant_id is None and sub.metadata.get(META_TENANT) != str(row.tenant_id))
        ):
            return
    else:
        row = await qs.filter(vendor_id=sub.id).first()
    if row is None:
        return
    created = event.payload.get("created")
    at = int(created) if isinstance(created, int) else 1
    await apply_state(row, stripe_state(sub), at=at, connection=connection)


# Invoices --------------------------------------------------------------------------------


@operation("payments:read")
async def list_invoices(
    ctx: Context, *, customer_id: int, first: int | None, after: str | None
) -> tuple[list[stripe.Invoice], bool]:
    principal = ctx.require("payments:read")
    customer = await _stripe_customer(ctx, principal.tenant_id, customer_id)
    if after is not None and not _INVOICE.match(after):
        raise BadUserInput("Invalid cursor.", details={"after": "an invoice id"})
    assert customer.vendor_id is not None
    try:
        return await (await stripe_client(ctx, principal.tenant_id)).list_invoices(
            customer=customer.vendor_id, limit=min(max(first or 20, 1), 100), starting_after=after
        )
    except ProviderError as err:
        raise to_gateway_error(err, field="after") from None


@operation("payments:create")
async def create_invoice(
    ctx: Context,
    *,
    customer_id: int,
    currency: str,
    lines: list[tuple[Any, str]],
    description: str | None,
    idempotency_key: str,
) -> stripe.Invoice:
    """A draft invoice to a customer: lines of (amount, description)."""
    principal = ctx.require("payments:create")
    customer = await _stripe_customer(ctx, principal.tenant_id, customer_id)
    key = _idempotency_key(idempotency_key)
    if not lines or len(lines) > MAX_LINES:
        raise BadUserInput("Invalid lines.", details={"lines": f"1 to {MAX_LINES} lines"})
    minor: list[tuple[int, str]] = []
    code = currency
    for n, (amount, text) in enumerate(lines):
        cents, code = _money(amount, currency, field=f"lines.{n}.amount")
        minor.append((cents, _text(text, f"lines.{n}.description", 500) or "Item"))
    description = _text(description, "description", 500)
    assert customer.vendor_id is not None and key is not None
    scope = f"sb-inv-{principal.tenant_id}-{_hash(key)[:24]}"
    try:
        return await (await stripe_client(ctx, principal.tenant_id)).create_invoice(
            customer=customer.vendor_id, currency=code, lines=minor, description=description,
            idempotency_key=scope,
            metadata={META_TENANT: str(principal.tenant_id),
                      "switchboard_customer": str(customer.id)},
        )  # fmt: skip
    except ProviderError as err:
        raise to_gateway_error(err, field="lines") from None


async def _own_invoice(ctx: Context, tenant_id: int, invoice_id: str) -> stripe.Invoice:
    """Stripe's invoice, when it is one of the organization's customers'; else NOT_FOUND."""
    if not _INVOICE.match(invoice_id):
        raise NotFound("Invoice not found.")
    client = await stripe_client(ctx, tenant_id)
    try:
        invoice = await client.retrieve_invoice(invoice_id)
    except ProviderError as err:
        if err.status == 404:
            raise NotFound("Invoice not found.") from None
        raise to_gateway_error(err, field="id") from None
    mine = await scoped(PaymentCustomer, tenant_id).filter(vendor_id=invoice.customer).exists()
    if not invoice.customer or not mine:
        raise NotFound("Invoice not found.")
    return invoice


@operation("payments:create")
async def finalize_invoice(ctx: Context, invoice_id: str) -> stripe.Invoice:
    principal = ctx.require("payments:create")
    invoice = await _own_invoice(ctx, principal.tenant_id, invoice_id)
    if invoice.status != "draft":
        return invoice  # finalized already (a retry): its state as it is
    try:
        return await (await stripe_client(ctx, principal.tenant_id)).finalize_invoice(
            invoice.id, idempotency_key=f"sb-inv-{invoice.id}-finalize"
        )
    except ProviderError as err:
        raise to_gateway_error(err, field="id") from None


@operation("payments:create")
async def pay_invoice(
    ctx: Context, invoice_id: str, *, payment_method: str | None
) -> stripe.Invoice:
    principal = ctx.require("payments:create")
    invoice = await _own_invoice(ctx, principal.tenant_id, invoice_id)
    if invoice.status == "paid":
        return invoice
    method = _method(payment_method)
    key = f"sb-inv-{invoice.id}-pay-{_hash(method)[:16]}"
    try:
        return await (await stripe_client(ctx, principal.tenant_id)).pay_invoice(
            invoice.id, idempotency_key=key, payment_method=method
        )
    except stripe.CardDeclined as err:
        raise PaymentDeclined(
            err.message or "The card was declined.", declineCode=err.decline_code,
            failureCode=err.code, invoiceId=invoice.id,
        ) from None  # fmt: skip
    except ProviderError as err:
        raise to_gateway_error(err, field="paymentMethod") from None

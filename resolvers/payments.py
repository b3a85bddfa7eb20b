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

import datetime as dt
import hashlib
import json
import logging
import re
from collections.abc import AsyncGenerator
from decimal import Decimal
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError
from tortoise.functions import Sum
from tortoise.transactions import in_transaction

from kit.errors import BadUserInput, Conflict, GatewayError, NotFound
from kit.money import MoneyError, from_minor, normalise_currency, to_minor
from kit.text import text_problem
from models.payments import (
    Payment,
    PaymentCustomer,
    PaymentProvider,
    PaymentRefund,
    PaymentStatus,
    RefundStatus,
)
from models.tenancy import get_scoped, scoped
from models.webhooks import WebhookInbox
from providers import stripe
from providers.errors import ProviderError
from resolvers.context import Context
from resolvers.credentials import resolve_tenant_credential
from resolvers.events import emit, follow, global_id
from resolvers.operations import operation
from resolvers.pagination import Page, page_of
from resolvers.upstream import provider_registry, to_gateway_error
from resolvers.webhooks_in import inbox_handler

log = logging.getLogger("switchboard.payments")

S = PaymentStatus
RANK = {
    S.REQUIRES_PAYMENT_METHOD.value: 0,
    S.REQUIRES_ACTION.value: 1,
    S.FAILED.value: 2,
    S.PROCESSING.value: 3,
    S.SUCCEEDED.value: 4,
    S.CANCELED.value: 4,
    S.PARTIALLY_REFUNDED.value: 5,
    S.REFUNDED.value: 6,
}
TERMINAL = frozenset({S.CANCELED.value, S.REFUNDED.value})  # nothing moves them
# Where `paymentStatus` completes: the charge is decided.
SETTLED = frozenset(
    {S.SUCCEEDED.value, S.FAILED.value, S.CANCELED.value, S.PARTIALLY_REFUNDED.value,
     S.REFUNDED.value}
)  # fmt: skip
REFUNDABLE = frozenset({S.SUCCEEDED.value, S.PARTIALLY_REFUNDED.value})

MAX_KEY = 255
MAX_DESCRIPTION = 1000
MAX_REASON = 500
MAX_URL = 2000
# Stripe's largest amount (eight digits of minor units), and three-decimal currencies
# charged in multiples of ten minor units (the last digit 0).
MAX_MINOR = 99_999_999
STRIPE_TENS = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_METHOD = re.compile(r"^[A-Za-z0-9_]{1,255}$")
META_PAYMENT = "switchboard_payment"
META_REFUND = "switchboard_refund"
META_TENANT = "switchboard_tenant"
HOOK_GRACE = dt.timedelta(minutes=2)


class PaymentDeclined(GatewayError):
    """The card was declined: Stripe's decline code (`insufficient_funds`, …) and the
    payment, now FAILED."""

    code = "PAYMENT_DECLINED"
    http_status = 402


class NotYetCreated(Exception):
    """An event about a payment whose row is not visible yet: the inbox job retries."""


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def amount_of(payment: Payment) -> Decimal:
    return from_minor(payment.amount_minor, payment.currency)


def refunded_of(payment: Payment) -> Decimal:
    return from_minor(payment.amount_refunded_minor, payment.currency)


def event_data(payment: Payment) -> dict[str, Any]:
    return {
        "payment_id": global_id("Payment", payment.id),
        "status": payment.status,
        "provider": payment.provider,
        "amount": str(amount_of(payment)),
        "amount_refunded": str(refunded_of(payment)),
        "currency": payment.currency,
        "decline_code": payment.decline_code,
    }


def _hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, default=str, sort_keys=True).encode()).hexdigest()


# Input -----------------------------------------------------------------------------------


def _idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not _KEY.match(value):
        raise BadUserInput(
            "Invalid idempotency key.",
            details={"idempotencyKey": "1 to 255 printable ASCII characters, no spaces"},
        )
    return value


def _money(amount: Decimal, currency: str, field: str = "amount") -> tuple[int, str]:
    try:
        code = normalise_currency(currency)
    except MoneyError as exc:
        raise BadUserInput("Invalid currency.", details={"currency": str(exc)}) from None
    try:
        minor = to_minor(amount, code)
    except MoneyError as exc:
        raise BadUserInput("Invalid amount.", details={field: str(exc)}) from None
    if minor <= 0:
        raise BadUserInput("Invalid amount.", details={field: "must be more than zero"})
    if minor > MAX_MINOR:
        biggest = from_minor(MAX_MINOR, code)
        raise BadUserInput("Invalid amount.", details={field: f"must be at most {biggest}"})
    if code in STRIPE_TENS and minor % 10:
        step = from_minor(10, code)
        raise BadUserInput(
            "Invalid amount.", details={field: f"{code} is charged in steps of {step}"}
        )
    return minor, code


def _text(value: str | None, field: str, limit: int) -> str | None:
    if value is None:
        return None
    value = value.strip()
    problem = text_problem(value)
    if problem:
        raise BadUserInput(f"Invalid {field}.", details={field: problem})
    if len(value) > limit:
        raise BadUserInput(f"Invalid {field}.", details={field: f"at most {limit} characters"})
    return value or None


def _url(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if len(value) > MAX_URL or not re.match(r"^https?://[^\s/$.?#][^\s]*$", value):
        raise BadUserInput("Invalid return URL.", details={"returnUrl": "an http(s) URL"})
    return value


def _method(value: str | None) -> str | None:
    if value is None:
        return None
    if not _METHOD.match(value):
        raise BadUserInput(
            "Invalid payment method.", details={"paymentMethod": "a payment method id (pm_…)"}
        )
    return value


def _provider(value: str | None) -> str:
    name = (value or PaymentProvider.STRIPE.value).lower()
    if name not in {p.value for p in PaymentProvider}:
        raise BadUserInput("Unknown provider.", details={"provider": "not a payment provider"})
    return name


# The vendor ------------------------------------------------------------------------------


async def stripe_client(ctx: Context, tenant_id: int) -> stripe.StripeClient:
    """Stripe as `tenant_id` reaches it: its own key → the operator's → the sandbox."""
    credential = await resolve_tenant_credential(ctx, stripe.PROVIDER, tenant_id)
    return (
        provider_registry(ctx.services)
        .stripe()
        .client(
            credential.secrets["secret_key"],
            base_url=credential.base_url or stripe.API_URL,
            own_credential=credential.own,
            guard_url=credential.guard_url,
            labels={
                "tenant_id": str(tenant_id),
                "request_id": ctx.request_id,
                "credential_source": credential.source.value,
            },
        )
    )


def status_of(intent: stripe.PaymentIntent) -> PaymentStatus:
    match intent.status:
        case "succeeded":
            return S.SUCCEEDED
        case "canceled":
            return S.CANCELED
        case "processing" | "requires_capture":
            return S.PROCESSING
        case "requires_action":
            return S.REQUIRES_ACTION
        case _:
            # requires_payment_method after an attempt: the attempt failed
            return S.FAILED if intent.error_code else S.REQUIRES_PAYMENT_METHOD


async def advance(
    payment: Payment, status: PaymentStatus, *, connection: BaseDBAsyncClient, **fields: Any
) -> bool:
    """Move `payment` to `status` (setting `fields`) when that is forward from where it
    is; emit `payment.<status>`. True when it moved."""
    rank = RANK[status.value]
    lower = [s for s, r in RANK.items() if r < rank and s not in TERMINAL]
    at = now()
    values = {"status": status.value, "status_changed_at": at, "updated_at": at, **fields}
    if status is S.SUCCEEDED:
        values["succeeded_at"] = at
    moved = (
        await Payment.filter(id=payment.id, status__in=lower).using_db(connection).update(**values)
    )
    if moved:
        for name, value in values.items():
            setattr(payment, name, value)
        await emit(
            payment.tenant_id,
            f"payment.{status.value.lower()}",
            event_data(payment),
            connection=connection,
        )
        return True
    if fields:  # already there: the vendor's details may still be news (never the status)
        same = (
            await Payment.filter(id=payment.id, status=status.value)
            .using_db(connection)
            .update(updated_at=at, **fields)
        )
        if same:
            payment.status = status.value
            for name, value in fields.items():
                setattr(payment, name, value)
            return False
    await _reload(payment, connection)  # beyond it already: answer what the store holds
    return False


async def _reload(payment: Payment, connection: BaseDBAsyncClient) -> None:
    fresh = await Payment.filter(id=payment.id).using_db(connection).first()
    if fresh is not None:
        for name in payment._meta.db_fields:
            setattr(payment, name, getattr(fresh, name))


async def apply_intent(
    payment: Payment, intent: stripe.PaymentIntent, *, connection: BaseDBAsyncClient
) -> bool:
    """Bring `payment` in step with Stripe's intent (forward only)."""
    status = status_of(intent)
    fields: dict[str, Any] = {
        "vendor_id": intent.id,
        "vendor_status": intent.status[:64],
        "next_action_url": (intent.next_action_url or "")[:MAX_URL] or None,
    }
    if intent.client_secret:
        fields["client_secret"] = intent.client_secret[:255]
    if status is S.FAILED:
        fields.update(
            failure_code=(intent.error_code or "")[:100] or None,
            decline_code=(intent.decline_code or "")[:100] or None,
            failure_message=(intent.error_message or "")[:1000] or None,
        )
    moved = await advance(payment, status, connection=connection, **fields)
    if payment.vendor_id is None:  # beyond this state already, yet its vendor id is news
        await (
            Payment.filter(id=payment.id, vendor_id=None)
            .using_db(connection)
            .update(vendor_id=intent.id, client_secret=intent.client_secret, updated_at=now())
        )
        payment.vendor_id = intent.id
        payment.client_secret = intent.client_secret
    return moved


async def apply_refunded_total(
    payment: Payment, refunded_minor: int, *, connection: BaseDBAsyncClient
) -> bool:
    """The vendor says `refunded_minor` of the payment went back (a total, only grows)."""
    refunded_minor = min(refunded_minor, payment.amount_minor)
    if refunded_minor <= 0:
        return False
    status = S.REFUNDED if refunded_minor >= payment.amount_minor else S.PARTIALLY_REFUNDED
    at = now()
    moved = (
        await Payment.filter(
            id=payment.id,
            amount_refunded_minor__lt=refunded_minor,
            status__not_in=[S.CANCELED.value, S.REFUNDED.value],
        )
        .using_db(connection)
        .update(
            status=status.value,
            amount_refunded_minor=refunded_minor,
            status_changed_at=at,
            updated_at=at,
        )
    )
    if not moved:
        return False
    payment.status = status.value
    payment.amount_refunded_minor = refunded_minor
    await emit(
        payment.tenant_id,
        f"payment.{status.value.lower()}",
        event_data(payment),
        connection=connection,
    )
    return True


async def _refunds_total(payment: Payment, connection: BaseDBAsyncClient) -> int:
    row = (
        await PaymentRefund.filter(payment_id=payment.id, status=RefundStatus.SUCCEEDED.value)
        .using_db(connection)
        .annotate(total=Sum("amount_minor"))
        .first()
        .values("total")
    )
    return int((row or {}).get("total") or 0)


# Customers -------------------------------------------------------------------------------


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
    customer = None
    if key is not None:
        customer = (
            await scoped(PaymentCustomer, principal.tenant_id).filter(idempotency_key=key).first()
        )
    if customer is None:
        try:
            customer = await PaymentCustomer.create(
                tenant_id=principal.tenant_id, provider=vendor, email=email, name=name,
                idempotency_key=key, request_hash=digest, created_by_id=principal.user_id,
            )  # fmt: skip
        except IntegrityError:
            customer = (
                await scoped(PaymentCustomer, principal.tenant_id)
                .filter(idempotency_key=key)
                .first()
            )
            if customer is None:
                raise
    if customer.request_hash != digest:
        raise Conflict(
            "This idempotency key was used with other input.",
            details={"idempotencyKey": "used with other input"},
        )
    if customer.vendor_id is None:
        client = await stripe_client(ctx, principal.tenant_id)
        try:
            made = await client.create_customer(
                email=email, name=name, idempotency_key=f"sb-cus-{customer.id}-create",
                metadata={"switchboard_customer": str(customer.id),
                          META_TENANT: str(principal.tenant_id)},
            )  # fmt: skip
        except ProviderError as err:
            raise to_gateway_error(err) from None
        await PaymentCustomer.filter(id=customer.id).update(vendor_id=made.id, updated_at=now())
        customer.vendor_id = made.id
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


# Payments --------------------------------------------------------------------------------


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
    digest = _hash(vendor, minor, code, customer_id, description, method, confirm, url)
    payment = await _claim(
        tenant_id, key, digest,
        dict(provider=vendor, amount_minor=minor, currency=code, customer_id=customer_id,
             description=description, payment_method=method, confirm_requested=confirm,
             return_url=url, created_by_id=principal.user_id),
    )  # fmt: skip
    if payment.vendor_id is None:
        await _create_at_vendor(ctx, payment, customer)
    elif payment.status == S.FAILED.value and payment.decline_code:
        raise _declined(payment)  # the same answer as the first time
    return payment


async def _claim(tenant_id: int, key: str | None, digest: str, values: dict[str, Any]) -> Payment:
    """The payment for this key (made now, committed before the vendor is called)."""
    payment = None
    if key is not None:
        payment = await scoped(Payment, tenant_id).filter(idempotency_key=key).first()
    if payment is None:
        try:
            async with in_transaction() as conn:
                payment = await Payment.create(
                    tenant_id=tenant_id, idempotency_key=key, request_hash=digest,
                    status_changed_at=now(), using_db=conn, **values,
                )  # fmt: skip
                await emit(tenant_id, "payment.created", event_data(payment), connection=conn)
        except IntegrityError:
            payment = await scoped(Payment, tenant_id).filter(idempotency_key=key).first()
            if payment is None:
                raise
    if payment.request_hash != digest:
        raise Conflict(
            "This idempotency key was used with other input.",
            details={"idempotencyKey": "used with other input"},
            paymentId=global_id("Payment", payment.id),
        )
    return payment


def _declined(payment: Payment) -> PaymentDeclined:
    return PaymentDeclined(
        payment.failure_message or "The card was declined.",
        declineCode=payment.decline_code,
        failureCode=payment.failure_code,
        paymentId=global_id("Payment", payment.id),
    )


async def _create_at_vendor(
    ctx: Context, payment: Payment, customer: PaymentCustomer | None
) -> None:
    client = await stripe_client(ctx, payment.tenant_id)
    try:
        intent = await client.create_payment_intent(
            amount=payment.amount_minor,
            currency=payment.currency,
            idempotency_key=f"sb-pay-{payment.id}-create",
            customer=customer.vendor_id if customer is not None else None,
            description=payment.description,
            metadata={META_PAYMENT: str(payment.id), META_TENANT: str(payment.tenant_id)},
            payment_method=payment.payment_method,
            confirm=payment.confirm_requested,
            return_url=payment.return_url,
        )
    except stripe.CardDeclined as err:
        await _record_decline(payment, err)
        raise _declined(payment) from None
    except ProviderError as err:
        if err.is_caller_error:  # the vendor refused this request: it will never pass
            async with in_transaction() as conn:
                await advance(
                    payment, S.FAILED, connection=conn,
                    failure_code=(err.vendor_code or "")[:100] or None,
                    failure_message=err.message[:1000],
                )  # fmt: skip
        raise to_gateway_error(err, field="amount") from None
    async with in_transaction() as conn:
        await apply_intent(payment, intent, connection=conn)


async def _record_decline(payment: Payment, err: stripe.CardDeclined) -> None:
    async with in_transaction() as conn:
        if err.intent is not None:
            await apply_intent(payment, err.intent, connection=conn)
        else:
            await advance(payment, S.FAILED, connection=conn)
        # The decline's own codes, whatever the intent said.
        await (
            Payment.filter(id=payment.id)
            .using_db(conn)
            .update(
                decline_code=(err.decline_code or "")[:100] or None,
                failure_code=(err.code or "")[:100] or None,
                failure_message=err.message[:1000],
            )
        )
    payment.decline_code = err.decline_code
    payment.failure_code = err.code
    payment.failure_message = err.message


@operation("payments:create")
async def confirm_payment(
    ctx: Context, payment_id: int, *, payment_method: str | None, return_url: str | None
) -> Payment:
    """Confirm a payment that waits for its method (Stripe: confirm the intent). A retry
    with the same method gets the vendor's first answer again."""
    principal = ctx.require("payments:create")
    payment = await get_scoped(Payment, principal.tenant_id, payment_id)
    method = _method(payment_method) or payment.payment_method
    url = _url(return_url) or payment.return_url
    if method is None:
        raise BadUserInput("A payment method is needed.", details={"paymentMethod": "required"})
    if payment.status != S.REQUIRES_PAYMENT_METHOD.value:
        if payment.status == S.FAILED.value and payment.decline_code:
            raise _declined(payment)
        raise Conflict(
            f"The payment is {payment.status}; only one waiting for its payment method "
            "can be confirmed.",
            details={"status": payment.status},
        )
    if payment.vendor_id is None:
        await _claim_method(payment, method, url)
        await _create_at_vendor(ctx, payment, await _customer_of(payment))
        return payment
    client = await stripe_client(ctx, principal.tenant_id)
    try:
        intent = await client.confirm_payment_intent(
            payment.vendor_id,
            idempotency_key=f"sb-pay-{payment.id}-confirm-{_hash(method)[:16]}",
            payment_method=method,
            return_url=url,
        )
    except stripe.CardDeclined as err:
        await _record_decline(payment, err)
        raise _declined(payment) from None
    except ProviderError as err:
        raise to_gateway_error(err, field="paymentMethod") from None
    async with in_transaction() as conn:
        await (
            Payment.filter(id=payment.id)
            .using_db(conn)
            .update(payment_method=method, return_url=url, confirm_requested=True)
        )
        await apply_intent(payment, intent, connection=conn)
    return payment


async def _claim_method(payment: Payment, method: str, url: str | None) -> None:
    await Payment.filter(id=payment.id).update(
        payment_method=method, return_url=url, confirm_requested=True, updated_at=now()
    )
    payment.payment_method = method
    payment.return_url = url
    payment.confirm_requested = True


async def _customer_of(payment: Payment) -> PaymentCustomer | None:
    if payment.customer_id is None:
        return None
    return await scoped(PaymentCustomer, payment.tenant_id).filter(id=payment.customer_id).first()


@operation("payments:create")
async def cancel_payment(ctx: Context, payment_id: int) -> Payment:
    """Cancel a payment that has not succeeded (Stripe: cancel the intent)."""
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
    if payment.vendor_id is not None:
        client = await stripe_client(ctx, principal.tenant_id)
        try:
            intent = await client.cancel_payment_intent(
                payment.vendor_id, idempotency_key=f"sb-pay-{payment.id}-cancel"
            )
        except ProviderError as err:
            raise to_gateway_error(err, field="id") from None
        async with in_transaction() as conn:
            await apply_intent(payment, intent, connection=conn)
    else:  # it never reached the vendor
        async with in_transaction() as conn:
            await advance(payment, S.CANCELED, connection=conn)
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


# Refunds ---------------------------------------------------------------------------------


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
    refund = None
    if key is not None:
        refund = await scoped(PaymentRefund, tenant_id).filter(idempotency_key=key).first()
    if refund is None:
        try:
            refund = await _new_refund(payment, requested, reason, key, digest, principal.user_id)
        except IntegrityError:
            refund = await scoped(PaymentRefund, tenant_id).filter(idempotency_key=key).first()
            if refund is None:
                raise
    if refund.request_hash != digest:
        raise Conflict(
            "This idempotency key was used with other input.",
            details={"idempotencyKey": "used with other input"},
        )
    if refund.status == RefundStatus.PENDING.value:
        await _refund_at_vendor(ctx, payment, refund)
    return await Payment.get(id=payment.id), refund


async def _new_refund(
    payment: Payment, requested: int | None, reason: str | None, key: str | None,
    digest: str, user_id: int | None,
) -> PaymentRefund:  # fmt: skip
    async with in_transaction() as conn:
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


async def _refund_at_vendor(ctx: Context, payment: Payment, refund: PaymentRefund) -> None:
    client = await stripe_client(ctx, payment.tenant_id)
    assert payment.vendor_id is not None
    try:
        made = await client.create_refund(
            payment_intent=payment.vendor_id,
            amount=refund.amount_minor,
            idempotency_key=f"sb-refund-{refund.id}-create",
            metadata={META_REFUND: str(refund.id), META_TENANT: str(payment.tenant_id)},
        )
    except ProviderError as err:
        if err.is_caller_error:
            await PaymentRefund.filter(id=refund.id, status=RefundStatus.PENDING.value).update(
                status=RefundStatus.FAILED.value, failure_reason=err.message[:500]
            )
            refund.status = RefundStatus.FAILED.value
        raise to_gateway_error(err, field="amount") from None
    async with in_transaction() as conn:
        await apply_refund(refund, made, connection=conn)
        fresh = await Payment.filter(id=payment.id).using_db(conn).first()
        if fresh is not None:
            await apply_refunded_total(fresh, await _refunds_total(fresh, conn), connection=conn)


REFUND_STATUS = {
    "pending": RefundStatus.PENDING,
    "requires_action": RefundStatus.PENDING,
    "succeeded": RefundStatus.SUCCEEDED,
    "failed": RefundStatus.FAILED,
    "canceled": RefundStatus.CANCELED,
}


async def apply_refund(
    refund: PaymentRefund, made: stripe.Refund, *, connection: BaseDBAsyncClient
) -> None:
    """A refund's state from the vendor; a decided refund stays decided."""
    status = REFUND_STATUS.get(made.status, RefundStatus.PENDING)
    values: dict[str, Any] = {"vendor_id": made.id, "updated_at": now()}
    if status is not RefundStatus.PENDING:
        values["status"] = status.value
        if made.failure_reason:
            values["failure_reason"] = made.failure_reason[:500]
    await (
        PaymentRefund.filter(id=refund.id, status=RefundStatus.PENDING.value)
        .using_db(connection)
        .update(**values)
    )
    for name, value in values.items():
        setattr(refund, name, value)


# Webhooks --------------------------------------------------------------------------------


def _object(event: WebhookInbox) -> dict[str, Any]:
    data = event.payload.get("data") if isinstance(event.payload, dict) else None
    obj = data.get("object") if isinstance(data, dict) else None
    return obj if isinstance(obj, dict) and isinstance(obj.get("id"), str) else {}


def _young(event: WebhookInbox) -> bool:
    return now() - (event.created_at or now()) < HOOK_GRACE


def _int(value: Any) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


async def _payment_for(
    event: WebhookInbox, intent_id: str, metadata: dict[str, str], conn: BaseDBAsyncClient
) -> Payment | None:
    """The payment an event is about: by the metadata we wrote (the row is committed
    before the vendor is called, the vendor id maybe not yet stored), else by the vendor
    id. A tenant's own endpoint reaches only its own payments."""
    qs = Payment.filter(provider=PaymentProvider.STRIPE.value).using_db(conn)
    if event.tenant_id is not None:
        qs = qs.filter(tenant_id=event.tenant_id)
    ours = _int(metadata.get(META_PAYMENT))
    if ours is not None:
        tenant = _int(metadata.get(META_TENANT))
        found = await qs.filter(id=ours).first()
        if found is None:
            # Not visible yet (its insert not committed): try again shortly. A row that
            # exists but is another organization's is not this endpoint's to touch.
            exists = await Payment.filter(id=ours).using_db(conn).exists()
            if not exists and _young(event):
                raise NotYetCreated(f"payment {ours} is not visible yet")
            return None
        if (event.tenant_id is None and tenant != found.tenant_id) or (
            found.vendor_id is not None and found.vendor_id != intent_id
        ):
            log.warning("stripe event %s names payment %s but does not match it", event.id, ours)
            return None
        return found
    return await qs.filter(vendor_id=intent_id).first()


@inbox_handler("stripe", "payment_intent.*")
async def on_payment_intent(event: WebhookInbox, connection: BaseDBAsyncClient) -> None:
    obj = _object(event)
    if not obj:
        return
    intent = stripe.PaymentIntent.of(obj)
    payment = await _payment_for(event, intent.id, intent.metadata, connection)
    if payment is None:
        return  # not a payment of ours (made elsewhere in the account)
    await apply_intent(payment, intent, connection=connection)


@inbox_handler("stripe", "charge.refunded")
async def on_charge_refunded(event: WebhookInbox, connection: BaseDBAsyncClient) -> None:
    obj = _object(event)
    intent_id = obj.get("payment_intent")
    if not isinstance(intent_id, str):
        return
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    payment = await _payment_for(event, intent_id, dict(metadata or {}), connection)
    if payment is None:
        if _young(event):
            raise NotYetCreated(f"no payment for {intent_id} yet")
        return
    refunded = _int(obj.get("amount_refunded"))
    if refunded is not None:
        await apply_refunded_total(payment, refunded, connection=connection)


@inbox_handler("stripe", "refund.*")
async def on_refund(event: WebhookInbox, connection: BaseDBAsyncClient) -> None:
    obj = _object(event)
    if not obj:
        return
    made = stripe.Refund.of(obj)
    qs = PaymentRefund.all().using_db(connection)
    if event.tenant_id is not None:
        qs = qs.filter(tenant_id=event.tenant_id)
    ours = _int(made.metadata.get(META_REFUND))
    refund = await (
        qs.filter(id=ours) if ours is not None else qs.filter(vendor_id=made.id)
    ).first()
    if refund is None or (refund.vendor_id is not None and refund.vendor_id != made.id):
        if refund is None and ours is not None and _young(event):
            raise NotYetCreated(f"refund {ours} is not visible yet")
        return
    if event.tenant_id is None and _int(made.metadata.get(META_TENANT)) != refund.tenant_id:
        return
    await apply_refund(refund, made, connection=connection)
    payment = await Payment.filter(id=refund.payment_id).using_db(connection).first()
    if payment is not None:
        await apply_refunded_total(
            payment, await _refunds_total(payment, connection), connection=connection
        )


# The live status -------------------------------------------------------------------------


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

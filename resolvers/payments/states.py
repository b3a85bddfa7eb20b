"""Payments' states and rules, whatever the vendor: where a payment may move (forward
only, by rank), the checks on input, and the row claimed for a client's idempotency key.
The vendors' modules (stripe.py, paypal.py) and the operations (__init__.py) share them."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol, TypeVar

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError
from tortoise.functions import Sum
from tortoise.transactions import in_transaction

from kit.errors import BadUserInput, Conflict, GatewayError
from kit.money import MoneyError, from_minor, normalise_currency, to_minor
from kit.text import text_problem
from models.payments import (
    Payment,
    PaymentCustomer,
    PaymentProvider,
    PaymentRefund,
    PaymentStatus,
    PaymentSubscription,
    RefundStatus,
)
from models.tenancy import scoped
from models.webhooks import WebhookInbox
from providers.errors import ProviderError
from resolvers.context import Context
from resolvers.events import emit, global_id

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


SETTLED = frozenset(
    {S.SUCCEEDED.value, S.FAILED.value, S.CANCELED.value, S.PARTIALLY_REFUNDED.value,
     S.REFUNDED.value}
)  # fmt: skip


REFUNDABLE = frozenset({S.SUCCEEDED.value, S.PARTIALLY_REFUNDED.value})


MAX_KEY = 255


MAX_DESCRIPTION = 1000


MAX_REASON = 500


MAX_URL = 2000


MAX_MINOR = 99_999_999


STRIPE_TENS = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})


_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


_METHOD = re.compile(r"^[A-Za-z0-9_]{1,255}$")


META_PAYMENT = "switchboard_payment"


META_REFUND = "switchboard_refund"


META_TENANT = "switchboard_tenant"


HOOK_GRACE = dt.timedelta(minutes=2)


class Vendor(Protocol):
    """One vendor's side of the payment operations (a module: resolvers/payments/stripe.py,
    resolvers/payments/paypal.py). Each call is made after the operation checked the
    caller and claimed the row, and leaves the row in step with the vendor's answer."""

    async def create_customer(self, ctx: Context, customer: PaymentCustomer) -> None: ...

    async def create(
        self, ctx: Context, payment: Payment, customer: PaymentCustomer | None
    ) -> None: ...

    async def confirm(
        self, ctx: Context, payment: Payment, *, payment_method: str | None,
        return_url: str | None,
    ) -> None: ...  # fmt: skip

    async def cancel(self, ctx: Context, payment: Payment) -> None: ...

    async def refund(self, ctx: Context, payment: Payment, refund: PaymentRefund) -> None: ...


@dataclass(frozen=True, slots=True)
class SubscriptionState:
    """A subscription as a vendor answers it, in the gateway's words (Stripe's statuses:
    incomplete, trialing, active, past_due, paused, canceled, unpaid,
    incomplete_expired; PayPal's are mapped onto them)."""

    vendor_id: str
    status: str
    price: str | None = None
    item_id: str | None = None
    latest_invoice: str | None = None
    current_period_end: dt.datetime | None = None
    cancel_at_period_end: bool = False
    approve_url: str | None = None


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


K = TypeVar("K", Payment, PaymentCustomer, PaymentRefund, PaymentSubscription)


async def claim_keyed(
    model: type[K],
    tenant_id: int,
    key: str | None,
    digest: str,
    create: Callable[[BaseDBAsyncClient], Awaitable[K]],
) -> K:
    """The row for the client's idempotency key: the one made before (by a retry or a
    racing twin, on any process: the unique key sends the loser to it), else `create`d
    now in its own transaction, committed before the vendor is called. The same key with
    other input (another `digest`) is CONFLICT."""
    row = None
    if key is not None:
        row = await scoped(model, tenant_id).filter(idempotency_key=key).first()
    if row is None:
        try:
            async with in_transaction() as conn:
                row = await create(conn)
        except IntegrityError:
            row = await scoped(model, tenant_id).filter(idempotency_key=key).first()
            if row is None:
                raise
    if row.request_hash != digest:
        raise Conflict(
            "This idempotency key was used with other input.",
            details={"idempotencyKey": "used with other input"},
            **{f"{model.__name__[0].lower()}{model.__name__[1:]}Id": global_id(
                model.__name__, row.id)},
        )  # fmt: skip
    return row


async def _claim(tenant_id: int, key: str | None, digest: str, values: dict[str, Any]) -> Payment:
    """The payment for this key (made now, committed before the vendor is called)."""

    async def create(conn: BaseDBAsyncClient) -> Payment:
        payment = await Payment.create(
            tenant_id=tenant_id, idempotency_key=key, request_hash=digest,
            status_changed_at=now(), using_db=conn, **values,
        )  # fmt: skip
        await emit(tenant_id, "payment.created", event_data(payment), connection=conn)
        return payment

    return await claim_keyed(Payment, tenant_id, key, digest, create)


def _declined(payment: Payment) -> PaymentDeclined:
    return PaymentDeclined(
        payment.failure_message or "The card was declined.",
        declineCode=payment.decline_code,
        failureCode=payment.failure_code,
        paymentId=global_id("Payment", payment.id),
    )


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


def _young(event: WebhookInbox) -> bool:
    return now() - (event.created_at or now()) < HOOK_GRACE


def _int(value: Any) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


async def set_refund_state(
    refund: PaymentRefund,
    *,
    vendor_id: str,
    status: RefundStatus,
    failure_reason: str | None,
    connection: BaseDBAsyncClient,
) -> None:
    """A refund's state from the vendor; a decided refund stays decided."""
    values: dict[str, Any] = {"vendor_id": vendor_id, "updated_at": now()}
    if status is not RefundStatus.PENDING:
        values["status"] = status.value
        if failure_reason:
            values["failure_reason"] = failure_reason[:500]
    await (
        PaymentRefund.filter(id=refund.id, status=RefundStatus.PENDING.value)
        .using_db(connection)
        .update(**values)
    )
    for name, value in values.items():
        setattr(refund, name, value)


async def refund_refused(refund: PaymentRefund, err: ProviderError) -> None:
    """The vendor refused the refund itself (it will never pass): FAILED, with its reason."""
    if err.is_caller_error:
        await PaymentRefund.filter(id=refund.id, status=RefundStatus.PENDING.value).update(
            status=RefundStatus.FAILED.value, failure_reason=err.message[:500]
        )
        refund.status = RefundStatus.FAILED.value


async def refund_made(
    payment: Payment,
    refund: PaymentRefund,
    *,
    vendor_id: str,
    status: RefundStatus,
    failure_reason: str | None,
) -> None:
    """The vendor's answer to a refund: the refund's state, then the payment's total."""
    async with in_transaction() as conn:
        await set_refund_state(
            refund, vendor_id=vendor_id, status=status, failure_reason=failure_reason,
            connection=conn,
        )  # fmt: skip
        fresh = await Payment.filter(id=payment.id).using_db(conn).first()
        if fresh is not None:
            await apply_refunded_total(fresh, await _refunds_total(fresh, conn), connection=conn)


# Subscriptions ---------------------------------------------------------------------------

ENDED = frozenset({"canceled", "incomplete_expired"})


def subscription_data(row: PaymentSubscription) -> dict[str, Any]:
    return {
        "subscription_id": global_id("PaymentSubscription", row.id),
        "status": row.status,
        "price": row.price,
        "customer_id": None
        if row.customer_id is None
        else global_id("PaymentCustomer", row.customer_id),
        "cancel_at_period_end": row.cancel_at_period_end,
    }


async def apply_state(
    row: PaymentSubscription,
    state: SubscriptionState,
    *,
    at: int,
    connection: BaseDBAsyncClient,
) -> None:
    """The vendor's state of the subscription onto the row, as of `at` (an event's
    `created`, or the time of an API answer): anything older than what was applied
    changes nothing, and an ended subscription stays ended."""
    locked = (
        await PaymentSubscription.filter(id=row.id).using_db(connection).select_for_update().first()
    )
    if locked is None or at < locked.synced_at:
        return
    if locked.status in ENDED and state.status not in ENDED:
        return
    values: dict[str, Any] = {
        "vendor_id": state.vendor_id, "status": state.status[:32],
        "price": state.price or locked.price, "item_id": state.item_id or locked.item_id,
        "latest_invoice": state.latest_invoice or locked.latest_invoice,
        "approve_url": state.approve_url if state.status == "incomplete" else None,
        "current_period_end": state.current_period_end or locked.current_period_end,
        "cancel_at_period_end": state.cancel_at_period_end, "synced_at": at,
        "updated_at": now(),
    }  # fmt: skip
    await PaymentSubscription.filter(id=row.id).using_db(connection).update(**values)
    changed = (locked.status, locked.price, locked.cancel_at_period_end) != (
        values["status"], values["price"], values["cancel_at_period_end"]
    )  # fmt: skip
    for name, value in values.items():
        setattr(locked, name, value)
    if changed:
        await emit(
            locked.tenant_id,
            f"payment_subscription.{locked.status}",
            subscription_data(locked),
            connection=connection,
        )

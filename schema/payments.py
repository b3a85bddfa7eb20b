"""Payments: customers, payment intents, confirmation, cancellation, refunds, and the live
`paymentStatus`. Money is an exact decimal with its ISO 4217 currency."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncGenerator
from decimal import Decimal
from typing import Annotated, Any, ClassVar

import strawberry
from strawberry import relay
from strawberry.types import Info

from kit.money import MoneyError, from_minor
from models.payments import Payment as PaymentRow
from models.payments import PaymentCustomer as CustomerRow
from models.payments import PaymentProvider, PaymentStatus, RefundStatus
from models.payments import PaymentRefund as RefundRow
from models.payments import PaymentSubscription as SubscriptionRow
from providers.stripe import Invoice as StripeInvoice
from resolvers import payments as api
from resolvers.payments import subscriptions
from resolvers.payments.states import amount_of, refunded_of
from schema.permissions import mutation, query, subscription
from schema.relay import After, Connection, First, ModelNode, decode_id

strawberry.enum(
    PaymentStatus,
    description="Where a payment is: REQUIRES_PAYMENT_METHOD (created, waiting for a payment "
    "method), REQUIRES_ACTION (the customer must authenticate: see `nextActionUrl`), "
    "PROCESSING, SUCCEEDED, FAILED (declined or not authenticated: see `declineCode`), "
    "CANCELED, PARTIALLY_REFUNDED, REFUNDED. It only moves forward.",
)
strawberry.enum(
    RefundStatus,
    description="Where a refund is: PENDING (asked for), SUCCEEDED, FAILED or CANCELED.",
)


strawberry.enum(PaymentProvider, description="The payment vendor.")


@strawberry.type(description="A customer of the organization at the payment vendor.")
class PaymentCustomer(ModelNode):
    _model: ClassVar[type] = CustomerRow
    _permission: ClassVar[str] = "payments:read"
    id: relay.NodeID[int]
    provider: PaymentProvider = strawberry.field(description="The vendor it lives at.")
    vendor_id: str | None = strawberry.field(
        description="The vendor's id of the customer (Stripe: `cus_…`)."
    )
    email: str | None = strawberry.field(description="The customer's email address.")
    name: str | None = strawberry.field(description="The customer's name.")
    created_at: dt.datetime = strawberry.field(description="When it was created.")

    @classmethod
    def from_row(cls, row: Any) -> PaymentCustomer:
        return cls(
            id=row.id,
            provider=PaymentProvider(row.provider),
            vendor_id=row.vendor_id,
            email=row.email,
            name=row.name,
            created_at=row.created_at,
        )


async def _customer(info: Info, customer_id: int | None) -> PaymentCustomer | None:
    """A payment's or subscription's customer, batched per request."""
    if customer_id is None:
        return None
    ctx = info.context

    async def batch(ids: list[int]) -> list[Any]:
        found = await api.load_customers(ctx, ids)
        return [found.get(i) for i in ids]

    row = await ctx.loader("payment_customers", batch).load(customer_id)
    return None if row is None else PaymentCustomer.from_row(row)


@strawberry.type(description="Money sent back for a payment.")
class PaymentRefund:
    id: relay.GlobalID = strawberry.field(description="The refund's id.")
    status: RefundStatus = strawberry.field(description="Where it is.")
    amount: Decimal = strawberry.field(description="How much, exact, in `currency`.")
    currency: str = strawberry.field(description="ISO 4217 code of `amount`.")
    reason: str | None = strawberry.field(description="Why, as given.")
    vendor_id: str | None = strawberry.field(description="The vendor's id (Stripe: `re_…`).")
    failure_reason: str | None = strawberry.field(description="Why it FAILED.")
    created_at: dt.datetime = strawberry.field(description="When it was asked for.")

    @classmethod
    def from_row(cls, row: RefundRow) -> PaymentRefund:
        return cls(
            id=relay.GlobalID("PaymentRefund", str(row.id)),
            status=RefundStatus(row.status),
            amount=from_minor(row.amount_minor, row.currency),
            currency=row.currency,
            reason=row.reason,
            vendor_id=row.vendor_id,
            failure_reason=row.failure_reason,
            created_at=row.created_at,
        )


@strawberry.type(description="One charge, whatever the vendor, with its refunds.")
class Payment(ModelNode):
    _model: ClassVar[type] = PaymentRow
    _permission: ClassVar[str] = "payments:read"
    id: relay.NodeID[int]
    provider: PaymentProvider = strawberry.field(description="The vendor that charges.")
    status: PaymentStatus = strawberry.field(description="Where it is.")
    amount: Decimal = strawberry.field(
        description="The amount, exact (a decimal string with the currency's own places)."
    )
    amount_refunded: Decimal = strawberry.field(description="How much went back so far.")
    currency: str = strawberry.field(description="ISO 4217 code of the amounts.")
    description: str | None = strawberry.field(description="What it is for.")
    vendor_id: str | None = strawberry.field(
        description="The vendor's id (Stripe: the payment intent `pi_…`); null until the "
        "vendor answered."
    )
    client_secret: str | None = strawberry.field(
        description="The secret a front end confirms the payment with (Stripe.js)."
    )
    next_action_url: str | None = strawberry.field(
        description="Where the customer authenticates (3-D Secure) when REQUIRES_ACTION."
    )
    decline_code: str | None = strawberry.field(
        description="Why the card was declined (the vendor's code, e.g. `insufficient_funds`)."
    )
    failure_code: str | None = strawberry.field(
        description="The vendor's error code of the failed attempt (e.g. `card_declined`)."
    )
    failure_message: str | None = strawberry.field(description="The vendor's explanation.")
    idempotency_key: str | None = strawberry.field(
        description="The client's idempotency key it was created with."
    )
    succeeded_at: dt.datetime | None = strawberry.field(description="When the money moved.")
    created_at: dt.datetime = strawberry.field(description="When it was created.")
    updated_at: dt.datetime = strawberry.field(description="When it last changed.")
    _customer_id: strawberry.Private[int | None] = None

    @classmethod
    def from_row(cls, row: Any) -> Payment:
        return cls(
            id=row.id,
            provider=PaymentProvider(row.provider),
            status=PaymentStatus(row.status),
            amount=amount_of(row),
            amount_refunded=refunded_of(row),
            currency=row.currency,
            description=row.description,
            vendor_id=row.vendor_id,
            client_secret=row.client_secret,
            next_action_url=row.next_action_url,
            decline_code=row.decline_code,
            failure_code=row.failure_code,
            failure_message=row.failure_message,
            idempotency_key=row.idempotency_key,
            succeeded_at=row.succeeded_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
            _customer_id=row.customer_id,
        )

    @strawberry.field(description="Its refunds, oldest first.")
    async def refunds(self, info: Info) -> list[PaymentRefund]:
        ctx = info.context

        async def batch(ids: list[int]) -> list[Any]:
            found = await api.refunds_of(ctx, ids)
            return [found.get(i, []) for i in ids]

        rows = await ctx.loader("payment_refunds", batch).load(self.id)
        return [PaymentRefund.from_row(r) for r in rows]

    @strawberry.field(description="The customer charged, if one was given.")
    async def customer(self, info: Info) -> PaymentCustomer | None:
        return await _customer(info, self._customer_id)


@strawberry.type(description="A customer's subscription to one of the organization's prices.")
class PaymentSubscription(ModelNode):
    _model: ClassVar[type] = SubscriptionRow
    _permission: ClassVar[str] = "payments:read"
    id: relay.NodeID[int]
    provider: PaymentProvider = strawberry.field(description="The vendor it lives at.")
    status: str = strawberry.field(
        description="The vendor's status: incomplete (its first invoice is unpaid), "
        "trialing, active, past_due, canceled, unpaid, incomplete_expired."
    )
    price: str = strawberry.field(description="The vendor's price id (Stripe: `price_…`).")
    vendor_id: str | None = strawberry.field(description="The vendor's id (`sub_…`).")
    latest_invoice_id: str | None = strawberry.field(
        description="Its latest invoice at the vendor (`in_…`; see `paymentInvoices`)."
    )
    current_period_end: dt.datetime | None = strawberry.field(
        description="When the period paid for ends."
    )
    cancel_at_period_end: bool = strawberry.field(
        description="Whether it ends at the period's end."
    )
    idempotency_key: str | None = strawberry.field(
        description="The client's idempotency key it was created with."
    )
    created_at: dt.datetime = strawberry.field(description="When it was created.")
    updated_at: dt.datetime = strawberry.field(description="When it last changed.")
    approve_url: str | None = strawberry.field(
        description="Where the payer approves it while it is incomplete (PayPal)."
    )
    _customer_id: strawberry.Private[int | None] = None

    @classmethod
    def from_row(cls, row: Any) -> PaymentSubscription:
        return cls(
            id=row.id, provider=PaymentProvider(row.provider), status=row.status,
            price=row.price, vendor_id=row.vendor_id, latest_invoice_id=row.latest_invoice,
            current_period_end=row.current_period_end,
            cancel_at_period_end=row.cancel_at_period_end,
            idempotency_key=row.idempotency_key, created_at=row.created_at,
            updated_at=row.updated_at, approve_url=row.approve_url,
            _customer_id=row.customer_id,
        )  # fmt: skip

    @strawberry.field(description="The customer subscribed (Stripe; none at PayPal).")
    async def customer(self, info: Info) -> PaymentCustomer | None:
        return await _customer(info, self._customer_id)


@strawberry.type(description="An invoice at Stripe.")
class PaymentInvoice:
    id: str = strawberry.field(description="Stripe's id (`in_…`); also the page cursor.")
    number: str | None = strawberry.field(description="Its number (once finalized).")
    status: str | None = strawberry.field(
        description="Stripe's status: draft, open, paid, uncollectible or void."
    )
    description: str | None = strawberry.field(description="What it is for.")
    amount_due: Decimal = strawberry.field(description="What it asks for, exact.")
    amount_paid: Decimal = strawberry.field(description="What was paid, exact.")
    currency: str = strawberry.field(description="ISO 4217 code of the amounts.")
    subscription_id: str | None = strawberry.field(
        description="The subscription it bills, if any (`sub_…`)."
    )
    created_at: dt.datetime = strawberry.field(description="When it was made.")
    period_start: dt.datetime | None = strawberry.field(description="The period it bills from.")
    period_end: dt.datetime | None = strawberry.field(description="The period it bills to.")
    hosted_invoice_url: str | None = strawberry.field(description="Stripe's page for it.")
    pdf_url: str | None = strawberry.field(description="Its PDF at Stripe.")

    @classmethod
    def of(cls, row: StripeInvoice) -> PaymentInvoice:
        def money(minor: int) -> Decimal:
            try:
                return from_minor(minor, row.currency)
            except MoneyError:
                return Decimal(minor)

        def at(value: int | None) -> dt.datetime | None:
            return None if value is None else dt.datetime.fromtimestamp(value, dt.UTC)

        return cls(
            id=row.id, number=row.number, status=row.status, description=row.description,
            amount_due=money(row.amount_due), amount_paid=money(row.amount_paid),
            currency=row.currency, subscription_id=row.subscription,
            created_at=dt.datetime.fromtimestamp(row.created, dt.UTC),
            period_start=at(row.period_start), period_end=at(row.period_end),
            hosted_invoice_url=row.hosted_invoice_url, pdf_url=row.invoice_pdf,
        )  # fmt: skip


@strawberry.type(description="A page of invoices, newest first.")
class PaymentInvoicePage:
    invoices: list[PaymentInvoice] = strawberry.field(description="The invoices.")
    has_more: bool = strawberry.field(
        description="Whether older ones follow (pass the last id as `after`)."
    )

    @classmethod
    def of(cls, rows: list[StripeInvoice], more: bool) -> PaymentInvoicePage:
        return cls(invoices=[PaymentInvoice.of(r) for r in rows], has_more=more)


InvoiceFirst = Annotated[
    int | None, strawberry.argument(description="How many (1 to 100, default 20).")
]
InvoiceAfter = Annotated[
    str | None, strawberry.argument(description="The last invoice id of a page.")
]

IDEMPOTENCY = (
    "The client's key for this request (1 to 255 printable ASCII characters): the same "
    "key with the same input answers the first result again, never a second charge; with "
    "other input it is CONFLICT."
)


@strawberry.input(description="A customer to create at the payment vendor.")
class CreatePaymentCustomerInput:
    email: str | None = strawberry.field(default=None, description="Their email address.")
    name: str | None = strawberry.field(default=None, description="Their name.")
    provider: PaymentProvider = strawberry.field(
        default=PaymentProvider.STRIPE, description="The vendor."
    )
    idempotency_key: str | None = strawberry.field(default=None, description=IDEMPOTENCY)


@strawberry.type(description="The customer created.")
class CreatePaymentCustomerPayload:
    customer: PaymentCustomer = strawberry.field(description="The customer.")


@strawberry.input(description="A payment to take.")
class CreatePaymentIntentInput:
    amount: Decimal = strawberry.field(
        description="How much, exact, with at most the currency's decimal places (0 for JPY, "
        "3 for KWD — charged by Stripe in steps of 0.010)."
    )
    currency: str = strawberry.field(description="ISO 4217 code, e.g. EUR.")
    customer_id: relay.GlobalID | None = strawberry.field(
        default=None, description="The customer to charge (a PaymentCustomer)."
    )
    description: str | None = strawberry.field(default=None, description="What it is for.")
    payment_method: str | None = strawberry.field(
        default=None,
        description="The vendor's payment method id (Stripe: `pm_…`; test methods such as "
        "`pm_card_visa` in test mode).",
    )
    confirm: bool = strawberry.field(
        default=False, description="Confirm at once (needs `paymentMethod`)."
    )
    return_url: str | None = strawberry.field(
        default=None, description="Where the customer comes back to after 3-D Secure."
    )
    provider: PaymentProvider = strawberry.field(
        default=PaymentProvider.STRIPE, description="The vendor."
    )
    idempotency_key: str | None = strawberry.field(default=None, description=IDEMPOTENCY)


@strawberry.input(description="A payment to confirm with a payment method.")
class ConfirmPaymentInput:
    id: relay.GlobalID = strawberry.field(description="Id of the payment.")
    payment_method: str | None = strawberry.field(
        default=None, description="The payment method (default: the one it was created with)."
    )
    return_url: str | None = strawberry.field(
        default=None, description="Where the customer comes back to after 3-D Secure."
    )


@strawberry.input(description="A payment to cancel.")
class CancelPaymentInput:
    id: relay.GlobalID = strawberry.field(description="Id of the payment.")


@strawberry.input(description="Money to send back for a payment.")
class RefundPaymentInput:
    id: relay.GlobalID = strawberry.field(description="Id of the payment.")
    amount: Decimal | None = strawberry.field(
        default=None, description="How much (default: all that is left to refund)."
    )
    reason: str | None = strawberry.field(default=None, description="Why (kept with it).")
    idempotency_key: str | None = strawberry.field(default=None, description=IDEMPOTENCY)


@strawberry.type(description="The payment after the change.")
class PaymentPayload:
    payment: Payment = strawberry.field(description="The payment.")


@strawberry.type(description="The refund made and the payment after it.")
class RefundPaymentPayload:
    payment: Payment = strawberry.field(description="The payment.")
    refund: PaymentRefund = strawberry.field(description="The refund.")


@strawberry.input(description="A subscription to create at the vendor.")
class CreatePaymentSubscriptionInput:
    customer_id: relay.GlobalID | None = strawberry.field(
        default=None, description="The customer (Stripe; required there, none at PayPal)."
    )
    price: str = strawberry.field(
        description="The organization's Stripe price (`price_…`) or PayPal plan (`P-…`)."
    )
    provider: PaymentProvider = strawberry.field(
        default=PaymentProvider.STRIPE, description="The vendor."
    )
    return_url: str | None = strawberry.field(
        default=None, description="Where PayPal sends the payer back after approving."
    )
    payment_method: str | None = strawberry.field(
        default=None,
        description="What the first invoice is charged to (without one, or declined, the "
        "subscription is `incomplete` and its invoice open to pay).",
    )
    idempotency_key: str | None = strawberry.field(default=None, description=IDEMPOTENCY)


@strawberry.input(description="A change to a subscription.")
class ChangePaymentSubscriptionInput:
    id: relay.GlobalID = strawberry.field(description="Id of the subscription.")
    price: str | None = strawberry.field(default=None, description="Its new price.")
    cancel_at_period_end: bool | None = strawberry.field(
        default=None, description="End it at the period's end (true), or keep it (false)."
    )


@strawberry.input(description="A subscription to end now.")
class CancelPaymentSubscriptionInput:
    id: relay.GlobalID = strawberry.field(description="Id of the subscription.")


@strawberry.type(description="The subscription after the change.")
class PaymentSubscriptionPayload:
    subscription: PaymentSubscription = strawberry.field(description="The subscription.")


@strawberry.input(description="One line of an invoice.")
class PaymentInvoiceLineInput:
    amount: Decimal = strawberry.field(description="How much, exact, in the invoice's currency.")
    description: str = strawberry.field(description="What it is for.")


@strawberry.input(description="A draft invoice to a customer, at Stripe.")
class CreatePaymentInvoiceInput:
    customer_id: relay.GlobalID = strawberry.field(description="The customer (at Stripe).")
    currency: str = strawberry.field(description="ISO 4217 code, e.g. EUR.")
    lines: list[PaymentInvoiceLineInput] = strawberry.field(description="1 to 50 lines.")
    description: str | None = strawberry.field(default=None, description="What it is for.")
    idempotency_key: str = strawberry.field(description=IDEMPOTENCY)


@strawberry.input(description="An invoice to finalize.")
class FinalizePaymentInvoiceInput:
    id: str = strawberry.field(description="Stripe's id of the invoice (`in_…`).")


@strawberry.input(description="An open invoice to pay.")
class PayPaymentInvoiceInput:
    id: str = strawberry.field(description="Stripe's id of the invoice (`in_…`).")
    payment_method: str | None = strawberry.field(
        default=None,
        description="What to charge (default: the subscription's payment method).",
    )


@strawberry.type(description="The invoice after the change.")
class PaymentInvoicePayload:
    invoice: PaymentInvoice = strawberry.field(description="The invoice.")


def _customer_id(gid: relay.GlobalID | None) -> int | None:
    return None if gid is None else decode_id(gid, "PaymentCustomer")


@strawberry.type
class Query:
    @query(
        operation=api.list_payments,
        description="Payments of the current organization, newest first.",
    )
    async def payments(
        self,
        info: Info,
        status: Annotated[
            PaymentStatus | None, strawberry.argument(description="Only in this state.")
        ] = None,
        customer_id: Annotated[
            relay.GlobalID | None, strawberry.argument(description="Only of this customer.")
        ] = None,
        first: First = None,
        after: After = None,
    ) -> Connection[Payment]:
        page = await api.list_payments(
            info.context,
            first=first,
            after=after,
            status=None if status is None else status.value,
            customer_id=_customer_id(customer_id),
        )
        return Connection.of(page, Payment.from_row)

    @query(operation=api.get_payment, description="One payment of the organization.")
    async def payment(
        self,
        info: Info,
        id: Annotated[relay.GlobalID, strawberry.argument(description="Id of the payment.")],
    ) -> Payment:
        row = await api.get_payment(info.context, decode_id(id, "Payment"))
        return Payment.from_row(row)

    @query(
        operation=subscriptions.list_subscriptions,
        description="Subscriptions of the organization's customers, newest first.",
    )
    async def payment_subscriptions(
        self,
        info: Info,
        customer_id: Annotated[
            relay.GlobalID | None, strawberry.argument(description="Only of this customer.")
        ] = None,
        first: First = None,
        after: After = None,
    ) -> Connection[PaymentSubscription]:
        page = await subscriptions.list_subscriptions(
            info.context, customer_id=_customer_id(customer_id), first=first, after=after
        )
        return Connection.of(page, PaymentSubscription.from_row)

    @query(
        operation=subscriptions.list_invoices,
        description="A customer's invoices at Stripe, newest first.",
    )
    async def payment_invoices(
        self,
        info: Info,
        customer_id: Annotated[
            relay.GlobalID, strawberry.argument(description="The customer (at Stripe).")
        ],
        first: InvoiceFirst = None,
        after: InvoiceAfter = None,
    ) -> PaymentInvoicePage:
        rows, more = await subscriptions.list_invoices(
            info.context, customer_id=decode_id(customer_id, "PaymentCustomer"), first=first,
            after=after,
        )  # fmt: skip
        return PaymentInvoicePage.of(rows, more)

    @query(
        operation=api.list_customers,
        description="The organization's payment customers, newest first.",
    )
    async def payment_customers(
        self, info: Info, first: First = None, after: After = None
    ) -> Connection[PaymentCustomer]:
        page = await api.list_customers(info.context, first=first, after=after)
        return Connection.of(page, PaymentCustomer.from_row)


@strawberry.type
class Mutation:
    @mutation(
        operation=api.create_customer,
        description="Create a customer at the payment vendor.",
    )
    async def create_payment_customer(
        self, info: Info, input: CreatePaymentCustomerInput
    ) -> CreatePaymentCustomerPayload:
        row = await api.create_customer(
            info.context,
            email=input.email,
            name=input.name,
            idempotency_key=input.idempotency_key,
            provider=input.provider.value,
        )
        return CreatePaymentCustomerPayload(customer=PaymentCustomer.from_row(row))

    @mutation(
        operation=api.create_payment,
        description="Create a payment (Stripe: a payment intent), confirmed at once with "
        "`confirm`. A decline is PAYMENT_DECLINED with `declineCode` and `paymentId`; 3-D "
        "Secure leaves it REQUIRES_ACTION with `nextActionUrl`; follow it with "
        "`paymentStatus`.",
    )
    async def create_payment_intent(
        self, info: Info, input: CreatePaymentIntentInput
    ) -> PaymentPayload:
        customer_id = _customer_id(input.customer_id)
        row = await api.create_payment(
            info.context,
            amount=input.amount,
            currency=input.currency,
            customer_id=customer_id,
            description=input.description,
            payment_method=input.payment_method,
            confirm=input.confirm,
            return_url=input.return_url,
            idempotency_key=input.idempotency_key,
            provider=input.provider.value,
        )
        return PaymentPayload(payment=Payment.from_row(row))

    @mutation(
        operation=api.confirm_payment,
        description="Confirm a payment waiting for its payment method. A decline is "
        "PAYMENT_DECLINED with `declineCode`.",
    )
    async def confirm_payment(self, info: Info, input: ConfirmPaymentInput) -> PaymentPayload:
        row = await api.confirm_payment(
            info.context,
            decode_id(input.id, "Payment"),
            payment_method=input.payment_method,
            return_url=input.return_url,
        )
        return PaymentPayload(payment=Payment.from_row(row))

    @mutation(
        operation=api.cancel_payment,
        description="Cancel a payment that has not succeeded.",
    )
    async def cancel_payment(self, info: Info, input: CancelPaymentInput) -> PaymentPayload:
        row = await api.cancel_payment(info.context, decode_id(input.id, "Payment"))
        return PaymentPayload(payment=Payment.from_row(row))

    @mutation(
        operation=api.refund_payment,
        description="Refund a succeeded payment, in part or in full.",
    )
    async def refund_payment(self, info: Info, input: RefundPaymentInput) -> RefundPaymentPayload:
        row, refund = await api.refund_payment(
            info.context,
            decode_id(input.id, "Payment"),
            amount=input.amount,
            reason=input.reason,
            idempotency_key=input.idempotency_key,
        )
        return RefundPaymentPayload(
            payment=Payment.from_row(row), refund=PaymentRefund.from_row(refund)
        )

    @mutation(
        operation=subscriptions.create_subscription,
        description="Subscribe to one of the organization's prices: a Stripe customer to a "
        "price (its first invoice charged at once), or a PayPal plan its payer approves at "
        "`approveUrl`.",
    )
    async def create_payment_subscription(
        self, info: Info, input: CreatePaymentSubscriptionInput
    ) -> PaymentSubscriptionPayload:
        row = await subscriptions.create_subscription(
            info.context, customer_id=_customer_id(input.customer_id), price=input.price,
            payment_method=input.payment_method, idempotency_key=input.idempotency_key,
            provider=input.provider.value, return_url=input.return_url,
        )  # fmt: skip
        return PaymentSubscriptionPayload(subscription=PaymentSubscription.from_row(row))

    @mutation(
        operation=subscriptions.change_subscription,
        description="Move a subscription to another price, or end it at the period's end.",
    )
    async def change_payment_subscription(
        self, info: Info, input: ChangePaymentSubscriptionInput
    ) -> PaymentSubscriptionPayload:
        row = await subscriptions.change_subscription(
            info.context, decode_id(input.id, "PaymentSubscription"), price=input.price,
            cancel_at_period_end=input.cancel_at_period_end,
        )  # fmt: skip
        return PaymentSubscriptionPayload(subscription=PaymentSubscription.from_row(row))

    @mutation(
        operation=subscriptions.cancel_subscription,
        description="End a subscription now.",
    )
    async def cancel_payment_subscription(
        self, info: Info, input: CancelPaymentSubscriptionInput
    ) -> PaymentSubscriptionPayload:
        row = await subscriptions.cancel_subscription(
            info.context, decode_id(input.id, "PaymentSubscription")
        )
        return PaymentSubscriptionPayload(subscription=PaymentSubscription.from_row(row))

    @mutation(
        operation=subscriptions.create_invoice,
        description="Make a draft invoice to a customer at Stripe (finalize it, then pay it).",
    )
    async def create_payment_invoice(
        self, info: Info, input: CreatePaymentInvoiceInput
    ) -> PaymentInvoicePayload:
        row = await subscriptions.create_invoice(
            info.context, customer_id=decode_id(input.customer_id, "PaymentCustomer"),
            currency=input.currency, lines=[(x.amount, x.description) for x in input.lines],
            description=input.description, idempotency_key=input.idempotency_key,
        )  # fmt: skip
        return PaymentInvoicePayload(invoice=PaymentInvoice.of(row))

    @mutation(
        operation=subscriptions.finalize_invoice,
        description="Finalize a draft invoice: it gets its number and can be paid.",
    )
    async def finalize_payment_invoice(
        self, info: Info, input: FinalizePaymentInvoiceInput
    ) -> PaymentInvoicePayload:
        row = await subscriptions.finalize_invoice(info.context, input.id)
        return PaymentInvoicePayload(invoice=PaymentInvoice.of(row))

    @mutation(
        operation=subscriptions.pay_invoice,
        description="Pay an open invoice; a decline is PAYMENT_DECLINED with `declineCode`.",
    )
    async def pay_payment_invoice(
        self, info: Info, input: PayPaymentInvoiceInput
    ) -> PaymentInvoicePayload:
        row = await subscriptions.pay_invoice(
            info.context, input.id, payment_method=input.payment_method
        )
        return PaymentInvoicePayload(invoice=PaymentInvoice.of(row))


@strawberry.type
class Subscription:
    @subscription(
        operation=api.payment_status,
        description="A payment now, then at each change; completes once it is settled "
        "(SUCCEEDED, FAILED, CANCELED, PARTIALLY_REFUNDED or REFUNDED). Another "
        "organization's id is NOT_FOUND.",
    )
    async def payment_status(
        self,
        info: Info,
        id: Annotated[relay.GlobalID, strawberry.argument(description="Id of the payment.")],
    ) -> AsyncGenerator[Payment, None]:
        async for row in api.payment_status(info.context, decode_id(id, "Payment")):
            yield Payment.from_row(row)

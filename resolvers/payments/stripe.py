"""Stripe's side of payments: payment intents and refunds through the `stripe` SDK (its
transport on the provider layer), and Stripe's payment webhooks from the inbox."""

from __future__ import annotations

from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from kit.errors import BadUserInput, Conflict
from models.payments import (
    Payment,
    PaymentCustomer,
    PaymentProvider,
    PaymentRefund,
    PaymentStatus,
    RefundStatus,
)
from models.webhooks import WebhookInbox
from providers import stripe
from providers.errors import ProviderError
from resolvers.context import Context
from resolvers.credentials import call_labels, resolve_tenant_credential
from resolvers.payments.states import (
    MAX_URL,
    META_PAYMENT,
    META_REFUND,
    META_TENANT,
    NotYetCreated,
    S,
    _claim_method,
    _customer_of,
    _declined,
    _hash,
    _int,
    _method,
    _refunds_total,
    _url,
    _young,
    advance,
    apply_refunded_total,
    log,
    now,
    refund_made,
    refund_refused,
    set_refund_state,
)
from resolvers.upstream import provider_registry, to_gateway_error
from resolvers.webhooks_in import inbox_handler


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
            labels=call_labels(ctx, credential, tenant_id),
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


async def create(ctx: Context, payment: Payment, customer: PaymentCustomer | None) -> None:
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


async def create_customer(ctx: Context, customer: PaymentCustomer) -> None:
    """The customer at Stripe (`cus_…`), keyed on our row so a retry makes one."""
    client = await stripe_client(ctx, customer.tenant_id)
    try:
        made = await client.create_customer(
            email=customer.email, name=customer.name,
            idempotency_key=f"sb-cus-{customer.id}-create",
            metadata={"switchboard_customer": str(customer.id),
                      META_TENANT: str(customer.tenant_id)},
        )  # fmt: skip
    except ProviderError as err:
        raise to_gateway_error(err) from None
    await PaymentCustomer.filter(id=customer.id).update(vendor_id=made.id, updated_at=now())
    customer.vendor_id = made.id


async def confirm(
    ctx: Context, payment: Payment, *, payment_method: str | None, return_url: str | None
) -> None:
    """Confirm the intent with a payment method (the one it was created with by default).
    A retry with the same method gets Stripe's first answer again."""
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
        await create(ctx, payment, await _customer_of(payment))
        return
    client = await stripe_client(ctx, payment.tenant_id)
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


async def cancel(ctx: Context, payment: Payment) -> None:
    """Cancel the intent at Stripe (one that never reached Stripe: here only)."""
    if payment.vendor_id is None:
        async with in_transaction() as conn:
            await advance(payment, S.CANCELED, connection=conn)
        return
    client = await stripe_client(ctx, payment.tenant_id)
    try:
        intent = await client.cancel_payment_intent(
            payment.vendor_id, idempotency_key=f"sb-pay-{payment.id}-cancel"
        )
    except ProviderError as err:
        raise to_gateway_error(err, field="id") from None
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


async def refund(ctx: Context, payment: Payment, refund: PaymentRefund) -> None:
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
        await refund_refused(refund, err)
        raise to_gateway_error(err, field="amount") from None
    await refund_made(
        payment,
        refund,
        vendor_id=made.id,
        status=REFUND_STATUS.get(made.status, RefundStatus.PENDING),
        failure_reason=made.failure_reason,
    )


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
    """A refund's state from the vendor's refund object."""
    await set_refund_state(
        refund,
        vendor_id=made.id,
        status=REFUND_STATUS.get(made.status, RefundStatus.PENDING),
        failure_reason=made.failure_reason,
        connection=connection,
    )


def event_object(event: WebhookInbox) -> dict[str, Any]:
    """A Stripe event's `data.object` (empty when it has none with an id)."""
    data = event.payload.get("data") if isinstance(event.payload, dict) else None
    obj = data.get("object") if isinstance(data, dict) else None
    return obj if isinstance(obj, dict) and isinstance(obj.get("id"), str) else {}


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
    obj = event_object(event)
    if not obj:
        return
    intent = stripe.PaymentIntent.of(obj)
    payment = await _payment_for(event, intent.id, intent.metadata, connection)
    if payment is None:
        return  # not a payment of ours (made elsewhere in the account)
    await apply_intent(payment, intent, connection=connection)


@inbox_handler("stripe", "charge.refunded")
async def on_charge_refunded(event: WebhookInbox, connection: BaseDBAsyncClient) -> None:
    obj = event_object(event)
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
    obj = event_object(event)
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

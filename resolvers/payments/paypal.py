"""PayPal's side of payments: Orders v2 (create, then capture once the payer approved it —
the documents' "execute"), refunds of the capture, and PayPal's webhooks from the inbox.

A PayPal payment is REQUIRES_ACTION from its creation (the payer approves it at
`nextActionUrl`, PayPal's `payer-action` link) until `confirmPayment` captures it:
SUCCEEDED when the capture completed, PROCESSING while PayPal holds it for review (a
`PAYMENT.CAPTURE.COMPLETED` webhook ends that), FAILED with `declineCode`
`INSTRUMENT_DECLINED` when the payer's funding source was refused (the payer may approve
again with another one, and the capture be tried again). Every POST carries a
`PayPal-Request-Id` derived from our row and operation, so a retried capture or refund is
PayPal's first answer again, never a second one.

The order's purchase unit carries `custom_id` `sb:<tenant>:<payment>` (a refund's:
`…:<refund>`), written before PayPal is called: a webhook names the row it is about even
when it outruns the mutation's own answer, and an event naming another organization's
payment is ignored. The capture's id (what refunds are made on) is kept in the payment's
metadata.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any
from urllib.parse import urlsplit

from cachetools import TTLCache
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from kit.errors import BadUserInput, Conflict
from kit.money import from_minor
from kit.settings import Settings
from kit.signing import SignatureInvalid
from kit.ssrf import UnsafeDestination
from models.payments import (
    Payment,
    PaymentCustomer,
    PaymentProvider,
    PaymentRefund,
    PaymentStatus,
    PaymentSubscription,
    RefundStatus,
)
from models.webhooks import WebhookInbox
from providers import paypal
from providers.errors import ProviderError
from providers.registry import ProviderRegistry
from resolvers.context import Context
from resolvers.credentials import paypal_client, resolve_tenant_credential
from resolvers.payments.states import (
    MAX_URL,
    NotYetCreated,
    S,
    SubscriptionState,
    _declined,
    _int,
    _refunds_total,
    _young,
    advance,
    amount_of,
    apply_refunded_total,
    apply_state,
    log,
    now,
    refund_made,
    refund_refused,
    set_refund_state,
)
from resolvers.upstream import to_gateway_error
from resolvers.webhooks_in import inbox_handler

CERT_PATH = "/v1/notifications/certs/"
_CUSTOM = re.compile(r"^sb:(\d{1,18}):(\d{1,18})(?::(\d{1,18}))?$")
# Webhook signing certificates by URL (public data; PayPal rotates them rarely).
_CERTIFICATES: TTLCache[str, bytes] = TTLCache(maxsize=64, ttl=3600)


async def client_for(ctx: Context, tenant_id: int) -> paypal.PayPalClient:
    """PayPal as `tenant_id` reaches it: its own REST app → the operator's → the sandbox."""
    credential = await resolve_tenant_credential(ctx, paypal.PROVIDER, tenant_id)
    return paypal_client(ctx, credential, tenant_id)


def custom_id(payment: Payment, refund: PaymentRefund | None = None) -> str:
    base = f"sb:{payment.tenant_id}:{payment.id}"
    return base if refund is None else f"{base}:{refund.id}"


def _value(minor: int, payment: Payment) -> str:
    return str(from_minor(minor, payment.currency))


async def _failed(payment: Payment, err: ProviderError) -> None:
    async with in_transaction() as conn:
        await advance(
            payment, S.FAILED, connection=conn,
            failure_code=(err.vendor_code or "")[:100] or None,
            decline_code=(err.vendor_code or "")[:100] or None
            if err.vendor_code == paypal.INSTRUMENT_DECLINED else None,
            failure_message=err.message[:1000] or None,
        )  # fmt: skip


# The operations' PayPal side ------------------------------------------------------------


async def create_customer(ctx: Context, customer: PaymentCustomer) -> None:
    """PayPal's Orders API has no customer object: the payer is whoever approves."""
    raise BadUserInput(
        "PayPal has no customers to create; a PayPal payment is approved by its payer.",
        details={"provider": "customers are Stripe's"},
    )


async def create(ctx: Context, payment: Payment, customer: PaymentCustomer | None) -> None:
    """The order at PayPal; the payment waits for the payer's approval (REQUIRES_ACTION)."""
    client = await client_for(ctx, payment.tenant_id)
    try:
        order = await client.create_order(
            amount=str(amount_of(payment)),
            currency=payment.currency,
            custom_id=custom_id(payment),
            request_id=f"sb-pay-{payment.id}-create",
            description=payment.description,
            return_url=payment.return_url,
            cancel_url=payment.return_url,
        )
    except ProviderError as err:
        if err.is_caller_error:  # PayPal refused this order: it will never pass
            await _failed(payment, err)
        field = "currency" if err.vendor_code == "CURRENCY_NOT_SUPPORTED" else "amount"
        raise to_gateway_error(err, field=field) from None
    async with in_transaction() as conn:
        await apply_order(payment, order, connection=conn)


async def confirm(
    ctx: Context, payment: Payment, *, payment_method: str | None, return_url: str | None
) -> None:
    """Capture the order the payer approved. A payment whose capture was declined may be
    captured again once the payer approved another funding source."""
    if payment_method is not None:
        raise BadUserInput(
            "A PayPal payment is paid with what the payer chose when approving it.",
            details={"paymentMethod": "not for PayPal"},
        )
    if payment.status not in (S.REQUIRES_ACTION.value, S.FAILED.value) or not payment.vendor_id:
        raise Conflict(
            f"The payment is {payment.status}; only a PayPal order waiting for its capture "
            "can be confirmed.",
            details={"status": payment.status},
        )
    attempt = "" if payment.status == S.REQUIRES_ACTION.value else (
        f"-{int((payment.status_changed_at or now()).timestamp())}"
    )  # fmt: skip
    client = await client_for(ctx, payment.tenant_id)
    try:
        order = await client.capture_order(
            payment.vendor_id, request_id=f"sb-pay-{payment.id}-capture{attempt}"
        )
    except ProviderError as err:
        if err.vendor_code == paypal.ORDER_NOT_APPROVED:
            raise Conflict(
                "The payer has not approved this payment yet (see its nextActionUrl).",
                details={"status": "not approved by the payer"},
            ) from None
        if err.vendor_code == paypal.ORDER_ALREADY_CAPTURED:
            order = await _order(client, payment)  # captured before our answer was stored
        elif err.vendor_code == paypal.INSTRUMENT_DECLINED:
            await _failed(payment, err)
            raise _declined(payment) from None
        else:
            raise to_gateway_error(err, field="id") from None
    async with in_transaction() as conn:
        await apply_order(payment, order, connection=conn)


async def _order(client: paypal.PayPalClient, payment: Payment) -> paypal.Order:
    assert payment.vendor_id is not None
    try:
        return await client.get_order(payment.vendor_id)
    except ProviderError as err:
        raise to_gateway_error(err, field="id") from None


async def cancel(ctx: Context, payment: Payment) -> None:
    """PayPal cannot void a CAPTURE order: it is abandoned here, and never captured."""
    async with in_transaction() as conn:
        await advance(payment, S.CANCELED, connection=conn)


async def refund(ctx: Context, payment: Payment, refund: PaymentRefund) -> None:
    capture_id = (payment.metadata or {}).get("capture_id")
    if not isinstance(capture_id, str):
        raise Conflict("The payment has no capture to refund.", details={"status": payment.status})
    client = await client_for(ctx, payment.tenant_id)
    try:
        made = await client.refund_capture(
            capture_id,
            request_id=f"sb-refund-{refund.id}-create",
            custom_id=custom_id(payment, refund),
            amount=_value(refund.amount_minor, payment),
            currency=payment.currency,
            note=refund.reason,
        )
    except ProviderError as err:
        await refund_refused(refund, err)
        raise to_gateway_error(err, field="amount") from None
    await refund_made(
        payment,
        refund,
        vendor_id=made.id,
        status=REFUND_STATUS.get(made.status, RefundStatus.PENDING),
        failure_reason=made.reason,
    )


# Bringing rows in step -------------------------------------------------------------------


def _capture_status(capture: paypal.Capture) -> PaymentStatus | None:
    match capture.status:
        case "COMPLETED" | "PARTIALLY_REFUNDED" | "REFUNDED":
            return S.SUCCEEDED
        case "PENDING":
            return S.PROCESSING
        case "DECLINED" | "FAILED":
            return S.FAILED
    return None


async def apply_order(
    payment: Payment, order: paypal.Order, *, connection: BaseDBAsyncClient
) -> None:
    """An order's state: waiting for the payer, or its capture's."""
    fields: dict[str, Any] = {"vendor_id": order.id, "vendor_status": order.status[:64]}
    if order.approve_url:
        fields["next_action_url"] = order.approve_url[:MAX_URL]
    if order.captures:
        await apply_capture(payment, order.captures[-1], connection=connection, **fields)
        return
    await advance(payment, S.REQUIRES_ACTION, connection=connection, **fields)


async def apply_capture(
    payment: Payment, capture: paypal.Capture, *, connection: BaseDBAsyncClient, **fields: Any
) -> None:
    status = _capture_status(capture)
    if status is None:
        return
    metadata = dict(payment.metadata or {})
    if capture.id and metadata.get("capture_id") != capture.id:
        metadata["capture_id"] = capture.id
        fields["metadata"] = metadata
    fields["vendor_status"] = capture.status[:64]
    if status is S.FAILED:
        fields["failure_code"] = (capture.reason or capture.status)[:100]
        fields["decline_code"] = (capture.reason or paypal.INSTRUMENT_DECLINED)[:100]
    await advance(payment, status, connection=connection, **fields)


REFUND_STATUS = {
    "PENDING": RefundStatus.PENDING,
    "COMPLETED": RefundStatus.SUCCEEDED,
    "FAILED": RefundStatus.FAILED,
    "CANCELLED": RefundStatus.CANCELED,
}


async def apply_refund(
    refund: PaymentRefund, made: paypal.Refund, *, connection: BaseDBAsyncClient
) -> None:
    """A refund's state from the vendor's refund object."""
    await set_refund_state(
        refund,
        vendor_id=made.id,
        status=REFUND_STATUS.get(made.status, RefundStatus.PENDING),
        failure_reason=made.reason,
        connection=connection,
    )


# Webhooks --------------------------------------------------------------------------------


def _resource(event: WebhookInbox) -> dict[str, Any]:
    resource = event.payload.get("resource") if isinstance(event.payload, dict) else None
    return resource if isinstance(resource, dict) and isinstance(resource.get("id"), str) else {}


async def _payment_for(
    event: WebhookInbox, custom: Any, conn: BaseDBAsyncClient
) -> tuple[Payment, int | None] | None:
    """The payment (and refund id) a `custom_id` we wrote names; None when it is not
    ours or not this endpoint's organization's."""
    match = _CUSTOM.match(custom) if isinstance(custom, str) else None
    if match is None:
        return None
    tenant_id, payment_id = int(match[1]), int(match[2])
    if event.tenant_id is not None and event.tenant_id != tenant_id:
        log.warning("paypal event %s names another organization's payment", event.id)
        return None
    payment = (
        await Payment.filter(
            id=payment_id, tenant_id=tenant_id, provider=PaymentProvider.PAYPAL.value
        )
        .using_db(conn)
        .first()
    )
    if payment is None:
        if not await Payment.filter(id=payment_id).using_db(conn).exists() and _young(event):
            raise NotYetCreated(f"payment {payment_id} is not visible yet")
        return None
    return payment, _int(match[3]) if match[3] else None


@inbox_handler("paypal", "PAYMENT.CAPTURE.*")
async def on_capture(event: WebhookInbox, connection: BaseDBAsyncClient) -> None:
    resource = _resource(event)
    if not resource:
        return
    if event.event_type == "PAYMENT.CAPTURE.REFUNDED" or event.payload.get("resource_type") == (
        "refund"
    ):
        await _on_refund(event, resource, connection)
        return
    capture = paypal.Capture.of(resource)
    found = await _payment_for(event, capture.custom_id, connection)
    if found is None:
        return
    payment, _ = found
    if payment.vendor_id and capture.order_id and capture.order_id != payment.vendor_id:
        return
    if event.event_type == "PAYMENT.CAPTURE.REVERSED":
        total = payment.amount_minor  # the money went back to the payer (a chargeback)
        await apply_refunded_total(payment, total, connection=connection)
        return
    await apply_capture(payment, capture, connection=connection)


async def _on_refund(
    event: WebhookInbox, resource: dict[str, Any], connection: BaseDBAsyncClient
) -> None:
    made = paypal.Refund.of(resource)
    found = await _payment_for(event, made.custom_id, connection)
    if found is None:
        return
    payment, refund_id = found
    qs = PaymentRefund.filter(payment_id=payment.id).using_db(connection)
    row = await (
        qs.filter(id=refund_id) if refund_id is not None else qs.filter(vendor_id=made.id)
    ).first()
    if row is not None and (row.vendor_id is None or row.vendor_id == made.id):
        await apply_refund(row, made, connection=connection)
    await apply_refunded_total(
        payment, await _refunds_total(payment, connection), connection=connection
    )


@inbox_handler("paypal", "CHECKOUT.ORDER.APPROVED")
async def on_order_approved(event: WebhookInbox, connection: BaseDBAsyncClient) -> None:
    """The payer approved: note it (the capture is the caller's `confirmPayment`)."""
    order = paypal.Order.of(_resource(event))
    found = await _payment_for(event, order.custom_id, connection)
    if found is None:
        return
    payment, _ = found
    await (
        Payment.filter(id=payment.id, status=S.REQUIRES_ACTION.value, vendor_id=order.id)
        .using_db(connection)
        .update(vendor_status="APPROVED", updated_at=now())
    )


# Webhook certificates ------------------------------------------------------------------


def _trusted(settings: Settings, url: str) -> bool | None:
    """True: PayPal's own host (dialled through the outbound guard); False: the endpoint
    the operator configured, or this gateway's sandbox (dialled as configured); None:
    not a certificate URL to fetch."""
    parts = urlsplit(url)
    if parts.query or parts.fragment or parts.username or parts.password:
        return None
    host = (parts.hostname or "").lower()
    if (
        parts.scheme == "https"
        and host.endswith(".paypal.com")
        and parts.path.startswith(CERT_PATH)
    ):
        return True
    own = [settings.paypal_base_url.rstrip("/")] if settings.paypal_base_url else []
    if settings.sandboxes_enabled:
        own.append(f"{settings.base_url}/sandbox/paypal")
    if any(base and url.startswith(f"{base}{CERT_PATH}") for base in own):
        return False
    return None


async def webhook_certificate(settings: Settings, registry: ProviderRegistry, url: str) -> bytes:
    """The certificate a PayPal webhook names, fetched once an hour at most, only from
    PayPal (or the endpoint the operator set, or this gateway's sandbox)."""
    trusted = _trusted(settings, url)
    if trusted is None:
        raise SignatureInvalid("UNTRUSTED_CERTIFICATE_URL")
    cached = _CERTIFICATES.get(url)
    if cached is not None:
        return cached
    try:
        pem = await paypal.fetch_certificate(registry.http(paypal.PROVIDER), url, guard_url=trusted)
    except (ProviderError, UnsafeDestination) as err:
        log.warning("paypal certificate %s could not be fetched: %s", url, err)
        raise SignatureInvalid("CERTIFICATE_UNAVAILABLE") from None
    _CERTIFICATES[url] = pem
    return pem


# Subscriptions ---------------------------------------------------------------------------

# PayPal's subscription statuses in the gateway's (Stripe's) words.
SUBSCRIPTION_STATUS = {
    "APPROVAL_PENDING": "incomplete",
    "APPROVED": "incomplete",
    "ACTIVE": "active",
    "SUSPENDED": "paused",
    "CANCELLED": "canceled",
    "EXPIRED": "canceled",
}
_SUBSCRIPTION = re.compile(r"^sbs:(\d{1,18}):(\d{1,18})$")


def _subscription_state(sub: paypal.PayPalSubscription) -> SubscriptionState:
    period_end = None
    if sub.next_billing_time:
        try:
            period_end = dt.datetime.fromisoformat(sub.next_billing_time.replace("Z", "+00:00"))
        except ValueError:
            period_end = None
    return SubscriptionState(
        vendor_id=sub.id, status=SUBSCRIPTION_STATUS.get(sub.status, "incomplete"),
        price=sub.plan_id, current_period_end=period_end, approve_url=sub.approve_url,
    )  # fmt: skip


async def create_subscription(
    ctx: Context, row: PaymentSubscription, *, return_url: str | None
) -> SubscriptionState:
    """The subscription at PayPal, waiting for its payer's approval."""
    client = await client_for(ctx, row.tenant_id)
    made = await client.create_subscription(
        plan_id=row.price, custom_id=f"sbs:{row.tenant_id}:{row.id}",
        request_id=f"sb-sub-{row.id}-create", return_url=return_url, cancel_url=return_url,
    )  # fmt: skip
    return _subscription_state(made)


async def cancel_subscription(ctx: Context, row: PaymentSubscription) -> SubscriptionState:
    assert row.vendor_id is not None
    client = await client_for(ctx, row.tenant_id)
    try:
        await client.cancel_subscription(row.vendor_id, reason="Canceled by the organization")
    except ProviderError as err:
        if err.vendor_code != "SUBSCRIPTION_STATUS_INVALID":
            raise
    return _subscription_state(await client.get_subscription(row.vendor_id))


@inbox_handler("paypal", "BILLING.SUBSCRIPTION.*")
async def on_subscription(event: WebhookInbox, connection: BaseDBAsyncClient) -> None:
    sub = paypal.PayPalSubscription.of(_resource(event))
    match = _SUBSCRIPTION.match(sub.custom_id or "")
    if match is None or not sub.id:
        return
    tenant_id, row_id = int(match[1]), int(match[2])
    if event.tenant_id is not None and event.tenant_id != tenant_id:
        return
    row = (
        await PaymentSubscription.filter(
            id=row_id, tenant_id=tenant_id, provider=PaymentProvider.PAYPAL.value
        )
        .using_db(connection)
        .first()
    )
    if row is None:
        if (
            _young(event)
            and not await PaymentSubscription.filter(id=row_id).using_db(connection).exists()
        ):
            raise NotYetCreated(f"subscription {row_id} is not visible yet")
        return
    if row.vendor_id not in (None, sub.id):
        return
    at = _event_time(event)
    await apply_state(row, _subscription_state(sub), at=at, connection=connection)


def _event_time(event: WebhookInbox) -> int:
    raw = event.payload.get("create_time") if isinstance(event.payload, dict) else None
    try:
        return int(dt.datetime.fromisoformat(str(raw).replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 1

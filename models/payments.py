"""Payments (resolvers/payments/): one row per charge whatever the vendor, its refunds,
and the customers charges are made for."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from tortoise import fields

from models.base import TenantModel


class PaymentProvider(StrEnum):
    STRIPE = "stripe"
    PAYPAL = "paypal"


class PaymentStatus(StrEnum):
    REQUIRES_PAYMENT_METHOD = "REQUIRES_PAYMENT_METHOD"  # created, waiting for a method
    REQUIRES_ACTION = "REQUIRES_ACTION"  # the customer must authenticate (3-D Secure)
    PROCESSING = "PROCESSING"  # the vendor is working on it
    SUCCEEDED = "SUCCEEDED"  # the money moved
    FAILED = "FAILED"  # declined or authentication failed; `decline_code` says why
    CANCELED = "CANCELED"  # canceled before it succeeded
    PARTIALLY_REFUNDED = "PARTIALLY_REFUNDED"  # part of it went back
    REFUNDED = "REFUNDED"  # all of it went back


class RefundStatus(StrEnum):
    PENDING = "PENDING"  # asked for; the vendor has not answered yet
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"


class PaymentCustomer(TenantModel):
    """A customer of the organization at a payment vendor (Stripe's `cus_…`)."""

    provider = fields.CharField(max_length=16)
    vendor_id = fields.CharField(max_length=255, null=True, db_index=True)
    email = fields.CharField(max_length=320, null=True)
    name = fields.CharField(max_length=256, null=True)
    idempotency_key = fields.CharField(max_length=255, null=True)
    request_hash = fields.CharField(max_length=64)
    created_by_id = fields.BigIntField(null=True)

    class Meta:
        table = "payment_customers"
        unique_together = (("tenant_id", "idempotency_key"),)


class Payment(TenantModel):
    """One charge. Amounts are integers of the currency's minor units (what the vendor
    takes); GraphQL shows them as exact decimals."""

    provider = fields.CharField(max_length=16)
    status = fields.CharField(
        max_length=32, default=PaymentStatus.REQUIRES_PAYMENT_METHOD.value, db_index=True
    )
    amount_minor = fields.BigIntField()
    amount_refunded_minor = fields.BigIntField(default=0)
    currency = fields.CharField(max_length=3)
    description = fields.CharField(max_length=1000, null=True)
    customer_id = fields.BigIntField(null=True, db_index=True)
    # The vendor's side (Stripe's payment intent `pi_…`), set once the vendor answered.
    vendor_id = fields.CharField(max_length=255, null=True, db_index=True)
    vendor_status = fields.CharField(max_length=64, null=True)
    client_secret = fields.CharField(max_length=255, null=True)
    next_action_url = fields.CharField(max_length=2000, null=True)
    failure_code = fields.CharField(max_length=100, null=True)
    decline_code = fields.CharField(max_length=100, null=True)
    failure_message = fields.CharField(max_length=1000, null=True)
    # The client's idempotency key (one payment per key and organization) and a hash of
    # what was asked with it, so the same key with other input is refused.
    idempotency_key = fields.CharField(max_length=255, null=True)
    request_hash = fields.CharField(max_length=64)
    confirm_requested = fields.BooleanField(default=False)
    payment_method = fields.CharField(max_length=255, null=True)
    return_url = fields.CharField(max_length=2000, null=True)
    metadata: fields.Field[dict[str, Any]] = fields.JSONField(default=dict)
    status_changed_at = fields.DatetimeField(null=True)
    succeeded_at = fields.DatetimeField(null=True)
    created_by_id = fields.BigIntField(null=True)

    class Meta:
        table = "payments"
        unique_together = (("tenant_id", "idempotency_key"),)


class PaymentRefund(TenantModel):
    """Money sent back for a payment (partial or full)."""

    payment_id = fields.BigIntField(db_index=True)
    status = fields.CharField(max_length=16, default=RefundStatus.PENDING.value)
    amount_minor = fields.BigIntField()
    currency = fields.CharField(max_length=3)
    reason = fields.CharField(max_length=500, null=True)
    vendor_id = fields.CharField(max_length=255, null=True, db_index=True)
    failure_reason = fields.CharField(max_length=500, null=True)
    idempotency_key = fields.CharField(max_length=255, null=True)
    request_hash = fields.CharField(max_length=64)
    created_by_id = fields.BigIntField(null=True)

    class Meta:
        table = "payment_refunds"
        unique_together = (("tenant_id", "idempotency_key"),)


class PaymentSubscription(TenantModel):
    """A customer's subscription to one of the organization's prices at the vendor
    (Stripe's `sub_…`), kept in step by the vendor's answers and webhooks."""

    provider = fields.CharField(max_length=16)
    # The customer (Stripe); none at PayPal, whose payer is whoever approves it.
    customer_id = fields.BigIntField(null=True, db_index=True)
    # The vendor's price (Stripe's `price_…`) or plan (PayPal's `P-…`).
    price = fields.CharField(max_length=255)
    # The vendor's words: incomplete, trialing, active, past_due, canceled, unpaid, …
    status = fields.CharField(max_length=32, default="incomplete", db_index=True)
    vendor_id = fields.CharField(max_length=255, null=True, db_index=True)
    item_id = fields.CharField(max_length=255, null=True)
    latest_invoice = fields.CharField(max_length=255, null=True)
    # Where the payer approves it (PayPal), while it is incomplete.
    approve_url = fields.CharField(max_length=2000, null=True)
    current_period_end = fields.DatetimeField(null=True)
    cancel_at_period_end = fields.BooleanField(default=False)
    # The `created` time of the last vendor event applied (an older one changes nothing).
    synced_at = fields.BigIntField(default=0)
    idempotency_key = fields.CharField(max_length=255, null=True)
    request_hash = fields.CharField(max_length=64)
    created_by_id = fields.BigIntField(null=True)

    class Meta:
        table = "payment_subscriptions"
        unique_together = (("tenant_id", "idempotency_key"),)

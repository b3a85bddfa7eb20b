"""The SaaS's own billing (resolvers/billing.py): each organization's plan and the Stripe
subscription that pays for it. The plan's limits live on the tenant row itself
(`tenants.ai_monthly_token_quota`, `tenants.requests_per_hour`), where the AI quota and
the rate limiter read them."""

from __future__ import annotations

from tortoise import fields

from models.base import TenantModel


class TenantBilling(TenantModel):
    """One per organization that ever started a checkout: its Stripe customer (in the
    operator's account), its subscription's last known state, and the plan it gives."""

    plan = fields.CharField(max_length=40)
    stripe_customer_id = fields.CharField(max_length=255, null=True, unique=True)
    stripe_subscription_id = fields.CharField(max_length=255, null=True, db_index=True)
    subscription_status = fields.CharField(max_length=32, null=True)
    price_id = fields.CharField(max_length=255, null=True)
    current_period_end = fields.DatetimeField(null=True)
    cancel_at_period_end = fields.BooleanField(default=False)
    # The `created` time (unix seconds) of the last Stripe event applied: an older one,
    # delivered late, changes nothing.
    synced_at = fields.BigIntField(default=0)

    class Meta:
        table = "tenant_billing"
        unique_together = (("tenant_id",),)

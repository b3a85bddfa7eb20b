"""The SaaS's own billing: each organization's plan, paid through the operator's Stripe
account (never an organization's own Stripe key: that one takes the organization's
payments, `resolvers/payments/`).

- Plans come from settings (`BILLING_PLANS`): a name, a Stripe price, the monthly AI tokens
  and the authenticated requests per hour. An organization without a subscription is on
  the free plan (the one without a price).
- `start_checkout` makes (once) the organization's Stripe customer and a Checkout session
  for a plan's price; the customer pays on Stripe's page. `open_portal` opens Stripe's
  billing portal (change plan, cancel, invoices, payment method).
- Stripe's `customer.subscription.*` and `checkout.session.completed` events, at the
  operator's endpoint only (`/webhooks/stripe`: an organization's own endpoint never
  changes its plan), decide the plan: an active (or trialing, or past due) subscription's
  price names it; a canceled or expired one is the free plan. The plan's limits are
  written on the tenant row in the same transaction — the AI quota
  (`tenants.ai_monthly_token_quota`, read by every completion's reservation) and the rate
  limit (`tenants.requests_per_hour`, read by the request middleware through a cache that
  `billing.plan_changed` invalidates in every process). An event older than the last one
  applied changes nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError

from kit.errors import BadUserInput, Conflict
from kit.settings import BillingPlan, Settings
from models.billing import TenantBilling
from models.tenants import Tenant
from models.webhooks import WebhookInbox
from providers import stripe
from providers.errors import ProviderError
from resolvers import authority
from resolvers.context import Context
from resolvers.credentials import call_labels, resolve_operator_credential
from resolvers.events import Event, emit, listener
from resolvers.operations import operation
from resolvers.payments import subscriptions
from resolvers.payments.stripe import event_object
from resolvers.upstream import provider_registry, to_gateway_error
from resolvers.webhooks_in import inbox_handler

log = logging.getLogger("switchboard.billing")

META_TENANT = "switchboard_billing_tenant"
# Subscription states that keep the plan the price names (Stripe retries a past-due
# payment for a while before it cancels the subscription).
PAYING = frozenset({"active", "trialing", "past_due"})
MAX_URL = 2000
_URL = re.compile(r"^https?://[^\s/$.?#][^\s]*$")
MAX_INVOICES = 100


@dataclass(frozen=True, slots=True)
class BillingState:
    """What an organization's billing looks like now."""

    tenant_id: int
    plan: BillingPlan
    subscription_status: str | None
    current_period_end: dt.datetime | None
    cancel_at_period_end: bool
    ai_monthly_tokens: int  # the limits in force (the plan's, or the operator's defaults)
    requests_per_hour: int
    has_customer: bool


def _hourly(spec: str) -> int:
    """Requests per hour of a rate limit like `1000/hour` or `20/minute`."""
    match = re.match(r"^\s*(\d+)\s*(?:/|per)\s*(\d*)\s*(second|minute|hour|day)", spec)
    if match is None:
        return 0
    count, span, unit = int(match[1]), int(match[2] or 1), match[3]
    seconds = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}[unit] * span
    return count * 3600 // seconds


def _digest(*parts: Any) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:24]


def stripe_client(ctx: Context, tenant_id: int) -> stripe.StripeClient:
    """The operator's Stripe (settings → the sandbox)."""
    credential = resolve_operator_credential(ctx, stripe.PROVIDER)
    return (
        provider_registry(ctx.services)
        .stripe()
        .client(
            credential.secrets["secret_key"],
            base_url=credential.base_url or stripe.API_URL,
            labels=call_labels(ctx, credential, tenant_id),
        )
    )


def _url(value: str | None, field: str, default: str) -> str:
    if value is None:
        return default
    value = value.strip()
    if len(value) > MAX_URL or not _URL.match(value):
        raise BadUserInput("Invalid URL.", details={field: "an http(s) URL"})
    return value


# Reading ---------------------------------------------------------------------------------


@operation("billing:read")
async def billing_plans(ctx: Context) -> list[BillingPlan]:
    ctx.require("billing:read")
    return list(ctx.settings.billing_plans)


@operation("billing:read")
async def get_billing(ctx: Context) -> BillingState:
    principal = ctx.require("billing:read")
    return await state_of(ctx.settings, principal.tenant_id)


async def state_of(settings: Settings, tenant_id: int) -> BillingState:
    row = await TenantBilling.filter(tenant_id=tenant_id).first()
    tenant = await Tenant.get(id=tenant_id)
    plan = (row and settings.plan_named(row.plan)) or settings.free_plan
    return BillingState(
        tenant_id=tenant_id,
        plan=plan,
        subscription_status=row.subscription_status if row else None,
        current_period_end=row.current_period_end if row else None,
        cancel_at_period_end=bool(row and row.cancel_at_period_end),
        ai_monthly_tokens=int(
            tenant.ai_monthly_token_quota
            if tenant.ai_monthly_token_quota is not None
            else settings.ai_monthly_token_quota
        ),
        requests_per_hour=int(
            tenant.requests_per_hour
            if tenant.requests_per_hour is not None
            else _hourly(settings.rate_limit_authenticated)
        ),
        has_customer=bool(row and row.stripe_customer_id),
    )


@operation("billing:read")
async def list_invoices(
    ctx: Context, *, first: int | None, after: str | None
) -> tuple[list[stripe.Invoice], bool]:
    """The organization's invoices at Stripe, newest first (Stripe's own cursors)."""
    principal = ctx.require("billing:read")
    limit = min(max(first or 20, 1), MAX_INVOICES)
    if after is not None and not re.match(r"^in_[A-Za-z0-9_]{1,200}$", after):
        raise BadUserInput("Invalid cursor.", details={"after": "an invoice cursor"})
    row = await TenantBilling.filter(tenant_id=principal.tenant_id).first()
    if row is None or not row.stripe_customer_id:
        return [], False
    try:
        return await stripe_client(ctx, principal.tenant_id).list_invoices(
            customer=row.stripe_customer_id, limit=limit, starting_after=after
        )
    except ProviderError as err:
        raise to_gateway_error(err, field="after") from None


# Checkout and the portal ---------------------------------------------------------------


async def _customer(ctx: Context, tenant_id: int) -> str:
    """The organization's Stripe customer, made once (a retry or a race asks Stripe with
    the same idempotency key, and the row is unique per organization)."""
    row = await TenantBilling.filter(tenant_id=tenant_id).first()
    if row is None:
        try:
            row = await TenantBilling.create(tenant_id=tenant_id, plan=ctx.settings.free_plan.name)
        except IntegrityError:
            row = await TenantBilling.get(tenant_id=tenant_id)
    if row.stripe_customer_id:
        return row.stripe_customer_id
    tenant = await Tenant.get(id=tenant_id)
    try:
        made = await stripe_client(ctx, tenant_id).create_customer(
            email=None, name=tenant.name[:256], metadata={META_TENANT: str(tenant_id)},
            idempotency_key=f"sb-billing-{tenant_id}-customer",
        )  # fmt: skip
    except ProviderError as err:
        raise to_gateway_error(err) from None
    await TenantBilling.filter(id=row.id, stripe_customer_id=None).update(
        stripe_customer_id=made.id
    )
    return made.id


@operation("billing:manage")
async def start_checkout(
    ctx: Context, *, plan: str, success_url: str | None, cancel_url: str | None
) -> stripe.CheckoutSession:
    """A Stripe Checkout page subscribing the organization to `plan`."""
    principal = ctx.require("billing:manage")
    chosen = ctx.settings.plan_named(plan)
    if chosen is None:
        raise BadUserInput("Unknown plan.", details={"plan": "not one of billingPlans"})
    if chosen.stripe_price is None:
        raise BadUserInput(
            "The free plan needs no checkout.", details={"plan": "a paid plan is needed"}
        )
    back = f"{ctx.settings.app_url}/billing"
    success = _url(success_url, "successUrl", f"{back}?checkout={{CHECKOUT_SESSION_ID}}")
    cancel = _url(cancel_url, "cancelUrl", back)
    row = await TenantBilling.filter(tenant_id=principal.tenant_id).first()
    if row is not None and row.subscription_status in PAYING:
        raise Conflict(
            "The organization has a subscription already: change it in the billing portal.",
            details={"plan": f"subscribed to {row.plan}"},
        )
    customer = await _customer(ctx, principal.tenant_id)
    try:
        return await stripe_client(ctx, principal.tenant_id).create_checkout_session(
            customer=customer, price=chosen.stripe_price, success_url=success,
            cancel_url=cancel, client_reference_id=str(principal.tenant_id),
            metadata={META_TENANT: str(principal.tenant_id), "plan": chosen.name},
            # Clicks within ten minutes reuse one session (the same page to pay on).
            idempotency_key=f"sb-billing-{principal.tenant_id}-checkout-"
            f"{_digest(chosen.name, success, cancel, int(time.time() // 600))}",
        )  # fmt: skip
    except ProviderError as err:
        raise to_gateway_error(err, field="plan") from None


@operation("billing:manage")
async def open_portal(ctx: Context, *, return_url: str | None) -> str:
    """Stripe's billing portal for the organization (a short-lived URL)."""
    principal = ctx.require("billing:manage")
    back = _url(return_url, "returnUrl", f"{ctx.settings.app_url}/billing")
    row = await TenantBilling.filter(tenant_id=principal.tenant_id).first()
    if row is None or not row.stripe_customer_id:
        raise Conflict(
            "The organization has no billing account yet: start a checkout first.",
            details={"plan": "never subscribed"},
        )
    try:
        return await stripe_client(ctx, principal.tenant_id).create_portal_session(
            customer=row.stripe_customer_id, return_url=back
        )
    except ProviderError as err:
        raise to_gateway_error(err, field="returnUrl") from None


# Stripe's events -------------------------------------------------------------------------


def _created(event: WebhookInbox) -> int:
    value = event.payload.get("created") if isinstance(event.payload, dict) else None
    return int(value) if isinstance(value, int) else 0


async def _row_for(
    customer: str, metadata: dict[str, str], conn: BaseDBAsyncClient
) -> TenantBilling | None:
    """The organization a billing event is about: its customer id (the row holds it once
    the customer was made); the metadata we wrote must agree when it names one."""
    if not customer:
        return None
    row = await TenantBilling.filter(stripe_customer_id=customer).using_db(conn).first()
    named = metadata.get(META_TENANT)
    if row is not None and named is not None and named != str(row.tenant_id):
        log.warning("stripe billing event for customer %s names another tenant", customer)
        return None
    return row


async def apply_subscription(
    settings: Settings,
    sub: stripe.Subscription,
    *,
    at: int,
    deleted: bool,
    connection: BaseDBAsyncClient,
) -> bool:
    """Bring an organization's plan in step with its subscription (an event `at` older
    than the last applied changes nothing). False: not a customer of this service's
    billing."""
    row = await _row_for(sub.customer, sub.metadata, connection)
    if row is None:
        return False
    locked = await TenantBilling.filter(id=row.id).using_db(connection).select_for_update().first()
    if locked is None or at < locked.synced_at:
        return True
    if row.stripe_subscription_id not in (None, sub.id) and sub.status not in PAYING:
        return True  # an older subscription ending says nothing about the current one
    paying = not deleted and sub.status in PAYING
    plan = settings.plan_for_price(sub.price) if paying else settings.free_plan
    if plan is None:
        log.warning("subscription %s is for price %s, which no plan names", sub.id, sub.price)
        plan = settings.plan_named(locked.plan) or settings.free_plan
    end = (
        dt.datetime.fromtimestamp(sub.current_period_end, dt.UTC)
        if sub.current_period_end
        else None
    )
    await (
        TenantBilling.filter(id=row.id)
        .using_db(connection)
        .update(
            plan=plan.name,
            stripe_subscription_id=sub.id,
            subscription_status=sub.status[:32],
            price_id=sub.price,
            current_period_end=end,
            cancel_at_period_end=sub.cancel_at_period_end,
            synced_at=at,
        )
    )
    if plan.name != locked.plan:
        await set_limits(row.tenant_id, plan, connection=connection)
        await emit(
            row.tenant_id,
            "billing.plan_changed",
            {"plan": plan.name, "previous": locked.plan, "status": sub.status},
            connection=connection,
        )
    return True


async def set_limits(tenant_id: int, plan: BillingPlan, *, connection: BaseDBAsyncClient) -> None:
    """The plan's limits on the tenant row: the AI quota and the rate limit at once."""
    await (
        Tenant.filter(id=tenant_id)
        .using_db(connection)
        .update(
            ai_monthly_token_quota=plan.ai_monthly_tokens, requests_per_hour=plan.requests_per_hour
        )
    )


@inbox_handler("stripe", "customer.subscription.*", settings=True)
async def on_subscription(
    event: WebhookInbox, connection: BaseDBAsyncClient, *, settings: Settings
) -> None:
    """A subscription to this service's plans (at the operator's endpoint only: an
    organization's own Stripe account never changes its plan), else one of an
    organization's own customers' (resolvers/payments/subscriptions.py)."""
    obj = event_object(event)
    if not obj:
        return
    sub = stripe.Subscription.of(obj)
    if event.tenant_id is None and await apply_subscription(
        settings, sub, at=_created(event),
        deleted=event.event_type == "customer.subscription.deleted", connection=connection,
    ):  # fmt: skip
        return
    await subscriptions.on_subscription_event(event, connection)


@listener("billing.plan_changed")
async def on_plan_changed(event: Event, connection: BaseDBAsyncClient) -> None:
    """Committed: every process reads the tenant's rate limit again."""
    await authority.tier_changed(event.tenant_id)

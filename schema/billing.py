"""The SaaS's own billing: plans, the organization's plan and invoices, Stripe Checkout
and the billing portal."""

from __future__ import annotations

import datetime as dt

import strawberry
from strawberry.types import Info

from kit.settings import BillingPlan as PlanSetting
from resolvers import billing as api
from schema.payments import InvoiceAfter, InvoiceFirst, PaymentInvoicePage
from schema.permissions import mutation, query


@strawberry.type(description="A plan of this service: what an organization on it may use.")
class BillingPlan:
    name: str = strawberry.field(description="The plan's name (what `plan` arguments take).")
    title: str = strawberry.field(description="Its name for people.")
    paid: bool = strawberry.field(description="Whether it is paid (through Stripe Checkout).")
    ai_monthly_tokens: int = strawberry.field(description="AI tokens a month.")
    requests_per_hour: int = strawberry.field(
        description="Authenticated API requests per hour, per caller."
    )

    @classmethod
    def of(cls, plan: PlanSetting) -> BillingPlan:
        return cls(
            name=plan.name, title=plan.title, paid=plan.stripe_price is not None,
            ai_monthly_tokens=plan.ai_monthly_tokens, requests_per_hour=plan.requests_per_hour,
        )  # fmt: skip


@strawberry.type(description="The organization's plan and subscription.")
class Billing:
    plan: BillingPlan = strawberry.field(description="The plan it is on.")
    subscription_status: str | None = strawberry.field(
        description="Stripe's status of its subscription (active, past_due, canceled, …); "
        "null when it never subscribed."
    )
    current_period_end: dt.datetime | None = strawberry.field(
        description="When the period paid for ends (renewal, or the end when canceled)."
    )
    cancel_at_period_end: bool = strawberry.field(
        description="Whether the subscription ends at the period's end."
    )
    ai_monthly_tokens: int = strawberry.field(description="The AI tokens a month in force.")
    requests_per_hour: int = strawberry.field(
        description="The authenticated requests per hour in force, per caller."
    )
    can_open_portal: bool = strawberry.field(
        description="Whether `openBillingPortal` can open (a checkout was started once)."
    )


@strawberry.input(description="A plan to subscribe to through Stripe Checkout.")
class StartBillingCheckoutInput:
    plan: str = strawberry.field(description="The plan's name (see `billingPlans`).")
    success_url: str | None = strawberry.field(
        default=None,
        description="Where Stripe sends the customer after paying (default: FRONTEND_URL "
        "/billing); `{CHECKOUT_SESSION_ID}` is filled in.",
    )
    cancel_url: str | None = strawberry.field(
        default=None, description="Where Stripe sends the customer who leaves."
    )


@strawberry.type(description="The Checkout page to send the customer to.")
class StartBillingCheckoutPayload:
    url: str = strawberry.field(description="Stripe's Checkout page.")
    session_id: str = strawberry.field(description="Stripe's id of the session.")


@strawberry.input(description="Where the billing portal returns to.")
class OpenBillingPortalInput:
    return_url: str | None = strawberry.field(
        default=None, description="Where the portal's back link goes (default: /billing)."
    )


@strawberry.type(description="The billing portal to send the customer to.")
class OpenBillingPortalPayload:
    url: str = strawberry.field(description="Stripe's portal page (valid for a short time).")


@strawberry.type
class Query:
    @query(operation=api.billing_plans, description="The plans of this service.")
    async def billing_plans(self, info: Info) -> list[BillingPlan]:
        return [BillingPlan.of(p) for p in await api.billing_plans(info.context)]

    @query(operation=api.get_billing, description="The organization's plan and its limits.")
    async def billing(self, info: Info) -> Billing:
        state = await api.get_billing(info.context)
        return Billing(
            plan=BillingPlan.of(state.plan), subscription_status=state.subscription_status,
            current_period_end=state.current_period_end,
            cancel_at_period_end=state.cancel_at_period_end,
            ai_monthly_tokens=state.ai_monthly_tokens,
            requests_per_hour=state.requests_per_hour, can_open_portal=state.has_customer,
        )  # fmt: skip

    @query(
        operation=api.list_invoices,
        description="The organization's invoices for this service, newest first.",
    )
    async def billing_invoices(
        self,
        info: Info,
        first: InvoiceFirst = None,
        after: InvoiceAfter = None,
    ) -> PaymentInvoicePage:
        rows, more = await api.list_invoices(info.context, first=first, after=after)
        return PaymentInvoicePage.of(rows, more)


@strawberry.type
class Mutation:
    @mutation(
        operation=api.start_checkout,
        description="Start subscribing the organization to a paid plan: answers Stripe's "
        "Checkout page; the plan applies once Stripe says the subscription is active.",
    )
    async def start_billing_checkout(
        self, info: Info, input: StartBillingCheckoutInput
    ) -> StartBillingCheckoutPayload:
        session = await api.start_checkout(
            info.context, plan=input.plan, success_url=input.success_url,
            cancel_url=input.cancel_url,
        )  # fmt: skip
        return StartBillingCheckoutPayload(url=session.url, session_id=session.id)

    @mutation(
        operation=api.open_portal,
        description="Open Stripe's billing portal for the organization (change or cancel "
        "the plan, payment method, invoices).",
    )
    async def open_billing_portal(
        self, info: Info, input: OpenBillingPortalInput
    ) -> OpenBillingPortalPayload:
        url = await api.open_portal(info.context, return_url=input.return_url)
        return OpenBillingPortalPayload(url=url)

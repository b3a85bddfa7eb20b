"""The SaaS's own billing, over HTTP against the Stripe sandbox: a checkout paid on Stripe's
page → the subscription event sets the plan, and with it the AI quota and the rate limit;
the billing portal switches and cancels; invoices listed; events signed with `stripe`'s
own helper at the operator's endpoint only, stale ones ignored; roles and bad input."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import pytest
import stripe

from models.billing import TenantBilling
from models.tenants import Tenant
from tests.conftest import Account, error_codes, eventually, gql, register
from tests.credentials.test_credentials import member_token, tenant_id_of
from tests.payments.conftest import WEBHOOK_SECRET, Gateway, serving

BILLING = """{ billing { plan { name paid } subscriptionStatus cancelAtPeriodEnd
  aiMonthlyTokens requestsPerHour canOpenPortal } }"""
CHECKOUT = """mutation($i: StartBillingCheckoutInput!) { startBillingCheckout(input: $i)
  { url sessionId } }"""
PORTAL = "mutation($i: OpenBillingPortalInput!) { openBillingPortal(input: $i) { url } }"
INVOICES = """query($after: String) { billingInvoices(first: 10, after: $after) {
  hasMore invoices { id number status amountDue amountPaid currency pdfUrl } } }"""


@pytest.fixture
async def gateway(store: Any, worker: Any) -> Any:
    async with serving(store, worker, rate_limit_enabled=True) as served:
        yield served


async def billing(gw: Gateway, account: Account) -> dict[str, Any]:
    body = await gql(gw.client, BILLING, token=account.token)
    assert "errors" not in body, body
    return body["data"]["billing"]


async def on_plan(gw: Gateway, account: Account, plan: str, **more: Any) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        found = await billing(gw, account)
        ok = found["plan"]["name"] == plan and all(found[k] == v for k, v in more.items())
        return found if ok else None

    return await eventually(check, f"on plan {plan}")


async def pay(url: str, outcome: str = "pay") -> httpx.Response:
    async with httpx.AsyncClient() as browser:
        return await browser.post(url, data={"outcome": outcome})


async def subscribe(gw: Gateway, owner: Account, plan: str = "pro") -> dict[str, Any]:
    body = await gql(gw.client, CHECKOUT, {"i": {"plan": plan}}, owner.token)
    assert "errors" not in body, body
    session = body["data"]["startBillingCheckout"]
    paid = await pay(session["url"])
    assert paid.status_code == 303 and session["sessionId"] in paid.headers["location"]
    return session


async def test_a_new_organization_is_on_the_free_plan(gateway: Gateway):
    owner = await register(gateway.client)
    found = await billing(gateway, owner)
    assert found["plan"] == {"name": "free", "paid": False}
    assert found["subscriptionStatus"] is None and found["canOpenPortal"] is False
    # Never subscribed: the operator's defaults (this suite's: 100,000 requests an hour).
    settings = gateway.app.state.services.settings
    assert found["aiMonthlyTokens"] == settings.ai_monthly_token_quota
    assert f"{found['requestsPerHour']}/hour" == settings.rate_limit_authenticated
    plans = await gql(gateway.client, "{ billingPlans { name paid } }", token=owner.token)
    assert [p["name"] for p in plans["data"]["billingPlans"]] == ["free", "pro", "business"]
    answer = await gateway.client.post(
        "/graphql", json={"query": "{ me { id } }"},
        headers={"Authorization": f"Bearer {owner.token}"},
    )  # fmt: skip
    assert answer.headers["X-RateLimit-Limit"] == str(found["requestsPerHour"])


async def test_checkout_portal_switch_and_cancel_move_the_plan_and_its_limits(gateway: Gateway):
    owner = await register(gateway.client)
    cancelled = await gql(gateway.client, CHECKOUT, {"i": {"plan": "pro"}}, owner.token)
    left = await pay(cancelled["data"]["startBillingCheckout"]["url"], "cancel")
    assert left.status_code == 303
    assert (await billing(gateway, owner))["plan"]["name"] == "free"

    await subscribe(gateway, owner, "pro")
    found = await on_plan(gateway, owner, "pro", aiMonthlyTokens=20_000_000)
    assert found["subscriptionStatus"] == "active" and found["requestsPerHour"] == 10_000
    tenant = await Tenant.get(id=tenant_id_of(owner))
    assert tenant.ai_monthly_token_quota == 20_000_000 and tenant.requests_per_hour == 10_000

    async def limited() -> str | None:
        answer = await gateway.client.post(
            "/graphql", json={"query": "{ me { id } }"},
            headers={"Authorization": f"Bearer {owner.token}"},
        )  # fmt: skip
        limit = answer.headers["X-RateLimit-Limit"]
        return limit if limit == "10000" else None

    assert await eventually(limited, "the new rate limit in force") == "10000"

    again = await gql(gateway.client, CHECKOUT, {"i": {"plan": "business"}}, owner.token)
    assert error_codes(again) == ["CONFLICT"]  # change it in the portal

    invoices = await gql(gateway.client, INVOICES, token=owner.token)
    rows = invoices["data"]["billingInvoices"]["invoices"]
    assert [(r["status"], r["amountPaid"], r["currency"]) for r in rows] == [
        ("paid", "29.00", "EUR")
    ]

    portal = await gql(gateway.client, PORTAL, {"i": {}}, owner.token)
    url = portal["data"]["openBillingPortal"]["url"]
    async with httpx.AsyncClient() as browser:
        switched = await browser.post(
            url, data={"action": "switch", "price": "price_switchboard_business"}
        )
        assert switched.status_code == 303
        await on_plan(gateway, owner, "business", aiMonthlyTokens=100_000_000)
        await browser.post(url, data={"action": "cancel"})
        still = await on_plan(gateway, owner, "business", cancelAtPeriodEnd=True)
        assert still["subscriptionStatus"] == "active"
        await browser.post(url, data={"action": "cancel_now"})
    back = await on_plan(gateway, owner, "free", subscriptionStatus="canceled")
    assert back["aiMonthlyTokens"] == 2_000_000 and back["requestsPerHour"] == 1000
    more = await gql(gateway.client, INVOICES, token=owner.token)
    assert len(more["data"]["billingInvoices"]["invoices"]) == 2


def subscription_event(
    customer: str, status: str, *, price: str = "price_switchboard_business",
    created: int | None = None, kind: str = "customer.subscription.updated",
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    return {
        "id": f"evt_{uuid.uuid4().hex[:24]}", "object": "event", "type": kind,
        "created": created or int(time.time()),
        "data": {"object": {
            "id": f"sub_{uuid.uuid4().hex[:14]}", "object": "subscription", "status": status,
            "customer": customer, "cancel_at_period_end": False,
            "current_period_end": int(time.time()) + 86400, "metadata": metadata or {},
            "items": {"object": "list", "data": [{"id": "si_1", "price": {"id": price}}]},
        }},
    }  # fmt: skip


async def post(gw: Gateway, event: dict[str, Any], path: str, secret: str) -> httpx.Response:
    raw = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(raw, secret)
    return await gw.client.post(path, content=raw, headers={"Stripe-Signature": header})


async def test_only_the_operators_fresh_events_change_a_plan(gateway: Gateway):
    owner = await register(gateway.client)
    stranger = await register(gateway.client, org="Other")
    await subscribe(gateway, owner, "pro")
    await on_plan(gateway, owner, "pro")
    row = await TenantBilling.get(tenant_id=tenant_id_of(owner))
    assert row.stripe_customer_id

    # An organization's own Stripe endpoint (its own account) never changes its plan.
    source = await gql(
        gateway.client,
        "mutation($i: CreateWebhookSourceInput!) { createWebhookSource(input: $i) { url } }",
        {"i": {"provider": "stripe", "secret": "whsec_stranger_0123456789"}}, owner.token,
    )  # fmt: skip
    path = "/" + source["data"]["createWebhookSource"]["url"].split("/", 3)[3]
    mine = subscription_event(row.stripe_customer_id, "active")
    answer = await post(gateway, mine, path, "whsec_stranger_0123456789")
    assert answer.status_code == 200
    # An older event delivered late, and one naming another organization, neither.
    stale = subscription_event(row.stripe_customer_id, "canceled", created=row.synced_at - 60,
                               kind="customer.subscription.deleted")  # fmt: skip
    forged = subscription_event(
        row.stripe_customer_id, "active", metadata={"switchboard_billing_tenant": "1"}
        if tenant_id_of(owner) != 1 else {"switchboard_billing_tenant": "2"},
    )  # fmt: skip
    for event in (stale, forged):
        assert (await post(gateway, event, "/webhooks/stripe", WEBHOOK_SECRET)).status_code == 200
    forged_sig = await post(gateway, subscription_event(row.stripe_customer_id, "active"),
                            "/webhooks/stripe", "whsec_not_it")  # fmt: skip
    assert forged_sig.status_code == 401

    from models.webhooks import WebhookInbox

    async def handled() -> bool:
        ids = [mine["id"], stale["id"], forged["id"]]
        rows = await WebhookInbox.filter(event_id__in=ids, status="processed")
        return len(rows) == 3

    await eventually(handled, "the events processed")
    assert (await billing(gateway, owner))["plan"]["name"] == "pro"
    assert (await billing(gateway, stranger))["plan"]["name"] == "free"


async def test_roles_and_bad_input(gateway: Gateway):
    owner = await register(gateway.client)
    settings = gateway.app.state.services.settings
    for role in ("MANAGER", "SUPPORT", "READ_ONLY"):
        token, _ = await member_token(settings, owner, role)
        assert error_codes(await gql(gateway.client, BILLING, token=token)) == ["FORBIDDEN"]
        refused = await gql(gateway.client, CHECKOUT, {"i": {"plan": "pro"}}, token)
        assert error_codes(refused) == ["FORBIDDEN"], role
    accountant, _ = await member_token(settings, owner, "ACCOUNTING")
    assert "errors" not in await gql(gateway.client, BILLING, token=accountant)
    for data in ({"plan": "platinum"}, {"plan": "free"}, {"plan": "x" * 5000},
                 {"plan": "pro", "successUrl": "javascript:alert(1)"},
                 {"plan": "pro", "cancelUrl": "https://a.example/\x00"}):  # fmt: skip
        body = await gql(gateway.client, CHECKOUT, {"i": data}, owner.token)
        assert error_codes(body) == ["BAD_USER_INPUT"], (data, body)
    early = await gql(gateway.client, PORTAL, {"i": {}}, owner.token)
    assert error_codes(early) == ["CONFLICT"]
    bad_cursor = await gql(gateway.client, INVOICES, {"after": "../../v1/charges"}, owner.token)
    assert error_codes(bad_cursor) == ["BAD_USER_INPUT"]
    assert (await billing(gateway, owner))["plan"]["name"] == "free"


async def test_two_checkouts_racing_make_one_customer(gateway: Gateway):
    import asyncio

    owner = await register(gateway.client)
    answers = await asyncio.gather(
        *(gql(gateway.client, CHECKOUT, {"i": {"plan": "pro"}}, owner.token) for _ in range(5))
    )
    assert all("errors" not in a for a in answers), answers
    sandbox = gateway.app.state.services.sandboxes["stripe"]
    customers = [
        o for a in sandbox.accounts.values() for o in a.objects.values()
        if o.get("object") == "customer"
        and o.get("metadata", {}).get("switchboard_billing_tenant") == str(tenant_id_of(owner))
    ]  # fmt: skip
    assert len(customers) == 1
    assert len({a["data"]["startBillingCheckout"]["sessionId"] for a in answers}) == 1

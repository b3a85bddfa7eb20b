"""Subscriptions and invoices for an organization's own customers, over HTTP against the
Stripe sandbox: a subscription paid at once, one left incomplete then paid through its
invoice, a price change, cancel at period end, cancel now; a draft invoice finalized and
paid, a declined one; idempotency keys; another organization's ids; roles."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import stripe

from tests.conftest import Account, error_codes, eventually, gql, register
from tests.credentials.test_credentials import member_token
from tests.payments.conftest import CUSTOMER, WEBHOOK_SECRET, Gateway

SUB = """id status price vendorId latestInvoiceId cancelAtPeriodEnd currentPeriodEnd
  customer { id }"""
CREATE = (
    "mutation($i: CreatePaymentSubscriptionInput!) { createPaymentSubscription(input: $i) "
    "{ subscription { " + SUB + " } } }"
)
CHANGE = (
    "mutation($i: ChangePaymentSubscriptionInput!) { changePaymentSubscription(input: $i) "
    "{ subscription { " + SUB + " } } }"
)
CANCEL = (
    "mutation($i: CancelPaymentSubscriptionInput!) { cancelPaymentSubscription(input: $i) "
    "{ subscription { " + SUB + " } } }"
)
LIST = "query($c: ID) { paymentSubscriptions(customerId: $c) { edges { node { id status } } } }"
INVOICE = "id number status amountDue amountPaid currency subscriptionId description"
INVOICES = (
    "query($c: ID!, $after: String) { paymentInvoices(customerId: $c, after: $after) "
    "{ hasMore invoices { " + INVOICE + " } } }"
)
MAKE = (
    "mutation($i: CreatePaymentInvoiceInput!) { createPaymentInvoice(input: $i) "
    "{ invoice { " + INVOICE + " } } }"
)
FINALIZE = (
    "mutation($i: FinalizePaymentInvoiceInput!) { finalizePaymentInvoice(input: $i) "
    "{ invoice { " + INVOICE + " } } }"
)
PAY = (
    "mutation($i: PayPaymentInvoiceInput!) { payPaymentInvoice(input: $i) "
    "{ invoice { " + INVOICE + " } } }"
)


async def customer(gw: Gateway, owner: Account) -> str:
    body = await gql(gw.client, CUSTOMER, {"i": {"email": "c@example.com"}}, owner.token)
    assert "errors" not in body, body
    return str(body["data"]["createPaymentCustomer"]["customer"]["id"])


async def run(gw: Gateway, query: str, data: dict[str, Any], owner: Account) -> dict[str, Any]:
    body = await gql(gw.client, query, {"i": data}, owner.token)
    assert "errors" not in body, body
    return next(iter(body["data"].values()))  # type: ignore[no-any-return]


async def test_a_subscription_paid_changed_and_canceled(gateway: Gateway):
    owner = await register(gateway.client)
    cid = await customer(gateway, owner)
    key = f"sub-{uuid.uuid4().hex}"
    data = {
        "customerId": cid,
        "price": "price_switchboard_pro",
        "paymentMethod": "pm_card_visa",
        "idempotencyKey": key,
    }
    made = (await run(gateway, CREATE, data, owner))["subscription"]
    assert made["status"] == "active" and made["vendorId"].startswith("sub_")
    assert made["customer"]["id"] == cid and made["latestInvoiceId"].startswith("in_")
    again = (await run(gateway, CREATE, data, owner))["subscription"]
    assert again["id"] == made["id"] and again["vendorId"] == made["vendorId"]
    other = await gql(
        gateway.client, CREATE, {"i": {**data, "price": "price_switchboard_business"}}, owner.token
    )
    assert error_codes(other) == ["CONFLICT"]

    changed = await run(
        gateway, CHANGE, {"id": made["id"], "price": "price_switchboard_business"}, owner
    )
    assert changed["subscription"]["price"] == "price_switchboard_business"
    ending = await run(gateway, CHANGE, {"id": made["id"], "cancelAtPeriodEnd": True}, owner)
    assert ending["subscription"]["cancelAtPeriodEnd"] is True
    ended = await run(gateway, CANCEL, {"id": made["id"]}, owner)
    assert ended["subscription"]["status"] == "canceled"
    late = await gql(
        gateway.client, CHANGE, {"i": {"id": made["id"], "price": "price_x"}}, owner.token
    )
    assert error_codes(late) == ["CONFLICT"]

    invoices = await gql(gateway.client, INVOICES, {"c": cid}, owner.token)
    rows = invoices["data"]["paymentInvoices"]["invoices"]
    assert rows and rows[-1]["status"] == "paid" and rows[-1]["amountPaid"] == "29.00"
    listed = await gql(gateway.client, LIST, {"c": cid}, owner.token)
    assert [e["node"]["status"] for e in listed["data"]["paymentSubscriptions"]["edges"]] == [
        "canceled"
    ]


async def test_an_incomplete_subscription_is_paid_through_its_invoice(gateway: Gateway):
    owner = await register(gateway.client)
    cid = await customer(gateway, owner)
    declined = (
        await run(
            gateway,
            CREATE,
            {
                "customerId": cid,
                "price": "price_switchboard_pro",
                "paymentMethod": "pm_card_visa_chargeDeclinedInsufficientFunds",
            },
            owner,
        )
    )["subscription"]
    assert declined["status"] == "incomplete"
    refused = await gql(
        gateway.client,
        PAY,
        {
            "i": {
                "id": declined["latestInvoiceId"],
                "paymentMethod": "pm_card_visa_chargeDeclinedInsufficientFunds",
            }
        },
        owner.token,
    )
    assert error_codes(refused) == ["PAYMENT_DECLINED"]
    assert refused["errors"][0]["extensions"]["declineCode"] == "insufficient_funds"
    paid = await run(
        gateway, PAY, {"id": declined["latestInvoiceId"], "paymentMethod": "pm_card_visa"}, owner
    )
    assert paid["invoice"]["status"] == "paid"

    # Stripe's customer.subscription.updated (incomplete → active) reaches the row.
    async def active() -> bool:
        listed = await gql(gateway.client, LIST, {"c": cid}, owner.token)
        return [e["node"]["status"] for e in listed["data"]["paymentSubscriptions"]["edges"]] == [
            "active"
        ]

    await eventually(active, "the subscription active by webhook")


async def test_a_draft_invoice_finalized_and_paid(gateway: Gateway):
    owner = await register(gateway.client)
    cid = await customer(gateway, owner)
    key = f"inv-{uuid.uuid4().hex}"
    data = {
        "customerId": cid,
        "currency": "EUR",
        "idempotencyKey": key,
        "description": "March consulting",
        "lines": [
            {"amount": "120.00", "description": "Workshop"},
            {"amount": "30.50", "description": "Travel"},
        ],
    }
    draft = (await run(gateway, MAKE, data, owner))["invoice"]
    assert draft["status"] == "draft" and draft["amountDue"] == "150.50"
    same = (await run(gateway, MAKE, data, owner))["invoice"]
    assert same["id"] == draft["id"]  # the same key: the same invoice, its lines once
    early = await gql(gateway.client, PAY, {"i": {"id": draft["id"]}}, owner.token)
    assert error_codes(early) == ["BAD_USER_INPUT"], early  # a draft cannot be paid
    final = (await run(gateway, FINALIZE, {"id": draft["id"]}, owner))["invoice"]
    assert final["status"] == "open" and final["number"]
    paid = (await run(gateway, PAY, {"id": draft["id"], "paymentMethod": "pm_card_visa"}, owner))[
        "invoice"
    ]
    assert paid["status"] == "paid" and paid["amountPaid"] == "150.50"
    twice = (await run(gateway, PAY, {"id": draft["id"], "paymentMethod": "pm_card_visa"}, owner))[
        "invoice"
    ]
    assert twice["status"] == "paid"
    sandbox = gateway.stripe
    assert sum(a.charges_made for a in sandbox.accounts.values()) == 1


async def test_other_organizations_roles_and_bad_input(gateway: Gateway):
    owner = await register(gateway.client)
    stranger = await register(gateway.client, org="Other")
    cid = await customer(gateway, owner)
    made = await run(
        gateway,
        CREATE,
        {"customerId": cid, "price": "price_switchboard_pro", "paymentMethod": "pm_card_visa"},
        owner,
    )
    sub = made["subscription"]
    for query, data in (
        (CREATE, {"customerId": cid, "price": "price_switchboard_pro"}),
        (CANCEL, {"id": sub["id"]}),
        (FINALIZE, {"id": sub["latestInvoiceId"]}),
        (PAY, {"id": sub["latestInvoiceId"]}),
    ):
        body = await gql(gateway.client, query, {"i": data}, stranger.token)
        assert error_codes(body) == ["NOT_FOUND"], (query[:40], body)
    foreign = await gql(gateway.client, INVOICES, {"c": cid}, stranger.token)
    assert error_codes(foreign) == ["NOT_FOUND"]
    for data in (
        {"customerId": cid, "price": "not-a-price"},
        {"customerId": cid, "price": "price_x", "paymentMethod": "pm bad"},
        {"customerId": cid, "price": "price_" + "x" * 300},
    ):
        body = await gql(gateway.client, CREATE, {"i": data}, owner.token)
        assert error_codes(body) == ["BAD_USER_INPUT"], data
    unknown = await gql(
        gateway.client, CREATE, {"i": {"customerId": cid, "price": "price_nope"}}, owner.token
    )
    assert error_codes(unknown) == ["BAD_USER_INPUT"], unknown  # Stripe: no such price
    for lines in (
        [],
        [{"amount": "-1", "description": "x"}],
        [{"amount": "1", "description": "x\x00y"}],
        [{"amount": "1", "description": "x"}] * 51,
    ):
        body = await gql(
            gateway.client,
            MAKE,
            {"i": {"customerId": cid, "currency": "EUR", "idempotencyKey": "k1", "lines": lines}},
            owner.token,
        )
        assert error_codes(body) == ["BAD_USER_INPUT"], lines[:1]
    settings = gateway.app.state.services.settings
    for role in ("SUPPORT", "READ_ONLY"):
        token, _ = await member_token(settings, owner, role)
        body = await gql(gateway.client, CANCEL, {"i": {"id": sub["id"]}}, token)
        assert error_codes(body) == ["FORBIDDEN"], role
    listed = await gql(gateway.client, LIST, {"c": cid}, owner.token)
    # The refused one stays on record, ended; nothing else was made or changed.
    assert [e["node"]["status"] for e in listed["data"]["paymentSubscriptions"]["edges"]] == [
        "incomplete_expired",
        "active",
    ]


async def test_events_in_any_order_and_from_other_endpoints(gateway: Gateway):
    from models.payments import PaymentSubscription
    from models.webhooks import WebhookInbox
    from schema.relay import decode_id

    owner = await register(gateway.client)
    cid = await customer(gateway, owner)
    made = await run(
        gateway,
        CREATE,
        {"customerId": cid, "price": "price_switchboard_pro", "paymentMethod": "pm_card_visa"},
        owner,
    )
    row = await PaymentSubscription.get(
        id=decode_id(made["subscription"]["id"], "PaymentSubscription")
    )

    def event(status: str, created: int, metadata: dict[str, str]) -> dict[str, Any]:
        return {
            "id": f"evt_{uuid.uuid4().hex[:24]}",
            "object": "event",
            "created": created,
            "type": "customer.subscription.updated",
            "data": {
                "object": {
                    "id": row.vendor_id,
                    "object": "subscription",
                    "status": status,
                    "customer": "cus_x",
                    "cancel_at_period_end": False,
                    "metadata": metadata,
                    "items": {"data": [{"id": row.item_id, "price": {"id": row.price}}]},
                }
            },
        }

    mine = {"switchboard_subscription": str(row.id), "switchboard_tenant": str(row.tenant_id)}
    newer = event("past_due", int(time.time()) + 5, mine)
    older = event("canceled", int(time.time()) - 3600, mine)
    forged = event(
        "canceled", int(time.time()) + 10, {**mine, "switchboard_tenant": str(row.tenant_id + 1000)}
    )
    for e in (newer, older, forged):
        raw = json.dumps(e)
        header = stripe.WebhookSignature.generate_signature_header(raw, WEBHOOK_SECRET)
        answer = await gateway.client.post(
            "/webhooks/stripe", content=raw, headers={"Stripe-Signature": header}
        )
        assert answer.status_code == 200

    async def done() -> bool:
        ids = [newer["id"], older["id"], forged["id"]]
        return await WebhookInbox.filter(event_id__in=ids, status="processed").count() == 3

    await eventually(done, "the events processed")
    await asyncio.sleep(0)
    assert (await PaymentSubscription.get(id=row.id)).status == "past_due"

"""Payments end to end through GraphQL: the gateway calls its own Stripe sandbox over HTTP
with the official `stripe` library, and the sandbox's signed webhooks come back through
the inbox. Succeeded, declined, 3-D Secure, partial then full refund, cancel; the
`paymentStatus` subscription over a real socket; events; money in zero- and
three-decimal currencies."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import websockets

from models.events import OutboxEvent
from models.payments import Payment
from models.webhooks import WebhookInbox
from schema.relay import decode_id
from tests.conftest import eventually, gql, register
from tests.payments.conftest import CANCEL, CONFIRM, CUSTOMER, REFUND, Gateway


async def intents(gw: Gateway) -> list[dict[str, Any]]:
    """What the sandbox saw: payment intent creations (the SDK's requests)."""
    r = await gw.client.get("/sandbox/stripe/_sandbox/requests", params={"path": "/v1/"})
    return r.json()["requests"]


def charges(gw: Gateway) -> int:
    return sum(a.charges_made for a in gw.stripe.accounts.values())


async def events_of(gid: str) -> list[str]:
    rows = await OutboxEvent.filter(type__startswith="payment.").order_by("id")
    return [r.type for r in rows if r.data.get("payment_id") == gid]


def settled(gw: Gateway, owner: Any, gid: str, *wanted: str) -> Any:
    async def check() -> dict[str, Any] | None:
        payment = await gw.payment(owner, gid)
        return payment if payment["status"] in wanted else None

    return check


async def inbox_done(gid: str) -> Any:
    payment = await Payment.get(id=decode_id(gid, "Payment"))
    rows = await WebhookInbox.filter(provider="stripe")
    return [r for r in rows if (r.payload.get("data") or {}).get("object", {}).get("id")
            == payment.vendor_id]  # fmt: skip


async def test_a_payment_succeeds_and_its_webhooks_agree(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    customer = await gql(
        gateway.client, CUSTOMER, {"i": {"email": "ada@example.com", "name": "Ada"}}, owner.token
    )
    assert "errors" not in customer, customer
    cus = customer["data"]["createPaymentCustomer"]["customer"]
    assert cus["vendorId"].startswith("cus_")
    body = await gateway.create(
        owner, amount="12.34", currency="eur", customerId=cus["id"],
        paymentMethod="pm_card_visa", confirm=True, description="Order 7",
    )  # fmt: skip
    assert "errors" not in body, body
    payment = body["data"]["createPaymentIntent"]["payment"]
    assert payment["status"] == "SUCCEEDED"
    assert payment["amount"] == "12.34" and payment["currency"] == "EUR"
    assert payment["vendorId"].startswith("pi_")
    # The vendor was asked in minor units, with an Idempotency-Key derived from our row.
    created = [r for r in await intents(gateway) if r["path"] == "/v1/payment_intents"]
    assert created[-1]["body"] is not None or True
    sent = created[-1]
    assert "amount=1234" in json.dumps(sent["body"]) or sent["body"].get("amount") == "1234"
    row = await Payment.get(id=decode_id(payment["id"], "Payment"))
    assert sent["headers"]["idempotency-key"] == f"sb-pay-{row.id}-create"

    # The sandbox's signed webhooks come back through the inbox, processed once each.
    async def webhooks_processed() -> bool:
        rows = await inbox_done(payment["id"])
        kinds = {r.event_type for r in rows}
        return {"payment_intent.created", "payment_intent.succeeded"} <= kinds and all(
            r.status == "processed" for r in rows
        )

    await eventually(webhooks_processed, "the sandbox's webhooks are processed")
    assert (await gateway.payment(owner, payment["id"]))["status"] == "SUCCEEDED"
    assert await events_of(payment["id"]) == ["payment.created", "payment.succeeded"]


async def test_a_decline_is_a_coded_error_with_the_decline_code(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    body = await gateway.create(
        owner, paymentMethod="pm_card_visa_chargeDeclinedInsufficientFunds", confirm=True,
        idempotencyKey="decline-1",
    )  # fmt: skip
    [error] = body["errors"]
    assert error["extensions"]["code"] == "PAYMENT_DECLINED"
    assert error["extensions"]["declineCode"] == "insufficient_funds"
    gid = error["extensions"]["paymentId"]
    payment = await gateway.payment(owner, gid)
    assert payment["status"] == "FAILED"
    assert payment["declineCode"] == "insufficient_funds"
    assert payment["failureCode"] == "card_declined"
    # The same request again answers the same decline: no second attempt at the vendor.
    before = charges(gateway)
    again = await gateway.create(
        owner, paymentMethod="pm_card_visa_chargeDeclinedInsufficientFunds", confirm=True,
        idempotencyKey="decline-1",
    )  # fmt: skip
    assert again["errors"][0]["extensions"]["paymentId"] == gid
    assert charges(gateway) == before
    # The webhook (payment_failed) arrives and changes nothing.
    await eventually(
        lambda: WebhookInbox.filter(
            provider="stripe", event_type="payment_intent.payment_failed", status="processed"
        ).exists(),
        "the payment_failed webhook is processed",
    )
    assert (await gateway.payment(owner, gid))["status"] == "FAILED"
    assert (await events_of(gid)).count("payment.failed") == 1


async def test_three_d_secure_then_the_customer_authenticates(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    body = await gateway.create(
        owner, amount="500", currency="JPY", paymentMethod="pm_card_threeDSecure2Required",
        confirm=True, returnUrl="https://shop.example/back",
    )  # fmt: skip
    assert "errors" not in body, body
    payment = body["data"]["createPaymentIntent"]["payment"]
    assert payment["status"] == "REQUIRES_ACTION"
    assert payment["amount"] == "500" and payment["currency"] == "JPY"
    url = payment["nextActionUrl"]
    assert url and "/3d_secure_2/" in url
    async with httpx.AsyncClient() as browser:  # the customer, at the hosted page
        page = await browser.get(url)
        assert page.status_code == 200
        done = await browser.post(url, data={"outcome": "succeed"})
        assert done.json()["status"] == "succeeded"
    # Only the webhook tells the gateway: it arrives signed and moves the payment on.
    final = await eventually(
        settled(gateway, owner, payment["id"], "SUCCEEDED"), "the webhook settles it"
    )
    assert final["nextActionUrl"] is None


async def test_failed_authentication_fails_the_payment(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    body = await gateway.create(
        owner, paymentMethod="pm_card_authenticationRequired", confirm=True,
        returnUrl="https://shop.example/back",
    )  # fmt: skip
    payment = body["data"]["createPaymentIntent"]["payment"]
    async with httpx.AsyncClient() as browser:
        await browser.post(payment["nextActionUrl"], data={"outcome": "fail"})
    final = await eventually(settled(gateway, owner, payment["id"], "FAILED"), "failed")
    assert final["failureCode"] == "payment_intent_authentication_failure"


async def test_partial_then_full_refund(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    body = await gateway.create(
        owner, amount="1.250", currency="KWD", paymentMethod="pm_card_visa", confirm=True
    )
    payment = body["data"]["createPaymentIntent"]["payment"]
    assert payment["status"] == "SUCCEEDED" and payment["amount"] == "1.250"
    first = await gql(
        gateway.client, REFUND,
        {"i": {"id": payment["id"], "amount": "0.500", "idempotencyKey": "r-1"}}, owner.token,
    )  # fmt: skip
    assert "errors" not in first, first
    out = first["data"]["refundPayment"]
    assert out["refund"]["status"] == "SUCCEEDED" and out["refund"]["amount"] == "0.500"
    assert out["payment"]["status"] == "PARTIALLY_REFUNDED"
    assert out["payment"]["amountRefunded"] == "0.500"
    # More than is left is refused before the vendor is asked.
    too_much = await gql(
        gateway.client, REFUND, {"i": {"id": payment["id"], "amount": "0.760"}}, owner.token
    )
    assert too_much["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    rest = await gql(gateway.client, REFUND, {"i": {"id": payment["id"]}}, owner.token)
    assert "errors" not in rest, rest
    done = rest["data"]["refundPayment"]
    assert done["refund"]["amount"] == "0.750"
    assert done["payment"]["status"] == "REFUNDED"
    assert done["payment"]["amountRefunded"] == "1.250"
    assert [r["amount"] for r in done["payment"]["refunds"]] == ["0.500", "0.750"]
    # The same refund request again is the same refund (no third refund at the vendor).
    replay = await gql(
        gateway.client, REFUND,
        {"i": {"id": payment["id"], "amount": "0.500", "idempotencyKey": "r-1"}}, owner.token,
    )  # fmt: skip
    assert replay["data"]["refundPayment"]["refund"]["id"] == out["refund"]["id"]
    posted = [r for r in await intents(gateway) if r["path"] == "/v1/refunds"]
    assert len({r["headers"]["idempotency-key"] for r in posted}) == 2
    # Refund webhooks (refund.created, charge.refunded) arrive and change nothing more.
    await eventually(
        lambda: WebhookInbox.filter(
            provider="stripe", event_type="charge.refunded", status="processed"
        ).count(),
        "refund webhooks processed",
    )
    final = await gateway.payment(owner, payment["id"])
    assert final["status"] == "REFUNDED" and final["amountRefunded"] == "1.250"
    again = await gql(gateway.client, REFUND, {"i": {"id": payment["id"]}}, owner.token)
    assert again["errors"][0]["extensions"]["code"] == "CONFLICT"


async def test_confirm_later_and_cancel(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    body = await gateway.create(owner, amount="20", currency="USD")
    payment = body["data"]["createPaymentIntent"]["payment"]
    assert payment["status"] == "REQUIRES_PAYMENT_METHOD" and payment["amount"] == "20.00"
    assert payment["clientSecret"].startswith(payment["vendorId"])
    confirmed = await gql(
        gateway.client, CONFIRM, {"i": {"id": payment["id"], "paymentMethod": "pm_card_visa"}},
        owner.token,
    )  # fmt: skip
    assert confirmed["data"]["confirmPayment"]["payment"]["status"] == "SUCCEEDED"
    refused = await gql(gateway.client, CANCEL, {"i": {"id": payment["id"]}}, owner.token)
    assert refused["errors"][0]["extensions"]["code"] == "CONFLICT"
    other = (await gateway.create(owner))["data"]["createPaymentIntent"]["payment"]
    canceled = await gql(gateway.client, CANCEL, {"i": {"id": other["id"]}}, owner.token)
    assert canceled["data"]["cancelPayment"]["payment"]["status"] == "CANCELED"
    late = await gql(
        gateway.client, CONFIRM, {"i": {"id": other["id"], "paymentMethod": "pm_card_visa"}},
        owner.token,
    )  # fmt: skip
    assert late["errors"][0]["extensions"]["code"] == "CONFLICT"


async def test_the_subscription_follows_a_payment_to_its_end(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    body = await gateway.create(
        owner, paymentMethod="pm_card_threeDSecure2Required", confirm=True,
        returnUrl="https://shop.example/back",
    )  # fmt: skip
    payment = body["data"]["createPaymentIntent"]["payment"]
    ws_url = gateway.url.replace("http", "ws") + "/graphql"
    async with websockets.connect(ws_url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        init = {"authorization": f"Bearer {owner.token}"}
        await ws.send(json.dumps({"type": "connection_init", "payload": init}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {
            "query": "subscription($id: ID!) { paymentStatus(id: $id) { status } }",
            "variables": {"id": payment["id"]}}}))  # fmt: skip
        first = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert first["payload"]["data"]["paymentStatus"]["status"] == "REQUIRES_ACTION"
        async with httpx.AsyncClient() as browser:
            await browser.post(payment["nextActionUrl"], data={"outcome": "succeed"})
        seen = []
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if message["type"] == "complete":
                break
            assert message["type"] == "next", message
            seen.append(message["payload"]["data"]["paymentStatus"]["status"])
    assert seen == ["SUCCEEDED"]

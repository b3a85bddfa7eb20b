"""Stripe's webhooks at the gateway: signed with `stripe`'s own helper; forged, stale and
replayed ones refused with nothing stored; duplicates processed once; events out of order
never move a payment back; an event that outruns the mutation's answer is applied; a
tenant's own endpoint reaches its own payments only."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import stripe

from models.events import OutboxEvent
from models.payments import Payment
from models.webhooks import WebhookInbox
from schema.relay import decode_id
from tests.conftest import Account, eventually, gql, register
from tests.payments.conftest import REFUND, WEBHOOK_SECRET, Gateway


def intent_event(
    payment: Payment, status: str, *, kind: str | None = None, amount_received: int = 0,
    event_id: str | None = None, error: dict[str, Any] | None = None,
    next_action: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    return {
        "id": event_id or f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "type": kind or f"payment_intent.{status}",
        "created": int(time.time()),
        "data": {"object": {
            "id": payment.vendor_id, "object": "payment_intent", "status": status,
            "amount": payment.amount_minor, "currency": payment.currency.lower(),
            "amount_received": amount_received, "last_payment_error": error,
            "next_action": next_action,
            "metadata": {"switchboard_payment": str(payment.id),
                         "switchboard_tenant": str(payment.tenant_id)},
        }},
    }  # fmt: skip


async def post(
    gw: Gateway, event: dict[str, Any], *, secret: str = WEBHOOK_SECRET,
    timestamp: int | None = None, path: str = "/webhooks/stripe",
) -> Any:  # fmt: skip
    raw = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(raw, secret, timestamp=timestamp)
    return await gw.client.post(
        path, content=raw, headers={"Stripe-Signature": header, "Content-Type": "application/json"}
    )


async def a_payment(gw: Gateway, owner: Account, **values: Any) -> Payment:
    body = await gw.create(owner, **values)
    assert "errors" not in body, body
    gid = body["data"]["createPaymentIntent"]["payment"]["id"]
    return await Payment.get(id=decode_id(gid, "Payment"))


async def processed(event_id: str) -> WebhookInbox:
    async def check() -> WebhookInbox | None:
        row = await WebhookInbox.filter(provider="stripe", event_id=event_id).first()
        return row if row is not None and row.status in ("processed", "failed") else None

    return await eventually(check, f"event {event_id} processed")


def gid_of(payment: Payment) -> str:
    from strawberry import relay

    return str(relay.GlobalID("Payment", str(payment.id)))


async def test_the_sandbox_signs_as_stripe_does(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    await a_payment(gateway, owner, paymentMethod="pm_card_visa", confirm=True)
    await eventually(
        lambda: asyncio.sleep(0, result=len(gateway.stripe.callbacks.recorded()) >= 2),
        "the sandbox posted its events",
    )
    for delivery in gateway.stripe.callbacks.recorded():
        raw = json.dumps(delivery["body"], separators=(",", ":"))
        event = stripe.Webhook.construct_event(
            raw, delivery["headers"]["stripe-signature"], WEBHOOK_SECRET
        )
        assert event.id.startswith("evt_")


async def test_forged_stale_and_malformed_signatures_store_nothing(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    payment = await a_payment(gateway, owner)
    event = intent_event(payment, "succeeded", amount_received=payment.amount_minor)
    forged = await post(gateway, event, secret="whsec_not_the_secret")
    assert forged.status_code == 401
    assert forged.json()["error"]["reason"] == "SIGNATURE_MISMATCH" or "SIGNATURE" in forged.text
    stale = await post(gateway, event, timestamp=int(time.time()) - 301)
    assert stale.status_code == 401 and "STALE_TIMESTAMP" in stale.text
    future = await post(gateway, event, timestamp=int(time.time()) + 3600)
    assert future.status_code == 401
    raw = json.dumps(event)
    for header in ("", "t=abc,v1=00", "v1=" + "0" * 64, "t=" + str(int(time.time())), "x" * 5000,
                   f"t={int(time.time())},v1=zz\u00e9"):  # fmt: skip
        bad = await gateway.client.post(
            "/webhooks/stripe", content=raw,
            headers=[(b"Stripe-Signature", header.encode("utf-8"))],
        )  # fmt: skip
        assert bad.status_code == 401, (header[:40], bad.status_code)
    tampered = raw.replace('"succeeded"', '"canceled"')
    header = stripe.WebhookSignature.generate_signature_header(raw, WEBHOOK_SECRET)
    bad = await gateway.client.post(
        "/webhooks/stripe", content=tampered, headers={"Stripe-Signature": header}
    )
    assert bad.status_code == 401
    huge = await gateway.client.post(
        "/webhooks/stripe", content=b"{" + b" " * (300 * 1024) + b"}",
        headers={"Stripe-Signature": header},
    )  # fmt: skip
    assert huge.status_code == 413
    assert not await WebhookInbox.filter(provider="stripe", event_id=event["id"]).exists()
    assert (await Payment.get(id=payment.id)).status == "REQUIRES_PAYMENT_METHOD"


async def test_a_replayed_event_is_processed_once(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    payment = await a_payment(gateway, owner)
    event = intent_event(payment, "succeeded", amount_received=payment.amount_minor)
    first = await post(gateway, event)
    assert first.status_code == 200, first.text
    await processed(event["id"])
    again = await post(gateway, event)  # re-signed now: a fresh timestamp, the same event
    assert again.status_code == 200 and again.json().get("duplicate") is True
    assert await WebhookInbox.filter(provider="stripe", event_id=event["id"]).count() == 1
    await asyncio.sleep(0.3)  # the worker polls every 50 ms: it would have run a second job
    types = [e.type for e in await OutboxEvent.filter(type="payment.succeeded")]
    mine = [
        e for e in await OutboxEvent.filter(type="payment.succeeded")
        if e.data.get("payment_id") == gid_of(payment)
    ]  # fmt: skip
    assert types and len(mine) == 1


async def test_events_out_of_order_never_move_a_payment_back(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    payment = await a_payment(gateway, owner, amount="10", currency="USD")
    succeeded = intent_event(payment, "succeeded", amount_received=1000)
    await post(gateway, succeeded)
    await processed(succeeded["id"])
    for older in (
        intent_event(payment, "requires_payment_method", kind="payment_intent.created"),
        intent_event(payment, "requires_action", next_action={
            "type": "redirect_to_url", "redirect_to_url": {"url": "https://x.example/3ds"}}),
        intent_event(payment, "processing"),
        intent_event(payment, "requires_payment_method", kind="payment_intent.payment_failed",
                     error={"code": "card_declined", "decline_code": "generic_decline",
                            "message": "declined"}),
    ):  # fmt: skip
        assert (await post(gateway, older)).status_code == 200
        await processed(older["id"])
    row = await Payment.get(id=payment.id)
    assert row.status == "SUCCEEDED" and row.decline_code is None
    # Refunds: the full refund's total, then an older partial one's.
    charge = {"id": "ch_1", "object": "charge", "payment_intent": payment.vendor_id,
              "amount": 1000, "metadata": {}}  # fmt: skip
    full = {"id": f"evt_{uuid.uuid4().hex[:20]}", "type": "charge.refunded", "object": "event",
            "data": {"object": {**charge, "amount_refunded": 1000, "refunded": True}}}  # fmt: skip
    part = {"id": f"evt_{uuid.uuid4().hex[:20]}", "type": "charge.refunded", "object": "event",
            "data": {"object": {**charge, "amount_refunded": 400, "refunded": False}}}  # fmt: skip
    for event in (full, part):
        await post(gateway, event)
        await processed(event["id"])
    row = await Payment.get(id=payment.id)
    assert row.status == "REFUNDED" and row.amount_refunded_minor == 1000
    later_success = intent_event(payment, "succeeded", amount_received=1000)
    await post(gateway, later_success)
    await processed(later_success["id"])
    assert (await Payment.get(id=payment.id)).status == "REFUNDED"


async def test_an_event_that_outruns_the_answer_is_applied(gateway: Gateway) -> None:
    """Stripe's webhook arrives while the mutation still waits for Stripe's answer: the
    row is committed before Stripe is called and the intent's metadata names it, so the
    event is applied at once; the answer then finds the work done."""
    owner = await register(gateway.client)
    gateway.stripe.answer_delay = 1.0
    gateway.stripe.callbacks.delay = 0.0
    try:
        body = await gateway.create(owner, paymentMethod="pm_card_visa", confirm=True)
    finally:
        gateway.stripe.answer_delay = 0.0
        gateway.stripe.callbacks.delay = 0.05
    payment = body["data"]["createPaymentIntent"]["payment"]
    assert payment["status"] == "SUCCEEDED"
    row = await Payment.get(id=decode_id(payment["id"], "Payment"))
    event = (
        await WebhookInbox.filter(provider="stripe", event_type="payment_intent.succeeded")
        .order_by("-id")
        .first()
    )
    assert event is not None and event.payload["data"]["object"]["id"] == row.vendor_id
    assert event.status == "processed"
    # The event was applied before the answer came back (it moved the payment itself).
    assert event.processed_at is not None and event.processed_at < row.updated_at
    mine = [
        e for e in await OutboxEvent.filter(type="payment.succeeded")
        if e.data.get("payment_id") == payment["id"]
    ]  # fmt: skip
    assert len(mine) == 1


async def test_a_tenants_own_endpoint_reaches_its_own_payments_only(gateway: Gateway) -> None:
    victim = await register(gateway.client)
    attacker = await register(gateway.client)
    payment = await a_payment(gateway, victim)
    source = await gql(
        gateway.client,
        "mutation($i: CreateWebhookSourceInput!) { createWebhookSource(input: $i) { url secret } }",
        {"i": {"provider": "stripe", "secret": "whsec_attacker_own_endpoint_secret"}},
        attacker.token,
    )
    assert "errors" not in source, source
    url = source["data"]["createWebhookSource"]["url"]
    path = url[url.index("/webhooks/") :]
    # A genuine event of the attacker's own Stripe account, naming the victim's payment.
    event = intent_event(payment, "succeeded", amount_received=payment.amount_minor)
    response = await post(gateway, event, secret="whsec_attacker_own_endpoint_secret", path=path)
    assert response.status_code == 200, response.text
    await processed(event["id"])
    assert (await Payment.get(id=payment.id)).status == "REQUIRES_PAYMENT_METHOD"


async def test_refund_races_make_one_refund(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    payment = await a_payment(gateway, owner, paymentMethod="pm_card_visa", confirm=True)
    variables = {"i": {"id": gid_of(payment), "amount": "5.00", "idempotencyKey": "race-r"}}
    answers = await asyncio.gather(
        *(gql(gateway.client, REFUND, variables, owner.token) for _ in range(5))
    )
    ids = {a["data"]["refundPayment"]["refund"]["id"] for a in answers if a.get("data")}
    assert len(ids) == 1, answers
    posted = {
        r["headers"]["idempotency-key"]
        for r in (await gateway.client.get(
            "/sandbox/stripe/_sandbox/requests", params={"path": "/v1/refunds"})).json()["requests"]
    }  # fmt: skip
    assert len(posted) == 1
    account = next(iter(gateway.stripe.accounts.values()))
    refunds = [o for o in account.objects.values() if o["object"] == "refund"]
    assert len([r for r in refunds if r["payment_intent"] == payment.vendor_id]) == 1

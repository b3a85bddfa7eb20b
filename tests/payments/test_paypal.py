"""PayPal through the gateway, over real HTTP against the PayPal sandbox: an order
approved by its payer and captured ("execute"), declined and pending captures, partial
then full refunds, webhooks signed as PayPal signs them (RSA-SHA256 with the certificate a
header names) and refused when forged, stale, replayed, aimed at another webhook or naming
a certificate off PayPal's hosts; one access token for many concurrent calls."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import uuid
import zlib
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from models.events import OutboxEvent
from models.payments import Payment
from models.webhooks import WebhookInbox
from providers.sandbox.paypal import CERT_NAME, signing_identity
from schema.relay import decode_id
from tests.conftest import Account, error_codes, eventually, gql, register
from tests.payments.conftest import CANCEL, CONFIRM, REFUND, Gateway, serving

WEBHOOK_ID = "WH-TEST-PAYPAL-0001"


@pytest.fixture
async def gateway(store: Any, worker: Any) -> Any:
    async with serving(store, worker, paypal_webhook_id=WEBHOOK_ID) as served:
        yield served


def sandbox(gw: Gateway) -> Any:
    return gw.app.state.services.sandboxes["paypal"]


async def create(gw: Gateway, owner: Account, **values: Any) -> dict[str, Any]:
    data = {"amount": "25.00", "currency": "EUR", "provider": "PAYPAL", **values}
    body = await gw.create(owner, **data)
    assert "errors" not in body, body
    return body["data"]["createPaymentIntent"]["payment"]


async def payer(gw: Gateway, payment: dict[str, Any], action: str = "approve") -> None:
    """The payer at PayPal's page (the payment's nextActionUrl): approve, decline…"""
    url = payment["nextActionUrl"]
    order_id = url.split("token=")[1]
    async with httpx.AsyncClient() as browser:
        page = await browser.get(url)
        assert page.status_code == 200 and "checkout" in page.text
        answer = await browser.post(url.split("?")[0], data={"token": order_id, "action": action})
        assert answer.status_code in (200, 303), answer.text


async def confirm(gw: Gateway, owner: Account, gid: str) -> dict[str, Any]:
    return await gql(gw.client, CONFIRM, {"i": {"id": gid}}, owner.token)


async def settled(gw: Gateway, owner: Account, gid: str, status: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        found = await gw.payment(owner, gid)
        return found if found["status"] == status else None

    return await eventually(check, f"payment {status}")


# The flow --------------------------------------------------------------------------------


async def test_order_approved_captured_then_refunded_in_part_and_in_full(gateway: Gateway):
    owner = await register(gateway.client)
    payment = await create(gateway, owner, description="Consulting, March")
    assert payment["status"] == "REQUIRES_ACTION"
    assert payment["vendorId"] and "/sandbox/paypal/checkoutnow?token=" in payment["nextActionUrl"]
    assert payment["amount"] == "25.00" and payment["currency"] == "EUR"

    early = await confirm(gateway, owner, payment["id"])  # the payer has not approved yet
    assert error_codes(early) == ["CONFLICT"], early
    await payer(gateway, payment)
    body = await confirm(gateway, owner, payment["id"])
    assert "errors" not in body, body
    assert body["data"]["confirmPayment"]["payment"]["status"] == "SUCCEEDED"
    row = await Payment.get(id=decode_id(payment["id"], "Payment"))
    assert row.metadata["capture_id"] and sandbox(gateway).captures_made == 1

    part = await gql(
        gateway.client, REFUND,
        {"i": {"id": payment["id"], "amount": "10.50", "reason": "one day less"}}, owner.token,
    )  # fmt: skip
    assert "errors" not in part, part
    assert part["data"]["refundPayment"]["payment"]["status"] == "PARTIALLY_REFUNDED"
    assert part["data"]["refundPayment"]["refund"]["status"] == "SUCCEEDED"
    rest = await gql(gateway.client, REFUND, {"i": {"id": payment["id"]}}, owner.token)
    assert "errors" not in rest, rest
    refunded = rest["data"]["refundPayment"]["payment"]
    assert refunded["status"] == "REFUNDED" and refunded["amountRefunded"] == "25.00"
    assert [r["amount"] for r in refunded["refunds"]] == ["10.50", "14.50"]
    more = await gql(gateway.client, REFUND, {"i": {"id": payment["id"]}}, owner.token)
    assert error_codes(more) == ["CONFLICT"]
    assert sandbox(gateway).refunds_made == 2

    # PayPal's own webhooks (approved, capture completed, two refunds) arrived, verified,
    # and were processed without moving anything back.
    async def hooks() -> list[WebhookInbox] | None:
        rows = await WebhookInbox.filter(provider="paypal", status="processed")
        return rows if len(rows) >= 4 else None

    rows = await hooks() or await eventually(hooks, "paypal webhooks processed")
    assert {r.event_type for r in rows} >= {
        "CHECKOUT.ORDER.APPROVED", "PAYMENT.CAPTURE.COMPLETED", "PAYMENT.CAPTURE.REFUNDED"
    }  # fmt: skip
    assert (await gateway.payment(owner, payment["id"]))["status"] == "REFUNDED"
    kinds = [e.type for e in await OutboxEvent.filter(tenant_id=row.tenant_id).order_by("id")]
    assert kinds.count("payment.succeeded") == 1 and kinds.count("payment.refunded") == 1


async def test_a_declined_funding_source_then_another_one(gateway: Gateway):
    owner = await register(gateway.client)
    payment = await create(gateway, owner)
    await payer(gateway, payment, "decline")
    body = await confirm(gateway, owner, payment["id"])
    assert error_codes(body) == ["PAYMENT_DECLINED"], body
    assert body["errors"][0]["extensions"]["declineCode"] == "INSTRUMENT_DECLINED"
    assert (await gateway.payment(owner, payment["id"]))["status"] == "FAILED"
    await payer(gateway, payment, "approve")  # the payer chose another funding source
    again = await confirm(gateway, owner, payment["id"])
    assert "errors" not in again, again
    assert again["data"]["confirmPayment"]["payment"]["status"] == "SUCCEEDED"
    assert sandbox(gateway).captures_made == 2


async def test_a_pending_capture_completes_by_webhook(gateway: Gateway):
    owner = await register(gateway.client)
    payment = await create(gateway, owner)
    await payer(gateway, payment, "pending")
    body = await confirm(gateway, owner, payment["id"])
    assert body["data"]["confirmPayment"]["payment"]["status"] == "PROCESSING", body
    await settled(gateway, owner, payment["id"], "SUCCEEDED")


async def test_cancel_abandons_the_order(gateway: Gateway):
    owner = await register(gateway.client)
    payment = await create(gateway, owner)
    body = await gql(gateway.client, CANCEL, {"i": {"id": payment["id"]}}, owner.token)
    assert body["data"]["cancelPayment"]["payment"]["status"] == "CANCELED", body
    await payer(gateway, payment)  # approved too late: never captured
    late = await confirm(gateway, owner, payment["id"])
    assert error_codes(late) == ["CONFLICT"]
    assert sandbox(gateway).captures_made == 0


# Idempotency and the token ---------------------------------------------------------------


async def test_one_order_per_key_and_one_capture_for_racing_confirms(gateway: Gateway):
    owner = await register(gateway.client)
    key = f"order-{uuid.uuid4().hex}"
    first, second = await asyncio.gather(
        gateway.create(owner, amount="9.99", currency="USD", provider="PAYPAL",
                       idempotencyKey=key),
        gateway.create(owner, amount="9.99", currency="USD", provider="PAYPAL",
                       idempotencyKey=key),
    )  # fmt: skip
    a = first["data"]["createPaymentIntent"]["payment"]
    b = second["data"]["createPaymentIntent"]["payment"]
    assert a["id"] == b["id"] and a["vendorId"] == b["vendorId"]
    orders = [r for r in sandbox(gateway).recorded if r["path"] == "/v2/checkout/orders"]
    assert len({r["headers"].get("paypal-request-id") for r in orders}) == 1
    other = await gateway.create(owner, amount="10.00", currency="USD", provider="PAYPAL",
                                 idempotencyKey=key)  # fmt: skip
    assert error_codes(other) == ["CONFLICT"]
    await payer(gateway, a)
    results = await asyncio.gather(*(confirm(gateway, owner, a["id"]) for _ in range(5)))
    statuses = {
        r["data"]["confirmPayment"]["payment"]["status"] for r in results if "errors" not in r
    }
    assert statuses == {"SUCCEEDED"}, results
    assert sandbox(gateway).captures_made == 1


async def test_one_token_for_concurrent_calls_and_one_renewal_when_it_expires(gateway: Gateway):
    owner = await register(gateway.client)
    box = sandbox(gateway)
    box.token_requests = 0
    await asyncio.gather(*(create(gateway, owner) for _ in range(20)))
    assert box.token_requests == 1
    box.expire_tokens()  # PayPal now refuses the cached token: 401, renewed once for all
    await asyncio.gather(*(create(gateway, owner) for _ in range(20)))
    assert box.token_requests == 2


# Bad input and other organizations --------------------------------------------------------


async def test_bad_input_and_other_organizations(gateway: Gateway):
    owner = await register(gateway.client)
    stranger = await register(gateway.client, org="Other")
    payment = await create(gateway, owner)
    foreign = await confirm(gateway, stranger, payment["id"])
    assert error_codes(foreign) == ["NOT_FOUND"]
    refund = await gql(gateway.client, REFUND, {"i": {"id": payment["id"]}}, stranger.token)
    assert error_codes(refund) == ["NOT_FOUND"]
    method = await gateway.create(owner, provider="PAYPAL", paymentMethod="pm_card_visa")
    assert error_codes(method) == ["BAD_USER_INPUT"]
    kwd = await gateway.create(owner, provider="PAYPAL", amount="1.000", currency="KWD")
    assert error_codes(kwd) == ["BAD_USER_INPUT"], kwd
    assert "currency" in kwd["errors"][0]["extensions"]["details"]
    customer = await gql(
        gateway.client,
        "mutation($i: CreatePaymentCustomerInput!) { createPaymentCustomer(input: $i) "
        "{ customer { id } } }",
        {"i": {"email": "a@example.com", "provider": "PAYPAL"}},
        owner.token,
    )
    assert error_codes(customer) == ["BAD_USER_INPUT"]
    assert (await gateway.payment(owner, payment["id"]))["status"] == "REQUIRES_ACTION"


# Webhooks --------------------------------------------------------------------------------


def message(transmission_id: str, at: str, webhook_id: str, raw: bytes) -> bytes:
    """What PayPal signs, written out here (not the gateway's helper): the CRC32 unsigned."""
    return f"{transmission_id}|{at}|{webhook_id}|{zlib.crc32(raw) & 0xFFFFFFFF}".encode()


def headers_for(
    raw: bytes, *, key: rsa.RSAPrivateKey, cert_url: str, webhook_id: str = WEBHOOK_ID,
    at: dt.datetime | None = None,
) -> dict[str, str]:  # fmt: skip
    transmission_id = str(uuid.uuid4())
    when = (at or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    signature = key.sign(
        message(transmission_id, when, webhook_id, raw), padding.PKCS1v15(), hashes.SHA256()
    )
    return {
        "content-type": "application/json",
        "paypal-transmission-id": transmission_id,
        "paypal-transmission-time": when,
        "paypal-transmission-sig": base64.b64encode(signature).decode(),
        "paypal-cert-url": cert_url,
        "paypal-auth-algo": "SHA256withRSA",
    }


def capture_event(payment: Payment, status: str = "COMPLETED") -> dict[str, Any]:
    return {
        "id": f"WH-{uuid.uuid4().hex.upper()}",
        "event_version": "1.0",
        "resource_type": "capture",
        "event_type": f"PAYMENT.CAPTURE.{status}",
        "resource": {
            "id": uuid.uuid4().hex[:17].upper(), "status": status,
            "amount": {"currency_code": payment.currency, "value": "25.00"},
            "custom_id": f"sb:{payment.tenant_id}:{payment.id}",
            "supplementary_data": {"related_ids": {"order_id": payment.vendor_id}},
        },
    }  # fmt: skip


def cert_url(gw: Gateway) -> str:
    return f"{gw.url}/sandbox/paypal/v1/notifications/certs/{CERT_NAME}"


async def test_signed_webhooks_are_applied_once_and_forgeries_store_nothing(gateway: Gateway):
    owner = await register(gateway.client)
    made = await create(gateway, owner)
    payment = await Payment.get(id=decode_id(made["id"], "Payment"))
    key, _ = signing_identity()
    event = capture_event(payment)
    raw = json.dumps(event).encode()

    def post(body: bytes, headers: dict[str, str]) -> Any:
        return gateway.client.post("/webhooks/paypal", content=body, headers=headers)

    impostor = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refusals = {
        "another key": headers_for(raw, key=impostor, cert_url=cert_url(gateway)),
        "another webhook": headers_for(
            raw, key=key, cert_url=cert_url(gateway), webhook_id="WH-SOMEONE-ELSE"
        ),
        "stale": headers_for(
            raw, key=key, cert_url=cert_url(gateway),
            at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10),
        ),
        "metadata service": headers_for(
            raw, key=key, cert_url="http://169.254.169.254/v1/notifications/certs/x"
        ),
        "not paypal": headers_for(
            raw, key=key, cert_url="https://paypal.com.evil.example/v1/notifications/certs/x"
        ),
        "another path": headers_for(raw, key=key, cert_url=f"{gateway.url}/graphql"),
    }  # fmt: skip
    for what, headers in refusals.items():
        answer = await post(raw, headers)
        assert answer.status_code == 401, (what, answer.text)
    tampered = raw.replace(b'"COMPLETED"', b'"DECLINED"')
    answer = await post(tampered, headers_for(raw, key=key, cert_url=cert_url(gateway)))
    assert answer.status_code == 401
    for broken in ({"paypal-transmission-sig": "not base64!"}, {"paypal-auth-algo": "MD5"},
                   {"paypal-transmission-time": "yesterday"}, {"paypal-cert-url": ""}):  # fmt: skip
        headers = {**headers_for(raw, key=key, cert_url=cert_url(gateway)), **broken}
        assert (await post(raw, headers)).status_code == 401, broken
    assert not await WebhookInbox.filter(provider="paypal", event_id=event["id"]).exists()
    assert (await Payment.get(id=payment.id)).status == "REQUIRES_ACTION"

    good = await post(raw, headers_for(raw, key=key, cert_url=cert_url(gateway)))
    assert good.status_code == 200, good.text
    again = await post(raw, headers_for(raw, key=key, cert_url=cert_url(gateway)))
    assert again.json()["duplicate"] is True
    await settled(gateway, owner, made["id"], "SUCCEEDED")
    assert await WebhookInbox.filter(provider="paypal", event_id=event["id"]).count() == 1


async def test_an_expired_certificate_is_refused():
    from kit.signing import PayPalVerifier, SignatureInvalid

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old")])
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(past - dt.timedelta(days=365)).not_valid_after(past)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    raw = b'{"id": "WH-1", "event_type": "PAYMENT.CAPTURE.COMPLETED"}'
    headers = headers_for(raw, key=key, cert_url="https://api.paypal.com/v1/notifications/certs/a")
    pem = cert.public_bytes(serialization.Encoding.PEM)
    with pytest.raises(SignatureInvalid) as refused:
        PayPalVerifier().verify(headers, raw, WEBHOOK_ID, certificate=pem)
    assert refused.value.reason == "CERTIFICATE_EXPIRED"
    with pytest.raises(SignatureInvalid):
        PayPalVerifier().verify(headers, raw, WEBHOOK_ID, certificate=b"not a certificate")


async def test_a_tenant_endpoint_reaches_only_its_own_payments(gateway: Gateway):
    owner = await register(gateway.client)
    stranger = await register(gateway.client, org="Other")
    made = await create(gateway, owner)
    payment = await Payment.get(id=decode_id(made["id"], "Payment"))
    source = await gql(
        gateway.client,
        "mutation($i: CreateWebhookSourceInput!) { createWebhookSource(input: $i) "
        "{ url source { id } } }",
        {"i": {"provider": "paypal", "secret": "WH-STRANGER-HOOK"}},
        stranger.token,
    )
    assert "errors" not in source, source
    path = "/" + source["data"]["createWebhookSource"]["url"].split("/", 3)[3]
    key, _ = signing_identity()
    event = capture_event(payment)
    raw = json.dumps(event).encode()
    headers = headers_for(raw, key=key, cert_url=cert_url(gateway), webhook_id="WH-STRANGER-HOOK")
    answer = await gateway.client.post(path, content=raw, headers=headers)
    assert answer.status_code == 200, answer.text

    async def done() -> WebhookInbox | None:
        row = await WebhookInbox.filter(provider="paypal", event_id=event["id"]).first()
        return row if row is not None and row.status == "processed" else None

    await eventually(done, "the stranger's event processed")
    assert (await Payment.get(id=payment.id)).status == "REQUIRES_ACTION"  # not theirs


# Subscriptions ---------------------------------------------------------------------------

SUBSCRIBE = """mutation($i: CreatePaymentSubscriptionInput!) { createPaymentSubscription(input: $i)
  { subscription { id status price vendorId approveUrl customer { id } } } }"""
SUBSCRIPTIONS = "{ paymentSubscriptions { edges { node { id status currentPeriodEnd } } } }"


async def test_a_subscription_approved_by_its_payer_then_canceled(gateway: Gateway):
    owner = await register(gateway.client)
    key = f"sub-{uuid.uuid4().hex}"
    data = {"provider": "PAYPAL", "price": "P-SWITCHBOARD-PRO", "idempotencyKey": key,
            "returnUrl": "https://app.example/billing/done"}  # fmt: skip
    body = await gql(gateway.client, SUBSCRIBE, {"i": data}, owner.token)
    assert "errors" not in body, body
    made = body["data"]["createPaymentSubscription"]["subscription"]
    assert made["status"] == "incomplete" and made["vendorId"].startswith("I-")
    assert made["customer"] is None and "ba_token=" in made["approveUrl"]
    again = await gql(gateway.client, SUBSCRIBE, {"i": data}, owner.token)
    assert again["data"]["createPaymentSubscription"]["subscription"]["id"] == made["id"]

    async with httpx.AsyncClient() as browser:
        url = made["approveUrl"]
        token = url.split("ba_token=")[1]
        answer = await browser.post(
            url.split("?")[0], data={"ba_token": token, "action": "approve"}
        )
        assert answer.status_code == 303 and "subscription_id=" in answer.headers["location"]

    async def active() -> bool:
        listed = await gql(gateway.client, SUBSCRIPTIONS, token=owner.token)
        nodes = [e["node"] for e in listed["data"]["paymentSubscriptions"]["edges"]]
        return [n["status"] for n in nodes] == ["active"] and bool(nodes[0]["currentPeriodEnd"])

    await eventually(active, "the subscription active by PayPal's webhook")
    change = await gql(
        gateway.client,
        "mutation($i: ChangePaymentSubscriptionInput!) { changePaymentSubscription(input: $i)"
        " { subscription { id } } }",
        {"i": {"id": made["id"], "price": "P-OTHER"}}, owner.token,
    )  # fmt: skip
    assert error_codes(change) == ["BAD_USER_INPUT"]
    cancel = await gql(
        gateway.client,
        "mutation($i: CancelPaymentSubscriptionInput!) { cancelPaymentSubscription(input: $i)"
        " { subscription { status } } }",
        {"i": {"id": made["id"]}}, owner.token,
    )  # fmt: skip
    assert cancel["data"]["cancelPaymentSubscription"]["subscription"]["status"] == "canceled"

    async def cancelled_hook() -> bool:
        rows = await WebhookInbox.filter(
            provider="paypal", event_type="BILLING.SUBSCRIPTION.CANCELLED", status="processed"
        )
        return bool(rows)

    await eventually(cancelled_hook, "PayPal's cancellation event processed")
    listed = await gql(gateway.client, SUBSCRIPTIONS, token=owner.token)
    assert [e["node"]["status"] for e in listed["data"]["paymentSubscriptions"]["edges"]] == [
        "canceled"
    ]


async def test_paypal_subscription_bad_input(gateway: Gateway):
    owner = await register(gateway.client)
    for data in ({"provider": "PAYPAL", "price": "price_switchboard_pro"},
                 {"provider": "PAYPAL", "price": "P-SWITCHBOARD-PRO",
                  "paymentMethod": "pm_card_visa"},
                 {"provider": "PAYPAL", "price": "P-SWITCHBOARD-PRO",
                  "returnUrl": "javascript:alert(1)"},
                 {"provider": "PAYPAL", "price": "P-NO-SUCH-PLAN"}):  # fmt: skip
        body = await gql(gateway.client, SUBSCRIBE, {"i": data}, owner.token)
        assert error_codes(body) == ["BAD_USER_INPUT"], (data, body)

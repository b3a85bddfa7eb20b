"""One `idempotencyKey`, one payment, one charge: retried, racing in one process, racing on
two gateway processes (PostgreSQL) against one Stripe sandbox; the same key with other
input is CONFLICT; a vendor outage leaves a payment a retry completes without a second
charge. Also roles, another organization's ids, and input a payment cannot take."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from models.payments import Payment
from providers.sandbox.stripe import StripeSandbox
from schema.relay import decode_id
from tests.conftest import RUN_ID, free_port, gql, register, running_server
from tests.credentials.test_credentials import member_token
from tests.payments.conftest import CANCEL, CONFIRM, CREATE, PAYMENT, REFUND, Gateway
from tests.processes import process_env, start_server

LIST = "{ payments(first: 50) { edges { node { id status } } } }"


def confirmed(key: str, **more: Any) -> dict[str, Any]:
    return {"i": {"amount": "42.00", "currency": "USD", "paymentMethod": "pm_card_visa",
                  "confirm": True, "idempotencyKey": key, **more}}  # fmt: skip


def created_at_vendor(sandbox: StripeSandbox) -> list[dict[str, Any]]:
    return [
        o for a in sandbox.accounts.values() for o in a.objects.values()
        if o["object"] == "payment_intent"
    ]  # fmt: skip


async def test_the_same_key_twice_and_racing_is_one_payment(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    first = await gql(gateway.client, CREATE, confirmed("order-1"), owner.token)
    again = await gql(gateway.client, CREATE, confirmed("order-1"), owner.token)
    assert first["data"] == again["data"]
    racing = await asyncio.gather(
        *(gql(gateway.client, CREATE, confirmed("order-2"), owner.token) for _ in range(8))
    )
    ids = {r["data"]["createPaymentIntent"]["payment"]["id"] for r in racing}
    assert len(ids) == 1, racing
    assert {r["data"]["createPaymentIntent"]["payment"]["status"] for r in racing} == {"SUCCEEDED"}
    tenant = decode_id(owner.org_id, "Organization")
    assert await Payment.filter(tenant_id=tenant).count() == 2
    assert len(created_at_vendor(gateway.stripe)) == 2
    assert sum(a.charges_made for a in gateway.stripe.accounts.values()) == 2
    # The same key with other input is refused, naming the payment it belongs to.
    other = await gql(gateway.client, CREATE, confirmed("order-1", amount="43.00"), owner.token)
    assert other["errors"][0]["extensions"]["code"] == "CONFLICT"
    assert other["errors"][0]["extensions"]["paymentId"] in ids | {
        first["data"]["createPaymentIntent"]["payment"]["id"]
    }
    # Keys are per organization: another one's same key is its own payment.
    stranger = await register(gateway.client)
    theirs = await gql(gateway.client, CREATE, confirmed("order-1"), stranger.token)
    assert (
        theirs["data"]["createPaymentIntent"]["payment"]["id"]
        != (first["data"]["createPaymentIntent"]["payment"]["id"])
    )


async def test_an_outage_then_a_retry_charges_once(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    faults = {"status": 503, "count": -1, "path": "/v1/payment_intents"}
    await gateway.client.post("/sandbox/stripe/_sandbox/faults", json=faults)
    try:
        down = await gql(gateway.client, CREATE, confirmed("outage-1"), owner.token)
    finally:
        await gateway.client.delete("/sandbox/stripe/_sandbox/faults")
    assert down["errors"][0]["extensions"]["code"] == "UPSTREAM_UNAVAILABLE"
    assert down["errors"][0]["extensions"]["provider"] == "stripe"
    up = await gql(gateway.client, CREATE, confirmed("outage-1"), owner.token)
    assert up["data"]["createPaymentIntent"]["payment"]["status"] == "SUCCEEDED"
    tenant = decode_id(owner.org_id, "Organization")
    assert await Payment.filter(tenant_id=tenant).count() == 1
    assert sum(a.charges_made for a in gateway.stripe.accounts.values()) == 1


async def test_two_gateway_processes_racing_one_key_charge_once(
    store: Any, redis_url: str, tmp_path: Path
) -> None:
    if store.kind != "postgres":
        pytest.skip("several gateway processes share PostgreSQL, not a SQLite file")
    sandbox = StripeSandbox()
    async with running_server(sandbox) as stripe_url:
        env = process_env(
            store.url, redis_url=redis_url, redis_key_prefix=f"sbtest-{RUN_ID}",
            run_worker="false", stripe_secret_key="sk_test_shared_account",
            stripe_base_url=stripe_url,
        )  # fmt: skip
        ports = [free_port(), free_port()]
        servers = [await start_server(env, tmp_path / f"s{i}.log", p) for i, p in enumerate(ports)]
        try:
            one, two = (httpx.AsyncClient(base_url=f"http://127.0.0.1:{p}") for p in ports)
            async with one, two:
                owner = await register(one)
                for round_ in range(3):
                    key = f"two-procs-{round_}"
                    answers = await asyncio.gather(
                        *(gql(c, CREATE, confirmed(key), owner.token) for c in (one, two) * 3)
                    )
                    assert all("errors" not in a for a in answers), answers
                    got = {a["data"]["createPaymentIntent"]["payment"]["id"] for a in answers}
                    assert len(got) == 1, answers
        finally:
            for server in servers:
                await server.stop()
    assert len(created_at_vendor(sandbox)) == 3
    assert sum(a.charges_made for a in sandbox.accounts.values()) == 3


async def test_roles(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    settings = gateway.app.state.services.settings
    tokens = {role: (await member_token(settings, owner, role))[0]
              for role in ("MANAGER", "ACCOUNTING", "SUPPORT", "READ_ONLY")}  # fmt: skip
    made = await gql(gateway.client, CREATE, confirmed("by-manager"), tokens["MANAGER"])
    assert "errors" not in made, made
    gid = made["data"]["createPaymentIntent"]["payment"]["id"]
    for role in ("SUPPORT", "READ_ONLY"):
        refused = await gql(gateway.client, CREATE, confirmed(f"by-{role}"), tokens[role])
        assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN", role
    for role, allowed in (("MANAGER", False), ("ACCOUNTING", True), ("SUPPORT", False),
                          ("READ_ONLY", False)):  # fmt: skip
        listed = await gql(gateway.client, LIST, token=tokens[role])
        read = await gql(gateway.client, PAYMENT, {"id": gid}, tokens[role])
        refund = await gql(
            gateway.client, REFUND, {"i": {"id": gid, "amount": "1.00"}}, tokens[role]
        )
        if allowed:
            assert "errors" not in listed and "errors" not in read, role
            assert "errors" not in refund, refund
        else:
            for body in (listed, read, refund):
                assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN", (role, body)
    assert await Payment.filter(idempotency_key__startswith="by-").count() == 1


async def test_another_organizations_payment_is_not_found(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    stranger = await register(gateway.client)
    gid = (await gql(gateway.client, CREATE, confirmed("mine"), owner.token))["data"][
        "createPaymentIntent"]["payment"]["id"]  # fmt: skip
    for query, variables in (
        (PAYMENT, {"id": gid}),
        (REFUND, {"i": {"id": gid, "amount": "NaN"}}),
        (CONFIRM, {"i": {"id": gid, "paymentMethod": "bad method!"}}),
        (CANCEL, {"i": {"id": gid}}),
        ("query($id: ID!) { node(id: $id) { id } }", {"id": gid}),
    ):
        body = await gql(gateway.client, query, variables, stranger.token)
        if "node" in query:
            assert body["data"]["node"] is None
        else:
            assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND", body
    listed = await gql(gateway.client, LIST, token=stranger.token)
    assert listed["data"]["payments"]["edges"] == []
    assert (await Payment.get(id=decode_id(gid, "Payment"))).status == "SUCCEEDED"


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"amount": "0"}, "amount"),
        ({"amount": "-5"}, "amount"),
        ({"amount": "1.001"}, "amount"),  # EUR has two places
        ({"amount": "1.5", "currency": "JPY"}, "amount"),  # JPY has none
        ({"amount": "1.234", "currency": "KWD"}, "amount"),  # Stripe: steps of 0.010
        ({"amount": "1" + "0" * 30}, "amount"),
        ({"currency": "XYZ"}, "currency"),
        ({"currency": "€"}, "currency"),
        ({"idempotencyKey": "k" * 256}, "idempotencyKey"),
        ({"idempotencyKey": "has space"}, "idempotencyKey"),
        ({"description": "x" * 5000}, "description"),
        ({"description": "nul\u0000inside"}, "description"),
        ({"paymentMethod": "pm_card_visa'; drop"}, "paymentMethod"),
        ({"confirm": True}, "paymentMethod"),
        ({"returnUrl": "javascript:alert(1)"}, "returnUrl"),
    ],
)
async def test_input_a_payment_cannot_take(
    gateway: Gateway, values: dict[str, Any], field: str
) -> None:
    owner = await register(gateway.client)
    body = await gateway.create(owner, **values)
    [error] = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT", body
    details = error["extensions"].get("details", {})
    assert any(key.split(".")[-1] == field for key in details), body
    tenant = decode_id(owner.org_id, "Organization")
    assert not await Payment.filter(tenant_id=tenant).exists()


async def test_money_in_zero_and_three_decimal_currencies(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    for amount, currency, minor, shown in (
        ("1234", "JPY", 1234, "1234"),
        ("12.5", "EUR", 1250, "12.50"),
        ("3.140", "BHD", 3140, "3.140"),
        ("7", "KWD", 7000, "7.000"),
    ):
        body = await gateway.create(owner, amount=amount, currency=currency)
        assert "errors" not in body, body
        payment = body["data"]["createPaymentIntent"]["payment"]
        assert payment["amount"] == shown and Decimal(payment["amount"]) == Decimal(amount)
        row = await Payment.get(id=decode_id(payment["id"], "Payment"))
        assert row.amount_minor == minor
        intent = next(
            o for o in created_at_vendor(gateway.stripe) if o["id"] == payment["vendorId"]
        )
        assert intent["amount"] == minor and intent["currency"] == currency.lower()

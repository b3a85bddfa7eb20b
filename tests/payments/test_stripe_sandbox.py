"""The Stripe sandbox as the official `stripe` library sees it (its own aiohttp client,
nothing of ours in between), and the gateway's client over the provider layer: retries
with the same Idempotency-Key, the breaker, error mapping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import stripe

from providers import stripe as stripe_client
from providers.errors import CircuitOpen, ProviderError
from providers.registry import ProviderRegistry
from providers.sandbox.stripe import StripeSandbox
from tests.conftest import running_server


@pytest.fixture
async def sandbox() -> AsyncIterator[tuple[StripeSandbox, str]]:
    app = StripeSandbox()
    async with running_server(app) as url:
        yield app, url


@pytest.fixture
async def sdk(sandbox: tuple[StripeSandbox, str]) -> AsyncIterator[stripe.StripeClient]:
    http = stripe.AIOHTTPClient()
    client = stripe.StripeClient(
        "sk_test_library", base_addresses={"api": sandbox[1]}, http_client=http,
        max_network_retries=0,
    )  # fmt: skip
    yield client
    await http.close_async()


async def test_the_library_creates_confirms_lists_and_expands(sdk: stripe.StripeClient) -> None:
    customer = await sdk.v1.customers.create_async(
        {"email": "a@example.com", "metadata": {"k": "v"}}
    )
    assert customer.id.startswith("cus_") and customer.metadata["k"] == "v"
    made = []
    for amount in (100, 200, 300):
        intent = await sdk.v1.payment_intents.create_async(
            {"amount": amount, "currency": "usd", "customer": customer.id,
             "payment_method_types": ["card"]}
        )  # fmt: skip
        made.append(intent.id)
    confirmed = await sdk.v1.payment_intents.confirm_async(
        made[0], {"payment_method": "pm_card_visa"}
    )
    assert confirmed.status == "succeeded" and confirmed.amount_received == 100
    page = await sdk.v1.payment_intents.list_async({"limit": 2, "expand": ["data.customer"]})
    assert len(page.data) == 2 and page.has_more
    assert [i.id for i in page.data] == made[::-1][:2]  # newest first
    seen = [i.id async for i in page.auto_paging_iter()]
    assert seen == made[::-1]
    got = await sdk.v1.payment_intents.retrieve_async(made[0], {"expand": ["customer"]})
    assert got.customer.email == "a@example.com"


async def test_errors_are_stripes_own(sdk: stripe.StripeClient) -> None:
    with pytest.raises(stripe.CardError) as declined:
        await sdk.v1.payment_intents.create_async(
            {"amount": 500, "currency": "eur", "confirm": True,
             "payment_method": "pm_card_visa_chargeDeclinedInsufficientFunds"}
        )  # fmt: skip
    assert declined.value.code == "card_declined"
    assert declined.value.json_body["error"]["decline_code"] == "insufficient_funds"
    assert declined.value.http_status == 402
    with pytest.raises(stripe.InvalidRequestError) as missing:
        await sdk.v1.payment_intents.retrieve_async("pi_does_not_exist")
    assert missing.value.code == "resource_missing" and missing.value.http_status == 404
    with pytest.raises(stripe.InvalidRequestError):
        await sdk.v1.payment_intents.create_async({"amount": 5, "currency": "kwd"})
    http = stripe.AIOHTTPClient()
    bad_key = stripe.StripeClient(
        "sk_invalid_key", base_addresses={"api": sdk._requestor.base_addresses["api"]},
        http_client=http,
    )  # fmt: skip
    with pytest.raises(stripe.AuthenticationError):
        await bad_key.v1.balance.retrieve_async()
    await http.close_async()


async def test_idempotency_key_replays_and_refuses_other_bodies(
    sdk: stripe.StripeClient, sandbox: tuple[StripeSandbox, str]
) -> None:
    params: Any = {"amount": 1000, "currency": "usd"}
    first = await sdk.v1.payment_intents.create_async(params, {"idempotency_key": "same-1"})
    second = await sdk.v1.payment_intents.create_async(params, {"idempotency_key": "same-1"})
    assert first.id == second.id
    assert second.last_response.headers.get("idempotent-replayed") == "true"
    with pytest.raises(stripe.IdempotencyError) as other:
        await sdk.v1.payment_intents.create_async(
            {"amount": 999, "currency": "usd"}, {"idempotency_key": "same-1"}
        )
    assert other.value.http_status == 400
    intents = [o for o in next(iter(sandbox[0].accounts.values())).objects.values()
               if o["object"] == "payment_intent"]  # fmt: skip
    assert len(intents) == 1


async def test_the_gateway_client_retries_with_the_same_key_and_opens_the_breaker(
    sandbox: tuple[StripeSandbox, str],
) -> None:
    app, url = sandbox
    registry = ProviderRegistry()
    client = registry.stripe().client("sk_test_gateway", base_url=url)
    async with httpx.AsyncClient(base_url=url) as control:
        await control.post("/_sandbox/faults", json={"status": 503, "count": 2})
        intent = await client.create_payment_intent(
            amount=700, currency="EUR", idempotency_key="sb-pay-1-create",
            payment_method="pm_card_visa", confirm=True,
        )  # fmt: skip
        assert intent.status == "succeeded"
        sent = (await control.get("/_sandbox/requests")).json()["requests"]
        assert [r["status"] for r in sent] == [503, 503, 200]
        assert {r["headers"]["idempotency-key"] for r in sent} == {"sb-pay-1-create"}
        assert app.accounts and sum(a.charges_made for a in app.accounts.values()) == 1
        # A refusal of the caller's data is the caller's: no retry, the breaker unmoved.
        with pytest.raises(ProviderError) as refused:
            await client.create_payment_intent(amount=5, currency="KWD", idempotency_key="k2")
        assert refused.value.status == 400 and refused.value.is_caller_error
        # The vendor failing over and over opens the provider's breaker.
        await control.post("/_sandbox/faults", json={"status": 500, "count": -1})
        errors: list[ProviderError] = []
        for n in range(8):
            try:
                await client.retrieve_payment_intent(intent.id)
            except ProviderError as err:
                errors.append(err)
        assert any(isinstance(e, CircuitOpen) for e in errors), errors
        await control.delete("/_sandbox/faults")
    await registry.aclose()


def test_operation_names() -> None:
    op = stripe_client.operation_of
    assert op("post", "http://x/v1/payment_intents") == "payment_intents.create"
    assert op("post", "http://x/v1/payment_intents/pi_123/confirm") == "payment_intents.confirm"
    assert op("get", "http://x/v1/payment_intents/pi_123?expand[]=x") == "payment_intents.retrieve"
    assert op("get", "http://x/v1/refunds?limit=3") == "refunds.list"

"""Payments fixtures: the gateway on a real port with its Stripe sandbox calling back to
`/webhooks/stripe` (signed with STRIPE_WEBHOOK_SECRET), and a worker."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from models.jobs import Job, JobStatus
from tests.conftest import Account, free_port, gql, make_settings, running_server

WEBHOOK_SECRET = "whsec_test_payments_0123456789abcdef"

FIELDS = """id status amount amountRefunded currency vendorId clientSecret nextActionUrl
  declineCode failureCode idempotencyKey refunds { id status amount currency vendorId }"""
CREATE = (
    "mutation($i: CreatePaymentIntentInput!) { createPaymentIntent(input: $i) { payment { "
    + FIELDS
    + " } } }"
)
CONFIRM = (
    "mutation($i: ConfirmPaymentInput!) { confirmPayment(input: $i) { payment { "
    + FIELDS
    + " } } }"
)
CANCEL = (
    "mutation($i: CancelPaymentInput!) { cancelPayment(input: $i) { payment { " + FIELDS + " } } }"
)
REFUND = (
    "mutation($i: RefundPaymentInput!) { refundPayment(input: $i) { payment { "
    + FIELDS
    + " } refund { id status amount currency vendorId } } }"
)
PAYMENT = "query($id: ID!) { payment(id: $id) { " + FIELDS + " } }"
CUSTOMER = (
    "mutation($i: CreatePaymentCustomerInput!) { createPaymentCustomer(input: $i) { "
    "customer { id vendorId email name } } }"
)


@dataclass
class Gateway:
    client: httpx.AsyncClient
    url: str
    app: Any

    @property
    def stripe(self) -> Any:
        return self.app.state.services.sandboxes["stripe"]

    async def create(self, account: Account, **values: Any) -> dict[str, Any]:
        data = {"amount": "12.34", "currency": "EUR", **values}
        return await gql(self.client, CREATE, {"i": data}, account.token)

    async def payment(self, account: Account, gid: str) -> dict[str, Any]:
        body = await gql(self.client, PAYMENT, {"id": gid}, account.token)
        assert "errors" not in body, body
        return body["data"]["payment"]


@pytest.fixture(autouse=True)
async def _no_leftover_jobs(store: Any) -> AsyncIterator[None]:
    yield
    await Job.filter(status__in=[JobStatus.QUEUED.value, JobStatus.FAILED.value]).delete()


@contextlib.asynccontextmanager
async def serving(store: Any, worker: Any, **extra: Any) -> AsyncIterator[Gateway]:
    port = free_port()
    overrides = {
        "database_url": store.url,
        "public_url": f"http://127.0.0.1:{port}",
        "sandbox_enabled": True,
        "sandbox_webhooks": True,
        "stripe_webhook_secret": WEBHOOK_SECRET,
        **extra,
    }
    app = create_app(make_settings(**overrides), configure_logs=False)
    async with running_server(app, port) as url:
        await worker(**overrides)
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            yield Gateway(client, url, app)


@pytest.fixture
async def gateway(store: Any, worker: Any) -> AsyncIterator[Gateway]:
    async with serving(store, worker) as served:
        yield served


def money(value: str) -> Decimal:
    return Decimal(value)

"""A Stripe webhook whose worker is killed mid-processing (PostgreSQL, real `switchboard
worker` processes): the payment's row is held locked by the test, so the first worker's
handler waits inside its transaction; SIGKILL leaves nothing applied; once the lock is
released a second worker takes the job after its lease and applies the event once."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import httpx
import pytest
import stripe
from strawberry import relay
from tortoise import connections
from tortoise.transactions import in_transaction

from gateway.app import create_app
from models.events import OutboxEvent
from models.jobs import Job, JobStatus
from models.payments import Payment
from models.webhooks import WebhookInbox
from resolvers.webhooks_in import PROCESS_JOB
from schema.relay import decode_id
from tests.conftest import Store, eventually, make_settings, register
from tests.payments.conftest import WEBHOOK_SECRET
from tests.processes import process_env, start_worker


async def test_a_killed_worker_mid_webhook_applies_it_once_after_restart(
    store: Store, tmp_path: Path
) -> None:
    if store.kind != "postgres":
        pytest.skip("multi-process workers need PostgreSQL (SQLite is one process)")
    settings = make_settings(
        database_url=store.url, stripe_webhook_secret=WEBHOOK_SECRET, run_worker=False
    )
    app = create_app(settings, configure_logs=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        owner = await register(client)
        tenant_id = decode_id(owner.org_id, "Organization")
        payment = await Payment.create(
            tenant_id=tenant_id, provider="stripe", amount_minor=2500, currency="EUR",
            vendor_id=f"pi_kill{uuid.uuid4().hex[:16]}", request_hash="-",
        )  # fmt: skip
        event = {
            "id": f"evt_{uuid.uuid4().hex[:24]}", "object": "event",
            "type": "payment_intent.succeeded", "created": int(time.time()),
            "data": {"object": {
                "id": payment.vendor_id, "object": "payment_intent", "status": "succeeded",
                "amount": 2500, "currency": "eur", "amount_received": 2500,
                "metadata": {"switchboard_payment": str(payment.id),
                             "switchboard_tenant": str(tenant_id)},
            }},
        }  # fmt: skip
        raw = json.dumps(event)
        signature = stripe.WebhookSignature.generate_signature_header(raw, WEBHOOK_SECRET)
        env = process_env(store.url, job_lease_seconds=2, job_poll_seconds=0.1)
        locked, release = asyncio.Event(), asyncio.Event()

        async def hold_the_row() -> None:  # its own task: its own transaction context
            async with in_transaction() as lock:
                await Payment.filter(id=payment.id).using_db(lock).select_for_update().first()
                locked.set()
                await release.wait()

        holder = asyncio.create_task(hold_the_row())
        await locked.wait()
        answer = await client.post(
            "/webhooks/stripe", content=raw, headers={"Stripe-Signature": signature}
        )
        assert answer.status_code == 200, answer.text
        first = start_worker(env, tmp_path / "w1.log")

        async def running() -> bool:
            job = await Job.filter(kind=PROCESS_JOB).order_by("-id").first()
            return bool(job and job.status == JobStatus.RUNNING.value)

        try:
            await eventually(running, "the first worker to start the webhook's job")

            async def waiting() -> bool:  # its handler is blocked on the row we hold
                conn = connections.get("default")
                _, rows = await conn.execute_query(
                    "SELECT count(*) AS n FROM pg_locks WHERE NOT granted"
                )
                return bool(rows and rows[0]["n"])

            await eventually(waiting, "the first worker's handler to wait on the lock")
        finally:
            first.kill()  # SIGKILL while its handler waits on our lock
            release.set()
            await holder
        inbox = await WebhookInbox.get(provider="stripe", event_id=event["id"])
        assert inbox.status == "received"
        assert (await Payment.get(id=payment.id)).status == "REQUIRES_PAYMENT_METHOD"
        second = start_worker(env, tmp_path / "w2.log")
        try:

            async def applied() -> bool:
                row = await WebhookInbox.get(id=inbox.id)
                return row.status == "processed"

            await eventually(applied, f"the second worker applies it:\n{second.output()}")
        finally:
            assert await second.stop() == 0, second.output()
    row = await Payment.get(id=payment.id)
    assert row.status == "SUCCEEDED"
    gid = str(relay.GlobalID("Payment", str(payment.id)))
    succeeded = [
        e for e in await OutboxEvent.filter(type="payment.succeeded")
        if e.data.get("payment_id") == gid
    ]  # fmt: skip
    assert len(succeeded) == 1

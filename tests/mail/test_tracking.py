"""Delivery tracking end to end: the gateway's own Resend and SendGrid sandboxes take the
mail and post their signed delivery events back to the gateway's webhook routes (as the
vendors do); statuses move forward only, bounces and complaints suppress the address;
events signed by the test with the vendors' own libraries, out of order or forged."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from svix.webhooks import Webhook as SvixWebhook

from gateway.app import create_app
from models.mail import OutboundEmail
from models.webhooks import WebhookInbox
from schema.relay import decode_id
from tests.conftest import (
    Account,
    error_codes,
    eventually,
    free_port,
    gql,
    make_settings,
    register,
    running_server,
)
from tests.webhooks_in.test_vendor_webhooks import RESEND_SECRET

SEND = """mutation($i: SendEmailInput!) { sendEmail(input: $i) { email { id } } }"""
STATUS = "query($id: ID!) { node(id: $id) { ... on SentEmail { status provider lastError } } }"
SUPPRESSIONS = "query { emailSuppressions(first: 50) { edges { node { address reason } } } }"
SET_CREDENTIAL = """mutation($i: SetCredentialInput!) {
  setTenantCredential(input: $i) { credential { id } } }"""


@pytest.fixture
async def gateway(store: Any, worker: Any) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """No mail provider configured: the sandboxes take the mail and call back."""
    port = free_port()
    overrides = {
        "database_url": store.url,
        "public_url": f"http://127.0.0.1:{port}",
        "sandbox_enabled": True,
        "sandbox_webhooks": True,
        "webhook_system_secrets": {"resend": RESEND_SECRET},
    }
    app = create_app(make_settings(**overrides), configure_logs=False)
    sandboxes = app.state.services.sandboxes
    sandboxes["resend"].callbacks.delay = sandboxes["sendgrid"].callbacks.delay = 0
    async with running_server(app, port) as url:
        await worker(**overrides)
        async with httpx.AsyncClient(base_url=url) as client:
            yield client, url


async def send(client: httpx.AsyncClient, owner: Account, to: str) -> str:
    body = await gql(
        client, SEND, {"i": {"to": [{"email": to}], "subject": "Hi", "text": "Hello"}}, owner.token
    )
    assert "errors" not in body, body
    return str(body["data"]["sendEmail"]["email"]["id"])


def status_is(client: httpx.AsyncClient, owner: Account, gid: str, wanted: str) -> Any:
    async def check() -> dict[str, Any] | None:
        node = (await gql(client, STATUS, {"id": gid}, owner.token))["data"]["node"]
        return node if node["status"] == wanted else None

    return check


async def suppressed(client: httpx.AsyncClient, owner: Account) -> dict[str, str]:
    body = await gql(client, SUPPRESSIONS, token=owner.token)
    return {
        e["node"]["address"]: e["node"]["reason"]
        for e in body["data"]["emailSuppressions"]["edges"]
    }


async def test_resend_sandbox_events_move_the_message_to_delivered(gateway: Any) -> None:
    client, _url = gateway
    owner = await register(client)
    gid = await send(client, owner, "ada@example.com")
    node = await eventually(status_is(client, owner, gid, "DELIVERED"), "delivered")
    assert node["provider"] == "resend-sandbox"


async def test_a_hard_bounce_and_a_complaint_suppress_the_address(gateway: Any) -> None:
    client, _url = gateway
    owner = await register(client)
    bounced = await send(client, owner, "bounced@resend.dev")
    complained = await send(client, owner, "complained@resend.dev")
    await eventually(status_is(client, owner, bounced, "BOUNCED"), "bounced")
    await eventually(status_is(client, owner, complained, "COMPLAINED"), "complained")
    assert await suppressed(client, owner) == {
        "bounced@resend.dev": "BOUNCED",
        "complained@resend.dev": "COMPLAINED",
    }
    again = await gql(
        client, SEND, {"i": {"to": [{"email": "bounced@resend.dev"}], "subject": "x", "text": "y"}},
        owner.token,
    )  # fmt: skip
    assert error_codes(again) == ["EMAIL_SUPPRESSED"]
    # Another organization's list is untouched.
    other = await register(client)
    assert await suppressed(client, other) == {}


async def test_a_tenants_sendgrid_key_and_its_event_webhook(gateway: Any) -> None:
    client, url = gateway
    owner = await register(client)
    saved = await gql(
        client,
        SET_CREDENTIAL,
        {"i": {"provider": "SENDGRID", "secrets": {
            "apiKey": "SG.tenant-key-" + "x" * 30, "baseUrl": f"{url}/sandbox/sendgrid",
            "fromEmail": "news@acme.test"}}},
        owner.token,
    )  # fmt: skip
    assert "errors" not in saved, saved
    ok = await send(client, owner, "ada@example.com")
    bounced = await send(client, owner, "bounced@sink.sendgrid.net")
    node = await eventually(status_is(client, owner, ok, "DELIVERED"), "delivered via SendGrid")
    assert node["provider"] == "sendgrid-sandbox"
    await eventually(status_is(client, owner, bounced, "BOUNCED"), "bounced via SendGrid")
    assert (await suppressed(client, owner)) == {"bounced@sink.sendgrid.net": "BOUNCED"}


async def test_events_out_of_order_never_move_a_message_back(gateway: Any) -> None:
    client, _url = gateway
    owner = await register(client)
    gid = await send(client, owner, "ada@example.com")
    await eventually(status_is(client, owner, gid, "DELIVERED"), "delivered")
    row = await OutboundEmail.get(id=decode_id(gid, "SentEmail"))

    async def post(event_type: str) -> httpx.Response:
        data = {"email_id": row.provider_message_id, "to": ["ada@example.com"]}
        payload = {
            "type": event_type,
            "created_at": dt.datetime.now(dt.UTC).isoformat(),
            "data": data,
        }
        msg_id, now, body = f"msg_{uuid.uuid4().hex}", dt.datetime.now(dt.UTC), json.dumps(payload)
        headers = {
            "svix-id": msg_id,
            "svix-timestamp": str(int(now.timestamp())),
            "svix-signature": SvixWebhook(RESEND_SECRET).sign(msg_id, now, body),
            "content-type": "application/json",
        }
        return await client.post("/webhooks/resend", content=body, headers=headers)

    assert (await post("email.opened")).status_code == 200
    await eventually(status_is(client, owner, gid, "OPENED"), "opened")
    for late in ("email.sent", "email.delivery_delayed", "email.delivered"):
        assert (await post(late)).status_code == 200

    async def all_processed() -> bool:
        rows = await WebhookInbox.filter(provider="resend", status__in=["received"]).count()
        return rows == 0

    await eventually(all_processed, "the late events are processed")
    assert (await gql(client, STATUS, {"id": gid}, owner.token))["data"]["node"][
        "status"
    ] == "OPENED"

    # A forged event (signed with another secret) is refused and changes nothing.
    forged_secret = "whsec_" + "A" * 43 + "="
    payload = json.dumps({"type": "email.bounced", "data": {"email_id": row.provider_message_id}})
    now = dt.datetime.now(dt.UTC)
    forged = await client.post(
        "/webhooks/resend",
        content=payload,
        headers={
            "svix-id": "msg_forged",
            "svix-timestamp": str(int(now.timestamp())),
            "svix-signature": SvixWebhook(forged_secret).sign("msg_forged", now, payload),
        },
    )
    assert forged.status_code == 401
    assert not await WebhookInbox.filter(event_id="msg_forged").exists()
    assert await suppressed(client, owner) == {}

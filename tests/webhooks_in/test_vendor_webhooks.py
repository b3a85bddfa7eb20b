"""Resend's and SendGrid's webhooks at the gateway's route, on SQLite and PostgreSQL.

End to end: the gateway's own mail sandboxes, served with the gateway on a real port,
post their signed delivery events to its `/webhooks/resend` and `/webhooks/sendgrid`, and
they are stored. Then the refusals: requests signed the vendors' way (Svix for Resend,
`cryptography` for SendGrid) with the wrong key, stale, malformed or oversized are 401 and
store nothing; and a tenant's SendGrid source takes SendGrid's public key.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import time
import uuid
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from svix.webhooks import Webhook as SvixWebhook

from gateway.app import create_app
from kit.settings import Settings
from models.webhooks import WebhookInbox
from tests.conftest import (
    Store,
    error_codes,
    eventually,
    free_port,
    gql,
    make_settings,
    register,
    running_server,
)

RESEND_SECRET = "whsec_" + base64.b64encode(b"resend-system-secret-for-tests!!").decode()
SG_KEY = ec.generate_private_key(ec.SECP256R1())
SG_PUBLIC = base64.b64encode(
    SG_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()
SG_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SG_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"


@pytest.fixture
def settings(store: Store) -> Settings:
    return make_settings(
        database_url=store.url,
        sandbox_enabled=True,
        sandbox_webhooks=True,
        webhook_system_secrets={"resend": RESEND_SECRET, "sendgrid": SG_PUBLIC},
    )


def sendgrid_request(
    events: list[dict[str, Any]],
    *,
    key: ec.EllipticCurvePrivateKey = SG_KEY,
    at: int | None = None,
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(events).encode()
    ts = str(int(time.time()) if at is None else at)
    der = key.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))
    headers = {
        SG_SIGNATURE: base64.b64encode(der).decode(),
        SG_TIMESTAMP: ts,
        "content-type": "application/json",
    }
    return body, headers


def resend_request(payload: dict[str, Any], secret: str = RESEND_SECRET) -> tuple[bytes, dict]:
    msg_id = f"msg_{uuid.uuid4().hex}"
    now = dt.datetime.now(dt.UTC)
    body = json.dumps(payload)
    return body.encode(), {
        "svix-id": msg_id,
        "svix-timestamp": str(int(now.timestamp())),
        "svix-signature": SvixWebhook(secret).sign(msg_id, now, body),
        "content-type": "application/json",
    }


def events(marker: str) -> list[dict[str, Any]]:
    return [
        {
            "email": "ada@example.com",
            "timestamp": int(time.time()),
            "event": "delivered",
            "sg_event_id": uuid.uuid4().hex,
            "sg_message_id": f"{marker}.filterdrecv-1-0.0",
        }
    ]


# End to end: the sandboxes' own callbacks -----------------------------------------------


async def test_sandbox_delivery_events_arrive_at_the_gateway_and_are_stored(store: Store) -> None:
    port = free_port()
    settings = make_settings(
        database_url=store.url,
        public_url=f"http://127.0.0.1:{port}",
        sandbox_enabled=True,
        sandbox_webhooks=True,
    )
    app = create_app(settings, configure_logs=False)
    sandboxes = app.state.services.sandboxes
    sandboxes["resend"].callbacks.delay = sandboxes["sendgrid"].callbacks.delay = 0
    async with running_server(app, port) as url, httpx.AsyncClient(base_url=url) as c:
        sent = await c.post(
            "/sandbox/resend/emails",
            json={"from": "a@acme.test", "to": "bounced@resend.dev", "subject": "s", "text": "t"},
            headers={"Authorization": "Bearer re_test"},
        )
        email_id = sent.json()["id"]
        mailed = await c.post(
            "/sandbox/sendgrid/v3/mail/send",
            json={
                "personalizations": [
                    {"to": [{"email": "opened@sink.sendgrid.net"}], "custom_args": {"mark": "e2e"}}
                ],
                "from": {"email": "a@acme.test"},
                "subject": "s",
                "content": [{"type": "text/plain", "value": "t"}],
            },
            headers={"Authorization": "Bearer SG.test"},
        )
        assert mailed.status_code == 202, mailed.text
        message_id = mailed.headers["X-Message-Id"]
        for sandbox in sandboxes.values():
            await asyncio.wait_for(sandbox.callbacks.drain(), 20)
        posted = (await c.get("/sandbox/sendgrid/_sandbox/webhooks")).json()["webhooks"]
        assert [p["status"] for p in posted] == [200, 200, 200]

    async def resend_rows() -> list[WebhookInbox] | None:
        rows = await WebhookInbox.filter(provider="resend", source_key="system").order_by("id")
        mine = [r for r in rows if r.payload["data"]["email_id"] == email_id]
        return mine if len(mine) == 2 else None

    rows = await eventually(resend_rows, "the Resend sandbox's events")
    assert [r.event_type for r in rows] == ["email.sent", "email.bounced"]
    assert all(r.tenant_id is None and r.event_id.startswith("msg_") for r in rows)

    batches = [
        r
        for r in await WebhookInbox.filter(provider="sendgrid", event_type="batch")
        if r.payload and r.payload[0].get("mark") == "e2e"
        and r.payload[0]["sg_message_id"].startswith(message_id)
    ]  # fmt: skip
    assert sorted(b.payload[0]["event"] for b in batches) == ["delivered", "open", "processed"]
    assert all(b.event_id.startswith("sha256:") for b in batches)


# The system route -------------------------------------------------------------------------


async def test_sendgrid_system_route_accepts_the_configured_and_the_sandbox_key(
    client: httpx.AsyncClient, app: Any
) -> None:
    marker = uuid.uuid4().hex
    body, headers = sendgrid_request(events(marker))
    first = await client.post("/webhooks/sendgrid", content=body, headers=headers)
    assert first.status_code == 200, first.text
    assert first.json()["eventId"].startswith("sha256:")
    again = await client.post("/webhooks/sendgrid", content=body, headers=headers)
    assert again.json()["duplicate"] is True  # SendGrid posting the batch again
    row = await WebhookInbox.get(event_id=first.json()["eventId"])
    assert row.event_type == "batch" and row.payload[0]["sg_message_id"].startswith(marker)
    assert row.headers[SG_TIMESTAMP.lower()] == headers[SG_TIMESTAMP]

    # The gateway's own sandbox signs with its derived key, accepted as well.
    sandbox = app.state.services.sandboxes["sendgrid"]
    body = json.dumps(events(uuid.uuid4().hex)).encode()
    ts = str(int(time.time()))
    der = sandbox.signing_key.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))
    signed = {SG_SIGNATURE: base64.b64encode(der).decode(), SG_TIMESTAMP: ts}
    assert (
        await client.post("/webhooks/sendgrid", content=body, headers=signed)
    ).status_code == 200


async def test_resend_system_route_and_the_sandbox_signs_with_the_system_secret(
    client: httpx.AsyncClient, app: Any
) -> None:
    payload = {"type": "email.delivered", "created_at": "2024-02-22T23:41:12.126Z", "data": {}}
    body, headers = resend_request(payload)
    response = await client.post("/webhooks/resend", content=body, headers=headers)
    assert response.status_code == 200, response.text
    row = await WebhookInbox.get(provider="resend", event_id=headers["svix-id"])
    assert row.event_type == "email.delivered" and row.headers["svix-id"] == headers["svix-id"]
    assert app.state.services.sandboxes["resend"].webhook_secret == RESEND_SECRET
    forged, forged_headers = resend_request(
        payload, "whsec_" + base64.b64encode(b"f" * 32).decode()
    )
    refused = await client.post("/webhooks/resend", content=forged, headers=forged_headers)
    assert refused.status_code == 401
    assert await WebhookInbox.filter(event_id=forged_headers["svix-id"]).count() == 0


def _truncate(headers: dict[str, str]) -> None:
    der = base64.b64decode(headers[SG_SIGNATURE])
    headers[SG_SIGNATURE] = base64.b64encode(der[:20]).decode()


@pytest.mark.parametrize(
    "tamper", ["forged", "stale", "other_body", "bad_base64", "truncated", "huge", "missing"]
)
async def test_sendgrid_refusals_are_401_and_store_nothing(
    client: httpx.AsyncClient, tamper: str
) -> None:
    marker = uuid.uuid4().hex
    key = ec.generate_private_key(ec.SECP256R1()) if tamper == "forged" else SG_KEY
    at = int(time.time()) - 3600 if tamper == "stale" else None
    body, headers = sendgrid_request(events(marker), key=key, at=at)
    if tamper == "other_body":
        body = body.replace(b"delivered", b"spamreport")
    if tamper == "bad_base64":
        headers[SG_SIGNATURE] = "%%%" + headers[SG_SIGNATURE]
    if tamper == "truncated":
        _truncate(headers)
    if tamper == "huge":
        headers[SG_SIGNATURE] = "QUFB" * 2000
    if tamper == "missing":
        del headers[SG_SIGNATURE]
    response = await client.post("/webhooks/sendgrid", content=body, headers=headers)
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "WEBHOOK_SIGNATURE_INVALID"
    stored = await WebhookInbox.filter(provider="sendgrid")
    assert not any(marker in json.dumps(r.payload) for r in stored)


# A tenant's SendGrid source ---------------------------------------------------------------

CREATE_SOURCE = """
mutation($i: CreateWebhookSourceInput!) {
  createWebhookSource(input: $i) { url secret source { id provider } }
}"""


async def test_sendgrid_source_takes_the_public_key(client: httpx.AsyncClient) -> None:
    acct = await register(client)
    missing = await gql(client, CREATE_SOURCE, {"i": {"provider": "sendgrid"}}, token=acct.token)
    assert error_codes(missing) == ["BAD_USER_INPUT"]
    assert "public key" in missing["errors"][0]["extensions"]["details"]["secret"]
    for junk in ("not-a-key-at-all", SG_PUBLIC[:50], "whsec_" + "a" * 44):
        bad = await gql(
            client,
            CREATE_SOURCE,
            {"i": {"provider": "sendgrid", "secret": junk}},
            token=acct.token,
        )
        assert error_codes(bad) == ["BAD_USER_INPUT"], junk
    created = await gql(
        client,
        CREATE_SOURCE,
        {"i": {"provider": "sendgrid", "secret": SG_PUBLIC}},
        token=acct.token,
    )
    data = created["data"]["createWebhookSource"]
    assert data["secret"] is None and data["source"]["provider"] == "sendgrid"
    path = httpx.URL(data["url"]).path

    marker = uuid.uuid4().hex
    body, headers = sendgrid_request(events(marker))
    ok = await client.post(path, content=body, headers=headers)
    assert ok.status_code == 200, ok.text
    row = await WebhookInbox.get(event_id=ok.json()["eventId"], source_key__startswith="src:")
    assert row.tenant_id is not None and row.payload[0]["sg_message_id"].startswith(marker)

    other = ec.generate_private_key(ec.SECP256R1())
    body, headers = sendgrid_request(events(uuid.uuid4().hex), key=other)
    assert (await client.post(path, content=body, headers=headers)).status_code == 401

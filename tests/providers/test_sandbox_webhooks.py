"""The mail sandboxes' delivery webhooks, received by a real HTTP server and verified with
the vendors' own libraries: Svix's for Resend, SendGrid's `EventWebhook` for SendGrid (with
the public key read from the sandbox's `GET /v3/user/webhooks/event/settings/signed`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
from aiohttp import web
from sendgrid.helpers.eventwebhook import EventWebhook
from svix.webhooks import Webhook as SvixWebhook

from providers.sandbox.resend import ResendSandbox
from providers.sandbox.sendgrid import SendGridSandbox
from tests.conftest import running_server

RESEND_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SG_KEY = "SG.test-key.0123456789"


@dataclass
class Receiver:
    url: str
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # answers to give first (then 200)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    box = Receiver("")

    async def hook(request: web.Request) -> web.Response:
        box.received.append((dict(request.headers), await request.read()))
        status = box.statuses.pop(0) if box.statuses else 200
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    box.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield box
    finally:
        await runner.cleanup()


# Resend -------------------------------------------------------------------------------


async def resend_send(to: list[str], receiver: Receiver, **extra: object) -> tuple[str, list]:
    sandbox = ResendSandbox()
    sandbox.configure_webhooks(receiver.url, RESEND_SECRET, delay=0)
    async with running_server(sandbox) as url, httpx.AsyncClient(base_url=url) as c:
        sent = await c.post(
            "/emails",
            json={
                "from": "Acme <hello@acme.test>",
                "to": to,
                "subject": "Hi",
                "html": '<a href="https://acme.test/x">x</a>',
                **extra,
            },
            headers={"Authorization": "Bearer re_test_123"},
        )
        assert sent.status_code == 200, sent.text
        await asyncio.wait_for(sandbox.callbacks.drain(), 10)
        recorded = (await c.get("/_sandbox/webhooks")).json()["webhooks"]
    return sent.json()["id"], recorded


@pytest.mark.parametrize(
    ("to", "types"),
    [
        (["ada@example.com"], ["email.sent", "email.delivered"]),
        (["bounced@resend.dev"], ["email.sent", "email.bounced"]),
        (["complained+x@resend.dev"], ["email.sent", "email.delivered", "email.complained"]),
        (["delayed@resend.dev"], ["email.sent", "email.delivery_delayed", "email.delivered"]),
        (
            ["clicked@resend.dev"],
            ["email.sent", "email.delivered", "email.opened", "email.clicked"],
        ),
    ],
)
async def test_resend_events_verify_with_svix(
    receiver: Receiver, to: list[str], types: list[str]
) -> None:
    email_id, recorded = await resend_send(
        to, receiver, tags=[{"name": "kind", "value": "welcome"}]
    )
    assert [r["status"] for r in recorded] == [200] * len(types)
    verifier = SvixWebhook(RESEND_SECRET)
    events = []
    for headers, body in receiver.received:
        verifier.verify(body, headers)  # raises unless Svix accepts it
        assert headers["Content-Type"] == "application/json"
        events.append(json.loads(body))
    assert [e["type"] for e in events] == types
    for event in events:
        assert event["created_at"].endswith("Z")
        data = event["data"]
        assert data["email_id"] == email_id and data["to"] == to
        assert data["from"] == "Acme <hello@acme.test>" and data["subject"] == "Hi"
        assert data["tags"] == {"kind": "welcome"}
    by_type = {e["type"]: e["data"] for e in events}
    if "email.bounced" in by_type:
        assert by_type["email.bounced"]["bounce"]["type"] == "Permanent"
    if "email.clicked" in by_type:
        assert by_type["email.clicked"]["click"]["link"] == "https://acme.test/x"
    # One svix-id per event.
    assert len({h["svix-id"] for h, _ in receiver.received}) == len(types)


async def test_resend_receiver_failure_is_retried_with_the_same_id(receiver: Receiver) -> None:
    receiver.statuses = [503]
    _, recorded = await resend_send(["ada@example.com"], receiver)
    assert [(r["attempt"], r["status"]) for r in recorded] == [(1, 503), (2, 200), (1, 200)]
    ids = [h["svix-id"] for h, _ in receiver.received]
    assert len(ids) == 3 and ids[0] == ids[1] != ids[2]


async def test_no_webhooks_without_a_receiver_or_for_scheduled_mail(receiver: Receiver) -> None:
    sandbox = ResendSandbox()
    async with running_server(sandbox) as url, httpx.AsyncClient(base_url=url) as c:
        body = {"from": "a@acme.test", "to": "b@example.com", "subject": "s", "text": "t"}
        auth = {"Authorization": "Bearer re_test_123"}
        assert (await c.post("/emails", json=body, headers=auth)).status_code == 200
        sandbox.configure_webhooks(receiver.url, RESEND_SECRET, delay=0)
        later = {**body, "scheduled_at": "2099-01-01T00:00:00Z"}
        assert (await c.post("/emails", json=later, headers=auth)).status_code == 200
        await sandbox.callbacks.drain()
    assert receiver.received == []
    with pytest.raises(ValueError):
        sandbox.configure_webhooks(receiver.url, "whsec_@@@")


# SendGrid -----------------------------------------------------------------------------


async def sendgrid_send(personalizations: list[dict], receiver: Receiver) -> tuple[str, str]:
    sandbox = SendGridSandbox()
    sandbox.configure_webhooks(receiver.url, delay=0)
    auth = {"Authorization": f"Bearer {SG_KEY}"}
    async with running_server(sandbox) as url, httpx.AsyncClient(base_url=url) as c:
        signed = await c.get("/v3/user/webhooks/event/settings/signed", headers=auth)
        public_key = signed.json()["public_key"]
        sent = await c.post(
            "/v3/mail/send",
            json={
                "personalizations": personalizations,
                "from": {"email": "hello@acme.test", "name": "Acme"},
                "subject": "Hi",
                "content": [
                    {"type": "text/plain", "value": "x"},
                    {"type": "text/html", "value": '<a href="https://acme.test/y">y</a>'},
                ],
                "headers": {"Message-ID": "<42@acme.test>"},
                "categories": ["welcome"],
            },
            headers=auth,
        )
        assert sent.status_code == 202, sent.text
        assert sent.content == b""
        await asyncio.wait_for(sandbox.callbacks.drain(), 10)
    return sent.headers["X-Message-Id"], public_key


async def test_sendgrid_batches_verify_with_sendgrids_library(receiver: Receiver) -> None:
    message_id, public_key = await sendgrid_send(
        [
            {
                "to": [{"email": "ada@example.com"}, {"email": "bounced@sink.sendgrid.net"}],
                "cc": [{"email": "clicked+1@sink.sendgrid.net"}],
                "custom_args": {"email_id": "42"},
            }
        ],
        receiver,
    )
    checker = EventWebhook(public_key)
    batches = []
    for headers, body in receiver.received:
        assert checker.verify_signature(
            body.decode(),
            headers["X-Twilio-Email-Event-Webhook-Signature"],
            headers["X-Twilio-Email-Event-Webhook-Timestamp"],
        )
        batches.append(json.loads(body))
    by_email: dict[str, list[str]] = {}
    for batch in batches:
        assert isinstance(batch, list)
        for event in batch:
            by_email.setdefault(event["email"], []).append(event["event"])
            assert event["sg_message_id"].startswith(message_id + ".filter")
            assert event["email_id"] == "42"  # custom_args at the top level
            assert event["category"] == "welcome"
            assert event["smtp-id"] == "<42@acme.test>"
            assert isinstance(event["timestamp"], int) and event["sg_event_id"]
    assert by_email == {
        "ada@example.com": ["processed", "delivered"],
        "bounced@sink.sendgrid.net": ["processed", "bounce"],
        "clicked+1@sink.sendgrid.net": ["processed", "delivered", "open", "click"],
    }
    bounce = next(e for b in batches for e in b if e["event"] == "bounce")
    assert bounce["type"] == "bounce" and bounce["status"].startswith("5.")
    click = next(e for b in batches for e in b if e["event"] == "click")
    assert click["url"] == "https://acme.test/y"


@pytest.mark.parametrize(
    ("address", "events", "extra"),
    [
        ("blocked@sink.sendgrid.net", ["processed", "bounce"], {"type": "blocked"}),
        ("deferred@sink.sendgrid.net", ["processed", "deferred", "delivered"], {}),
        ("dropped@sink.sendgrid.net", ["processed", "dropped"], {"reason": "Bounced Address"}),
        ("spamreport@sink.sendgrid.net", ["processed", "delivered", "spamreport"], {}),
        ("unsubscribed@sink.sendgrid.net", ["processed", "delivered", "unsubscribe"], {}),
    ],
)
async def test_sendgrid_test_recipients(
    receiver: Receiver, address: str, events: list[str], extra: dict
) -> None:
    await sendgrid_send([{"to": [{"email": address}]}], receiver)
    seen = [e for _, body in receiver.received for e in json.loads(body)]
    assert [e["event"] for e in seen] == events
    last = seen[-1] if events[-1] != "delivered" else seen[1]
    for name, value in extra.items():
        assert last[name] == value


async def test_sendgrid_sandbox_mode_sends_no_events(receiver: Receiver) -> None:
    sandbox = SendGridSandbox()
    sandbox.configure_webhooks(receiver.url, delay=0)
    async with running_server(sandbox) as url, httpx.AsyncClient(base_url=url) as c:
        r = await c.post(
            "/v3/mail/send",
            json={
                "personalizations": [{"to": [{"email": "a@example.com"}]}],
                "from": {"email": "hello@acme.test"},
                "subject": "s",
                "content": [{"type": "text/plain", "value": "x"}],
                "mail_settings": {"sandbox_mode": {"enable": True}},
            },
            headers={"Authorization": f"Bearer {SG_KEY}"},
        )
        assert r.status_code == 200 and "X-Message-Id" not in r.headers
        await sandbox.callbacks.drain()
    assert receiver.received == [] and sandbox.messages == {}


async def test_sendgrid_sandbox_errors_and_rate_headers() -> None:
    sandbox = SendGridSandbox()
    async with running_server(sandbox) as url, httpx.AsyncClient(base_url=url) as c:
        r = await c.get("/v3/scopes")
        assert r.status_code == 401
        assert r.json() == {
            "errors": [{"field": None, "message": "authorization required", "help": None}]
        }
        r = await c.get("/v3/scopes", headers={"Authorization": f"Bearer {SG_KEY}"})
        assert "mail.send" in r.json()["scopes"]
        assert int(r.headers["X-RateLimit-Limit"]) > 0 and "X-RateLimit-Reset" in r.headers
        await c.post("/_sandbox/faults", json={"status": 429, "retry_after": 2})
        r = await c.post("/v3/mail/send", json={}, headers={"Authorization": f"Bearer {SG_KEY}"})
        assert r.status_code == 429 and r.headers["Retry-After"] == "2"
        assert r.headers["X-RateLimit-Remaining"] == "0"
        assert r.json()["errors"][0]["message"] == "too many requests"
        r = await c.post(
            "/v3/mail/send",
            content=b"{nope",
            headers={"Authorization": f"Bearer {SG_KEY}", "Content-Type": "application/json"},
        )
        assert r.status_code == 400 and r.json()["errors"][0]["message"] == "Bad Request"

"""Messaging fixtures: the whole gateway on a real port with its Twilio sandbox mounted,
which posts its signed status callbacks and incoming messages back to the gateway's own
`/webhooks/twilio` (as Twilio does), and an in-process worker."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import websockets
from twilio.request_validator import RequestValidator

from gateway.app import create_app
from kit.phones import is_e164
from kit.settings import Settings
from providers.sandbox.twilio import TwilioSandbox
from resolvers.credentials import SANDBOX_EXTRAS, sandbox_secret
from tests.conftest import Account, free_port, gql, make_settings, running_server

SANDBOX_ACCOUNT = SANDBOX_EXTRAS["twilio"]["account_sid"]
SANDBOX_NUMBER = SANDBOX_EXTRAS["twilio"]["phone_number"]

SEND_SMS = """mutation($i: SendSmsInput!) { sendSms(input: $i) {
  message { id status channel recipient body } } }"""
SEND_WHATSAPP = """mutation($i: SendWhatsAppInput!) { sendWhatsApp(input: $i) {
  message { id status channel recipient body mediaUrls contentSid } } }"""
MESSAGE = """query($id: ID!) { node(id: $id) { ... on Message {
  id status errorCode providerSid provider attempts body lastError segments } } }"""
OPT_OUTS = "query { phoneOptOuts(first: 50) { edges { node { id number reason } } } }"


@dataclass
class Gateway:
    client: httpx.AsyncClient
    url: str
    settings: Settings
    sandbox: TwilioSandbox
    app: Any

    @property
    def token(self) -> str:
        """The sandbox account's auth token: what it signs callbacks with."""
        return sandbox_secret(self.settings, "twilio")

    async def inbound(
        self,
        sender: str,
        body: str,
        *,
        channel: str = "sms",
        media: list[str] | None = None,
        to: str = SANDBOX_NUMBER,
    ) -> str:
        """Have the sandbox post an incoming message (signed) to the gateway; its SID."""
        response = await self.client.post(
            "/sandbox/twilio/_sandbox/inbound",
            auth=(SANDBOX_ACCOUNT, self.token),
            json={"from": sender, "to": to, "body": body, "channel": channel,
                  "mediaUrls": media or []},
        )  # fmt: skip
        assert response.status_code == 201, response.text
        return str(response.json()["sid"])

    def created(self) -> list[dict[str, Any]]:
        """Every message the sandbox was asked to create, as sent (form fields)."""
        return [
            dict(parse_qsl(r["body"], keep_blank_values=True))
            for r in self.sandbox.recorded
            if r["method"] == "POST" and r["path"].endswith("/Messages.json")
            and r["status"] == 201
        ]  # fmt: skip


def settings_for(store_url: str, port: int, **overrides: Any) -> dict[str, Any]:
    return {
        "database_url": store_url,
        "public_url": f"http://127.0.0.1:{port}",
        "sandbox_enabled": True,
        "sandbox_webhooks": True,
        "twilio_sandbox_step_seconds": 0.0,
        "outbound_rate_limits": {"twilio": "10000/second"},
        **overrides,
    }


@pytest.fixture
async def gateway(store: Any, worker: Any) -> AsyncIterator[Gateway]:
    port = free_port()
    overrides = settings_for(store.url, port)
    settings = make_settings(**overrides)
    app = create_app(settings, configure_logs=False)
    sandbox = app.state.services.sandboxes["twilio"]
    async with running_server(app, port) as url:
        await worker(**overrides)
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            yield Gateway(client, url, settings, sandbox, app)
        await sandbox.callbacks.aclose()


async def send_sms(gw: Gateway, owner: Account, to: str, body: str = "Hello") -> str:
    result = await gql(gw.client, SEND_SMS, {"i": {"to": to, "body": body}}, owner.token)
    assert "errors" not in result, result
    return str(result["data"]["sendSms"]["message"]["id"])


def status_is(gw: Gateway, owner: Account, gid: str, *wanted: str) -> Any:
    async def check() -> dict[str, Any] | None:
        node = (await gql(gw.client, MESSAGE, {"id": gid}, owner.token))["data"]["node"]
        return node if node["status"] in wanted else None

    return check


async def opt_outs(gw: Gateway, owner: Account) -> dict[str, str]:
    body = await gql(gw.client, OPT_OUTS, token=owner.token)
    return {e["node"]["number"]: e["node"]["reason"] for e in body["data"]["phoneOptOuts"]["edges"]}


def sign(token: str, url: str, params: dict[str, str]) -> str:
    """X-Twilio-Signature as Twilio's own library computes it."""
    return str(RequestValidator(token).compute_signature(url, params))


async def subscribe_status(gw: Gateway, owner: Account, gid: str, until: set[str]) -> list[str]:
    """The statuses `messageStatus` streams until one of `until` (or the stream ends)."""
    ws_url = gw.url.replace("http://", "ws://") + "/graphql"
    seen: list[str] = []
    async with websockets.connect(ws_url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        auth = {"authorization": f"Bearer {owner.token}"}
        await ws.send(json.dumps({"type": "connection_init", "payload": auth}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {
            "query": "subscription($id: ID!) { messageStatus(id: $id) { status errorCode } }",
            "variables": {"id": gid}}}))  # fmt: skip
        while not seen or seen[-1] not in until:
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if message["type"] == "complete":
                break
            assert message["type"] == "next", message
            seen.append(message["payload"]["data"]["messageStatus"]["status"])
    return seen


def unique_number() -> str:
    """A valid US number not used by another test (the store is shared by the session)."""
    while True:
        candidate = f"+1415{2 + uuid.uuid4().int % 8}{uuid.uuid4().int % 1_000_000:06d}"
        if is_e164(candidate) and not candidate.startswith("+1415555"):
            return candidate

"""Rossum's hooks at the gateway's route, on SQLite and PostgreSQL.

End to end: the gateway's own Rossum sandbox, served with the gateway on a real port,
walks an uploaded invoice PDF to `exported` and calls `/webhooks/rossum` on every status
change; each call is stored once. Then requests signed here with `hmac` (not the
project's signer): a replay is a duplicate; forged, missing and garbled signatures are
401 with nothing stored; an oversized body is 413; a tenant's source with a generated
secret takes them.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from typing import Any

import httpx
import pytest

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
from tests.pdfs import invoice_pdf

SECRET = "rossum-hook-secret-for-tests"
HEADER = "X-Rossum-Signature-SHA256"


@pytest.fixture
def settings(store: Store) -> Settings:
    return make_settings(
        database_url=store.url, sandbox_enabled=True, webhook_system_secrets={"rossum": SECRET}
    )


def hook(status: str = "exported", request_id: str | None = None) -> dict[str, Any]:
    return {
        "request_id": request_id or str(uuid.uuid4()),
        "timestamp": "2026-11-30T10:00:00.000000Z",
        "hook": "https://example.rossum.app/api/v1/hooks/1",
        "action": "changed",
        "event": "annotation_status",
        "annotation": {"id": 314, "status": status, "previous_status": "exporting"},
        "document": {"id": 315, "original_file_name": "inv.pdf"},
    }


def signed(payload: dict[str, Any], secret: str = SECRET) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return body, {HEADER: f"sha256={digest}", "content-type": "application/json"}


async def test_the_sandbox_hooks_arrive_at_the_gateway_once_each(store: Store) -> None:
    port = free_port()
    settings = make_settings(
        database_url=store.url,
        public_url=f"http://127.0.0.1:{port}",
        sandbox_enabled=True,
        sandbox_webhooks=True,
        rossum_sandbox_step_seconds=0.01,
    )
    app = create_app(settings, configure_logs=False)
    sandbox = app.state.services.sandboxes["rossum"]
    async with running_server(app, port) as url, httpx.AsyncClient(base_url=url) as c:
        auth = {"Authorization": "Bearer sandbox-token"}
        uploaded = await c.post(
            "/sandbox/rossum/uploads",
            params={"queue": "1"},
            files={"content": ("inv.pdf", invoice_pdf("INV-HOOK"), "application/pdf")},
            headers=auth,
        )
        assert uploaded.status_code == 202, uploaded.text
        task = (await c.get(uploaded.json()["url"], headers=auth)).json()
        upload = (await c.get(task["content"]["upload"], headers=auth)).json()
        annotation_url = upload["annotations"][0]
        await asyncio.wait_for(sandbox.drain(), 20)
        await asyncio.wait_for(sandbox.callbacks.drain(), 20)
        posted = (await c.get("/sandbox/rossum/_sandbox/webhooks")).json()["webhooks"]

    # What the sandbox sent is Rossum's signature, checked here with hmac alone.
    secret = app.state.services.sandbox_webhook_secrets["rossum"]
    mine = [p for p in posted if p["body"]["annotation"]["url"] == annotation_url]
    assert [p["status"] for p in mine] == [200, 200, 200, 200]
    for p in mine:
        raw = json.dumps(p["body"], separators=(",", ":")).encode()
        expected = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
        assert p["headers"][HEADER] == f"sha256={expected}"

    async def rows() -> list[WebhookInbox] | None:
        found = [
            r
            for r in await WebhookInbox.filter(provider="rossum").order_by("id")
            if r.payload["annotation"]["url"] == annotation_url
        ]
        return found if len(found) == 4 else None

    stored = await eventually(rows, "the sandbox's four status hooks")
    assert {r.event_type for r in stored} == {"annotation_status.changed"}
    statuses = sorted(r.payload["annotation"]["status"] for r in stored)
    assert statuses == sorted(["to_review", "confirmed", "exporting", "exported"])
    assert len({r.event_id for r in stored}) == 4
    assert all(r.tenant_id is None and r.source_key == "system" for r in stored)
    assert "rossum_authorization_token" not in stored[0].payload


async def test_a_replayed_hook_is_a_duplicate_and_bad_signatures_store_nothing(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    payload = hook()
    body, headers = signed(payload)
    first = await client.post("/webhooks/rossum", content=body, headers=headers)
    assert first.status_code == 200, first.text
    assert first.json() == {
        "received": True,
        "eventId": payload["request_id"],
        "duplicate": False,
    }
    again = await client.post("/webhooks/rossum", content=body, headers=headers)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    row = await WebhookInbox.get(provider="rossum", event_id=payload["request_id"])
    assert row.event_type == "annotation_status.changed"
    assert row.payload["annotation"]["status"] == "exported"

    before = await WebhookInbox.filter(provider="rossum").count()
    other = hook()
    body, good = signed(other)
    _, forged = signed(other, "not-the-secret")
    tampered = body.replace(b"exported", b"confirmed")
    sha1 = "sha1=" + hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
    for content, headers in (
        (body, forged),
        (tampered, good),
        (body, {"content-type": "application/json"}),
        (body, {HEADER: "sha256=zz-not-hex"}),
        (body, {HEADER: "md5=" + "0" * 32}),
        (body, {HEADER: "sha256"}),
        (body, {HEADER: "sha256=" + "a" * 5000}),
        (body, {"X-Elis-Signature": sha1}),  # the legacy SHA-1 header alone
        (b"\xff\xfe not json", {HEADER: "sha256=" + "0" * 64}),
    ):
        refused = await client.post("/webhooks/rossum", content=content, headers=headers)
        assert refused.status_code == 401, (headers, refused.text)
        assert refused.json()["error"]["code"] == "WEBHOOK_SIGNATURE_INVALID"
    assert await WebhookInbox.filter(provider="rossum").count() == before

    # A body over the limit is refused before anything is verified or stored.
    huge = hook()
    huge["annotation"]["padding"] = "x" * (settings.webhook_max_body_bytes + 10)
    body, headers = signed(huge)
    too_big = await client.post("/webhooks/rossum", content=body, headers=headers)
    assert too_big.status_code == 413
    assert await WebhookInbox.filter(provider="rossum").count() == before

    # Authentic but not an object: a clear 400, never a 500.
    body = b"[1, 2, 3]"
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    bad = await client.post("/webhooks/rossum", content=body, headers={HEADER: f"sha256={digest}"})
    assert bad.status_code == 400


CREATE_SOURCE = """
mutation($i: CreateWebhookSourceInput!) {
  createWebhookSource(input: $i) { url secret source { id provider } }
}"""


async def test_a_tenants_rossum_source_with_a_generated_secret(client: httpx.AsyncClient) -> None:
    acct = await register(client)
    created = await gql(client, CREATE_SOURCE, {"i": {"provider": "rossum"}}, token=acct.token)
    assert "errors" not in created, created
    data = created["data"]["createWebhookSource"]
    assert data["source"]["provider"] == "rossum" and data["secret"]
    path = httpx.URL(data["url"]).path

    payload = hook("to_review")
    body, headers = signed(payload, data["secret"])  # pasted into Rossum's hook as is
    ok = await client.post(path, content=body, headers=headers)
    assert ok.status_code == 200, ok.text
    row = await WebhookInbox.get(provider="rossum", event_id=payload["request_id"])
    assert row.tenant_id is not None and row.source_key.startswith("src:")
    # The system secret does not open a tenant's address.
    body, headers = signed(hook(), SECRET)
    assert (await client.post(path, content=body, headers=headers)).status_code == 401

    # A secret of one's own: any string Rossum accepts, 8 characters at least.
    own = await gql(
        client, CREATE_SOURCE, {"i": {"provider": "rossum", "secret": "my own secret!"}},
        token=acct.token,
    )  # fmt: skip
    assert "errors" not in own and own["data"]["createWebhookSource"]["secret"] is None
    short = await gql(
        client, CREATE_SOURCE, {"i": {"provider": "rossum", "secret": "short"}}, token=acct.token
    )
    assert error_codes(short) == ["BAD_USER_INPUT"]

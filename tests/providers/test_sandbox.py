"""The sandbox framework and the Resend emulator, over real HTTP (uvicorn on loopback)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import httpx
import pytest

from gateway.app import create_app
from providers.sandbox.resend import ResendSandbox
from tests.conftest import make_settings, running_server

KEY = "re_test_1234567890"
AUTH = {"Authorization": f"Bearer {KEY}"}
EMAIL = {"from": "Acme <hello@acme.test>", "to": "ada@example.com", "subject": "Hi", "text": "x"}


@pytest.fixture
async def sandbox() -> AsyncIterator[tuple[ResendSandbox, httpx.AsyncClient]]:
    app = ResendSandbox()
    async with running_server(app) as url, httpx.AsyncClient(base_url=url) as client:
        yield app, client


async def test_send_and_get_email(sandbox: tuple[ResendSandbox, httpx.AsyncClient]) -> None:
    _, c = sandbox
    sent = await c.post("/emails", json=EMAIL, headers=AUTH)
    assert sent.status_code == 200, sent.text
    email_id = sent.json()["id"]
    assert sent.headers["ratelimit-limit"] == "2"
    got = await c.get(f"/emails/{email_id}", headers=AUTH)
    assert got.status_code == 200
    body = got.json()
    assert body["object"] == "email"
    assert body["to"] == ["ada@example.com"]
    assert body["from"] == EMAIL["from"]
    assert body["last_event"] == "delivered"
    # Another key is another team: it cannot see this email.
    other = await c.get(f"/emails/{email_id}", headers={"Authorization": "Bearer re_other_9999"})
    assert other.status_code == 404
    assert other.json() == {"statusCode": 404, "message": "Email not found", "name": "not_found"}


async def test_test_recipients_set_the_outcome(
    sandbox: tuple[ResendSandbox, httpx.AsyncClient],
) -> None:
    _, c = sandbox
    sent = await c.post("/emails", json={**EMAIL, "to": ["bounced@resend.dev"]}, headers=AUTH)
    got = await c.get(f"/emails/{sent.json()['id']}", headers=AUTH)
    assert got.json()["last_event"] == "bounced"


@pytest.mark.parametrize(
    ("headers", "status", "name"),
    [
        ({}, 401, "missing_api_key"),
        ({"Authorization": "Bearer re_invalid_key"}, 403, "invalid_api_key"),
    ],
)
async def test_auth_errors(
    sandbox: tuple[ResendSandbox, httpx.AsyncClient], headers: dict, status: int, name: str
) -> None:
    _, c = sandbox
    r = await c.post("/emails", json=EMAIL, headers=headers)
    assert r.status_code == status
    body = r.json()
    assert body["name"] == name and body["statusCode"] == status and body["message"]


@pytest.mark.parametrize(
    ("payload", "status", "name"),
    [
        ({k: v for k, v in EMAIL.items() if k != "to"}, 422, "missing_required_field"),
        ({**EMAIL, "from": "not an address"}, 422, "invalid_from_address"),
        ({**EMAIL, "to": ["ok@example.com", "broken"]}, 422, "validation_error"),
        ({**EMAIL, "subject": 5}, 400, "validation_error"),
        ({**EMAIL, "to": [f"u{i}@example.com" for i in range(51)]}, 422, "validation_error"),
    ],
)
async def test_validation_errors(
    sandbox: tuple[ResendSandbox, httpx.AsyncClient], payload: dict, status: int, name: str
) -> None:
    app, c = sandbox
    r = await c.post("/emails", json=payload, headers=AUTH)
    assert r.status_code == status, r.text
    assert r.json()["name"] == name
    assert app.emails == {}


async def test_bad_json_and_bad_id(sandbox: tuple[ResendSandbox, httpx.AsyncClient]) -> None:
    _, c = sandbox
    r = await c.post(
        "/emails", content=b"{nope", headers={**AUTH, "content-type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["name"] == "validation_error"
    r = await c.get("/emails/not-a-uuid", headers=AUTH)
    assert r.status_code == 422 and r.json()["name"] == "invalid_parameter"


async def test_idempotency_key(sandbox: tuple[ResendSandbox, httpx.AsyncClient]) -> None:
    app, c = sandbox
    h = {**AUTH, "Idempotency-Key": "welcome/42"}
    first = await c.post("/emails", json=EMAIL, headers=h)
    again = await c.post("/emails", json=EMAIL, headers=h)
    assert first.status_code == again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    assert len(app.emails) == 1
    changed = await c.post("/emails", json={**EMAIL, "subject": "Other"}, headers=h)
    assert changed.status_code == 409
    assert changed.json()["name"] == "invalid_idempotent_request"
    too_long = await c.post("/emails", json=EMAIL, headers={**AUTH, "Idempotency-Key": "k" * 257})
    assert too_long.status_code == 400
    assert too_long.json()["name"] == "invalid_idempotency_key"
    assert len(app.emails) == 1


async def test_status_fault_with_vendor_body_and_headers(
    sandbox: tuple[ResendSandbox, httpx.AsyncClient],
) -> None:
    app, c = sandbox
    r = await c.post("/_sandbox/faults", json={"status": 429, "count": 2, "retry_after": 3})
    assert r.status_code == 201
    for _ in range(2):
        limited = await c.post("/emails", json=EMAIL, headers=AUTH)
        assert limited.status_code == 429
        assert limited.json()["name"] == "rate_limit_exceeded"
        assert limited.headers["retry-after"] == "3"
        assert limited.headers["ratelimit-remaining"] == "0"
    ok = await c.post("/emails", json=EMAIL, headers=AUTH)
    assert ok.status_code == 200
    assert len(app.emails) == 1
    recorded = (await c.get("/_sandbox/requests")).json()["requests"]
    assert [r["status"] for r in recorded] == [429, 429, 200]
    assert recorded[0]["fault"] == {"status": 429}
    assert recorded[2]["fault"] is None


async def test_fault_filters_and_until_cleared(
    sandbox: tuple[ResendSandbox, httpx.AsyncClient],
) -> None:
    _, c = sandbox
    sent = await c.post("/emails", json=EMAIL, headers=AUTH)
    email_id = sent.json()["id"]
    await c.post(
        "/_sandbox/faults", json={"faults": [{"status": 503, "count": -1, "method": "GET"}]}
    )
    for _ in range(3):
        r = await c.get(f"/emails/{email_id}", headers=AUTH)
        assert r.status_code == 503 and r.json()["statusCode"] == 503
    assert (await c.post("/emails", json=EMAIL, headers=AUTH)).status_code == 200
    assert len((await c.get("/_sandbox/faults")).json()["faults"]) == 1
    await c.delete("/_sandbox/faults")
    assert (await c.get(f"/emails/{email_id}", headers=AUTH)).status_code == 200


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 99},
        {"count": 0, "status": 500},
        {"latency_ms": -5},
        {"nothing": True},
        {},
        [1, 2],
        {"faults": "x"},
    ],
)
async def test_bad_faults_are_refused(
    sandbox: tuple[ResendSandbox, httpx.AsyncClient], fault: object
) -> None:
    _, c = sandbox
    r = await c.post("/_sandbox/faults", json=fault)
    assert r.status_code == 400
    assert "bad fault" in r.json()["error"]
    assert (await c.get("/_sandbox/faults")).json()["faults"] == []


async def test_cut_closes_the_connection_without_an_answer(
    sandbox: tuple[ResendSandbox, httpx.AsyncClient],
) -> None:
    app, c = sandbox
    await c.post("/_sandbox/faults", json={"cut": True})
    url = str(c.base_url)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await session.post(f"{url}/emails", json=EMAIL, headers=AUTH)
        ok = await session.post(f"{url}/emails", json=EMAIL, headers=AUTH)
        assert ok.status == 200
    assert len(app.emails) == 1  # the cut request was never processed


async def test_latency_fault_ends_when_the_client_leaves(
    sandbox: tuple[ResendSandbox, httpx.AsyncClient],
) -> None:
    app, c = sandbox
    await c.post("/_sandbox/faults", json={"latency_ms": 30_000})
    url = str(c.base_url)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(asyncio.TimeoutError):
            await session.post(
                f"{url}/emails",
                json=EMAIL,
                headers=AUTH,
                timeout=aiohttp.ClientTimeout(sock_read=0.2),
            )
    for _ in range(100):
        if app.in_flight == 0:
            break
        await asyncio.sleep(0.02)
    assert app.in_flight == 0  # the stall stopped with the client, not after 30 s
    entry = (await c.get("/_sandbox/requests")).json()["requests"][0]
    assert entry["disconnected"] is True
    assert app.emails == {}


async def test_recording_masks_credentials_and_can_be_cleared(
    sandbox: tuple[ResendSandbox, httpx.AsyncClient],
) -> None:
    _, c = sandbox
    await c.post("/emails", json=EMAIL, headers={**AUTH, "Idempotency-Key": "abc"})
    recorded = (await c.get("/_sandbox/requests")).json()["requests"]
    assert len(recorded) == 1
    entry = recorded[0]
    assert entry["method"] == "POST" and entry["path"] == "/emails"
    assert entry["body"] == EMAIL
    assert entry["headers"]["idempotency-key"] == "abc"
    assert KEY not in entry["headers"]["authorization"]
    assert entry["headers"]["authorization"].startswith("Bearer [sha256:")
    assert (await c.get("/_sandbox/requests", params={"method": "GET"})).json()["requests"] == []
    await c.delete("/_sandbox/requests")
    assert (await c.get("/_sandbox/requests")).json()["requests"] == []
    stats = (await c.get("/_sandbox/stats")).json()
    assert stats["requests"] == 1 and stats["in_flight"] == 0 and stats["max_in_flight"] == 1
    await c.post("/_sandbox/reset")
    assert (await c.get("/_sandbox/stats")).json()["requests"] == 0


async def test_gateway_mounts_sandboxes_when_enabled() -> None:
    app = create_app(make_settings(sandbox_enabled=True), configure_logs=False)
    async with running_server(app) as url, httpx.AsyncClient(base_url=url) as c:
        sent = await c.post("/sandbox/resend/emails", json=EMAIL, headers=AUTH)
        assert sent.status_code == 200
        got = await c.get(f"/sandbox/resend/emails/{sent.json()['id']}", headers=AUTH)
        assert got.json()["subject"] == "Hi"
        await c.post("/sandbox/resend/_sandbox/faults", json={"cut": True})
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientError):
                r = await session.post(f"{url}/sandbox/resend/emails", json=EMAIL, headers=AUTH)
                await r.read()
        recorded = (await c.get("/sandbox/resend/_sandbox/requests")).json()["requests"]
        assert [r["path"] for r in recorded] == [
            "/emails",
            f"/emails/{sent.json()['id']}",
            "/emails",
        ]
    sandboxes = app.state.services.sandboxes
    assert len(sandboxes["resend"].emails) == 1


async def test_production_does_not_mount_sandboxes() -> None:
    settings = make_settings(
        switchboard_env="production",
        jwt_signing_keys=["k1:" + "s" * 40],
        vault_keys=["cHJvZHVjdGlvbi12YXVsdC1rZXktMzItYnl0ZXMhISE="],
    )
    app = create_app(settings, configure_logs=False)
    async with running_server(app) as url, httpx.AsyncClient(base_url=url) as c:
        r = await c.post("/sandbox/resend/emails", json=EMAIL, headers=AUTH)
        assert r.status_code == 404
    assert not app.state.services.sandboxes

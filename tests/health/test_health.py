"""Honest health: the background probe of live system credentials, the overall status, and
only the providers the gateway has a client for — against the OpenAI sandbox served over
real HTTP, faults injected through `POST /_sandbox/faults`."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.worker import Runtime
from kit.settings import Settings
from kit.vault import vault_for
from models.credentials import Credential
from providers.registry import CLIENTS
from providers.sandbox import create_sandbox
from resolvers.health import HealthStatus, overall_status
from resolvers.integrations import ProviderStatus
from tests.conftest import (
    Store,
    close_app_clients,
    error_codes,
    eventually,
    gql,
    make_settings,
    register,
    running_server,
)
from tests.credentials.test_credentials import SET_MINE, SET_TENANT, tenant_id_of

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_KEY = "sk-system-" + "p" * 24
SERVICE_HEALTH = """
{ serviceHealth { status checks { name ok }
  providers { provider status credentialSource latencyMs
    probe { ok latencyMs at error failuresInARow } } } }"""


@pytest.fixture
def settings(store: Store) -> Settings:
    """The `client` app: an operator's OpenAI key (never called: no runtime probes it
    here), and credentials read from the store on every request."""
    return make_settings(
        database_url=store.url, openai_api_key=SYSTEM_KEY, credential_cache_seconds=0
    )


@pytest.fixture
async def vendor() -> AsyncIterator[str]:
    """The OpenAI emulator on a port of its own (the vendor, as far as the gateway knows)."""
    async with running_server(create_sandbox("openai")) as url:
        yield url


async def control(url: str, method: str, path: str, body: Any = None) -> Any:
    async with httpx.AsyncClient() as raw:
        response = await raw.request(method, f"{url}/_sandbox/{path}", json=body)
        assert response.status_code < 300, response.text
        return response.json() if response.content else None


async def vendor_requests(url: str) -> list[dict[str, Any]]:
    return (await control(url, "GET", "requests"))["requests"]  # type: ignore[no-any-return]


async def test_probe_reports_the_vendor_and_health_requests_never_call_it(store: Store, vendor):
    settings = make_settings(
        database_url=store.url,
        openai_api_key=SYSTEM_KEY,
        openai_base_url=f"{vendor}/v1",
        health_probe_seconds=0.02,
    )
    app = create_app(settings, configure_logs=False)
    transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 5555))
    runtime = Runtime(settings, services=app.state.services, run_jobs=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        owner = await register(client)
        await runtime.start()
        try:
            await _probe_phases(client, owner.token, vendor)
        finally:
            await runtime.stop()
            await control(vendor, "DELETE", "faults")
            await close_app_clients(app)

        # With the runtime stopped nothing probes: health requests alone reach no vendor.
        await control(vendor, "DELETE", "requests")
        for _ in range(3):
            assert (await client.get("/health/ready")).status_code == 200
            body = await gql(client, SERVICE_HEALTH, token=owner.token)
            assert "errors" not in body, body
            body = await gql(client, "{ integrationHealth { status } }", token=owner.token)
            assert "errors" not in body, body
        assert await vendor_requests(vendor) == []
        await close_app_clients(app)


async def _ready(client: httpx.AsyncClient) -> dict[str, Any]:
    return (await client.get("/health/ready")).json()  # type: ignore[no-any-return]


async def _probe_phases(client: httpx.AsyncClient, token: str, vendor: str) -> None:
    # 1. The vendor answers, slowly: the probe (an authenticated model list) records
    #    success and its latency; OpenAI is operational, Resend (no key) the sandbox.
    await control(vendor, "POST", "faults", {"latency_ms": 40, "count": -1})

    async def slow_probe() -> dict[str, Any] | None:
        ready = await _ready(client)
        probe = ready["providers"]["openai"]["probe"]
        return ready if probe and probe["ok"] and probe["latency_ms"] >= 40 else None

    ready = await eventually(slow_probe, "a good probe through the latency fault")
    assert ready["status"] == "healthy", ready["providers"]
    openai = ready["providers"]["openai"]
    assert openai["status"] == "operational" and openai["credential_source"] == "system"
    assert ready["providers"]["resend"]["status"] == "sandbox"
    assert ready["providers"]["resend"]["probe"] is None  # the sandbox is never probed
    seen = await vendor_requests(vendor)
    assert seen and {(r["method"], r["path"]) for r in seen} == {("GET", "/v1/models")}
    assert all(r["headers"]["authorization"].startswith("Bearer [") for r in seen)
    await control(vendor, "DELETE", "faults")

    # 2. The vendor fails: the next probe is recorded as failed with its latency, and the
    #    overall status follows; after two failed probes in a row it is down.
    await control(vendor, "POST", "faults", {"status": 503, "retry_after": 0, "count": -1})

    async def down() -> dict[str, Any] | None:
        ready = await _ready(client)
        probe = ready["providers"]["openai"]["probe"]
        return ready if probe and probe["failures_in_a_row"] >= 2 else None

    ready = await eventually(down, "two failed probes")
    openai = ready["providers"]["openai"]
    assert openai["status"] == "down"
    assert openai["probe"]["ok"] is False and openai["probe"]["latency_ms"] >= 0
    assert openai["probe"]["error"] and SYSTEM_KEY not in openai["probe"]["error"]
    assert ready["status"] == "degraded"  # the store is fine: still ready (200)

    body = await gql(client, SERVICE_HEALTH, token=token)
    assert "errors" not in body, body
    health = body["data"]["serviceHealth"]
    assert health["status"] == "DEGRADED"
    assert {c["name"]: c["ok"] for c in health["checks"]} == {"store": True, "migrations": True}
    by_provider = {p["provider"]: p for p in health["providers"]}
    assert set(by_provider) == {name.upper() for name in CLIENTS}  # every client, only those
    assert by_provider["OPENAI"]["status"] == "DOWN"
    probe = by_provider["OPENAI"]["probe"]
    assert probe["ok"] is False and probe["failuresInARow"] >= 2
    assert isinstance(probe["latencyMs"], float) and probe["at"]
    assert by_provider["RESEND"]["status"] == "SANDBOX" and by_provider["RESEND"]["probe"] is None


async def test_a_single_failed_probe_is_degraded_and_a_tenant_key_is_not_judged_by_it(
    client, owner, app
):
    """The status rule on the registry's record: one failed probe → degraded, two → down;
    the probe concerns the system key, so a tenant whose own key is used is unaffected."""
    from resolvers import integrations

    registry = app.state.services.providers
    settings = app.state.services.settings

    registry.record_probe("openai", ok=False, latency=0.012, error="openai.models.list: 500")
    integrations.forget_snapshot(app.state.services)
    body = await gql(client, SERVICE_HEALTH, token=owner.token)
    openai = {p["provider"]: p for p in body["data"]["serviceHealth"]["providers"]}["OPENAI"]
    assert openai["status"] == "DEGRADED" and openai["credentialSource"] == "SYSTEM"
    assert openai["probe"] == {**openai["probe"], "ok": False, "latencyMs": 12.0}
    assert body["data"]["serviceHealth"]["status"] == "DEGRADED"

    registry.record_probe("openai", ok=False, latency=0.02, error="openai.models.list: 500")
    integrations.forget_snapshot(app.state.services)
    ready = (await client.get("/health/ready")).json()
    assert ready["providers"]["openai"]["status"] == "down"
    assert ready["providers"]["openai"]["probe"]["latency_ms"] == 20.0

    # The organization's own key: the system key's probe says nothing about it.
    await Credential.create(
        tenant_id=tenant_id_of(owner),
        provider="openai",
        slot="tenant",
        ciphertext=_encrypted(settings, {"api_key": "sk-tenant-" + "t" * 20}),
    )
    body = await gql(client, SERVICE_HEALTH, token=owner.token)
    openai = {p["provider"]: p for p in body["data"]["serviceHealth"]["providers"]}["OPENAI"]
    assert openai["credentialSource"] == "TENANT"
    assert openai["status"] == "OPERATIONAL" and openai["probe"] is None
    assert body["data"]["serviceHealth"]["status"] == "HEALTHY"

    registry.record_probe("openai", ok=True, latency=0.01)
    integrations.forget_snapshot(app.state.services)
    ready = (await client.get("/health/ready")).json()
    assert ready["providers"]["openai"]["status"] == "operational"
    assert ready["providers"]["openai"]["probe"]["failures_in_a_row"] == 0


def _encrypted(settings: Settings, values: dict[str, str]) -> str:
    return vault_for(settings.vault_keys).encrypt(json.dumps(values))


async def test_unconfigured_providers_make_the_gateway_degraded_not_unready(store):
    settings = make_settings(database_url=store.url, sandbox_enabled=False)
    app = create_app(settings, configure_logs=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/health/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert {name: p["status"] for name, p in body["providers"].items()} == {
        name: "unconfigured" for name in CLIENTS
    }


def test_overall_status_rule():
    fine = {"store": True, "migrations": True}
    ok = [ProviderStatus.OPERATIONAL, ProviderStatus.SANDBOX]
    assert overall_status(fine, ok) is HealthStatus.HEALTHY
    assert overall_status(fine, []) is HealthStatus.HEALTHY
    for bad in (ProviderStatus.DEGRADED, ProviderStatus.DOWN, ProviderStatus.UNCONFIGURED):
        assert overall_status(fine, [*ok, bad]) is HealthStatus.DEGRADED
    for check in ("store", "migrations", "redis"):
        assert overall_status({**fine, check: False}, ok) is HealthStatus.UNHEALTHY


async def test_no_probe_task_when_the_interval_is_zero(store):
    settings = make_settings(database_url=store.url, health_probe_seconds=0)
    app = create_app(settings, configure_logs=False)
    runtime = Runtime(settings, services=app.state.services, run_jobs=False)
    await runtime.start()
    try:
        assert "health-probes" not in {t.get_name() for t in asyncio.all_tasks()}
    finally:
        await runtime.stop()
    on = Runtime(make_settings(database_url=store.url), services=app.state.services, run_jobs=False)
    await on.start()
    try:
        assert "health-probes" in {t.get_name() for t in asyncio.all_tasks()}
    finally:
        await on.stop()


@pytest.mark.parametrize("mutation", [SET_TENANT, SET_MINE])
async def test_credentials_for_a_provider_without_a_client_are_refused(
    client, owner, mutation, monkeypatch
):
    from providers.registry import CLIENTS, has_client
    from resolvers.credentials import OTHER_CLIENTS, PROVIDERS, IntegrationProvider

    without = [
        p for p in IntegrationProvider
        if not has_client(p.value) and p not in OTHER_CLIENTS and p in PROVIDERS
    ]  # fmt: skip
    if not without:  # every vendor the enum names has a client today: take one away
        monkeypatch.delitem(CLIENTS, IntegrationProvider.NOTION.value)
        without = [IntegrationProvider.NOTION]
    for kind in without:
        field = PROVIDERS[kind].primary
        camel = field.split("_")[0] + "".join(w.title() for w in field.split("_")[1:])
        secret = f"{kind.value}-{uuid.uuid4().hex}"
        body = await gql(
            client,
            mutation,
            {"input": {"provider": kind.name, "secrets": {camel: secret}}},
            owner.token,
        )
        assert error_codes(body) == ["BAD_USER_INPUT"], body
        details = body["errors"][0]["extensions"]["details"]
        assert list(details) == ["provider"] and "no client" in details["provider"]
        assert secret not in str(body)
    assert await Credential.filter(tenant_id=tenant_id_of(owner)).count() == 0


def test_readme_and_schema_speak_the_same_words():
    readme = (ROOT / "README.md").read_text()
    schema = (ROOT / "schema.graphql").read_text()
    section = readme.split("## Health", 1)[1].split("\n## ", 1)[0]
    for status in ProviderStatus:
        assert f"`{status.value.lower()}`" in section, status
        assert re.search(rf"enum ProviderStatus {{[^}}]*\b{status.value}\b", schema), status
    for overall in HealthStatus:
        assert f"`{overall.value.lower()}`" in section, overall
        assert re.search(rf"enum HealthStatus {{[^}}]*\b{overall.value}\b", schema), overall
    assert "LIVE" not in re.search(r"enum ProviderStatus {[^}]*}", schema).group(0)  # type: ignore[union-attr]
    assert "| `HEALTH_PROBE_SECONDS` | `60` |" in readme


# Google Calendar (the OAuth client also signs people in) and Zoom's server-to-server app.
MEETINGS = {
    "google_client_id": "client.apps.googleusercontent.com",
    "google_client_secret": "g" * 24,
    "zoom_account_id": "acct",
    "zoom_client_id": "zoom-client",
    "zoom_client_secret": "z" * 24,
}


async def test_an_unconfigured_mail_provider_is_no_fault_while_another_sends(store):
    """Resend and SendGrid stand in for one another (and the SMTP relay for both): one of
    them not set up does not make the gateway degraded while mail can go out."""

    async def status(**overrides: Any) -> str:
        settings = make_settings(
            database_url=store.url, sandbox_enabled=False, openai_api_key="sk-" + "x" * 40,
            health_probe_seconds=0,
            **{"rossum_username": "ap@acme.test", "rossum_password": "p" * 12,
               "stripe_secret_key": "sk_test_" + "x" * 24, **TWILIO, **MEETINGS,
               **overrides},
        )  # fmt: skip
        app = create_app(settings, configure_logs=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return str((await client.get("/health/ready")).json()["status"])

    assert await status() == "degraded"  # no way to send mail at all
    assert await status(smtp_host="smtp.example.com") == "healthy"
    assert await status(resend_api_key="re_" + "x" * 30) == "healthy"
    assert await status(sendgrid_api_key="SG." + "x" * 40) == "healthy"
    # Rossum has no stand-in: without it invoices cannot be read, whatever sends mail.
    assert await status(smtp_host="smtp.example.com", rossum_username="") == "degraded"
    # Nor Twilio: without it no SMS, WhatsApp or verification code goes out.
    assert await status(smtp_host="smtp.example.com", twilio_account_sid="") == "degraded"
    # Payments go through Stripe or PayPal: one of them is enough.
    paypal = {"paypal_client_id": "app", "paypal_client_secret": "s" * 20}
    assert await status(smtp_host="smtp.example.com", stripe_secret_key=None, **paypal) == (
        "healthy"
    )
    assert await status(smtp_host="smtp.example.com", stripe_secret_key=None) == "degraded"


TWILIO = {
    "twilio_account_sid": "AC" + "0" * 32,
    "twilio_auth_token": "t" * 32,
    "twilio_phone_number": "+14155550123",
}

"""Vendor checks on save, the integration error log and integrationHealth, against the
Resend sandbox served by a real gateway process over HTTP (fault injection included)."""

from __future__ import annotations

import uuid

import httpx
import pytest

from kit.settings import Settings
from models.integrations import IntegrationError
from tests.conftest import Store, error_codes, gql, make_settings, register
from tests.credentials.test_credentials import SET_TENANT, TENANT_LIST, member_token, tenant_id_of

ERRORS = """
query($provider: IntegrationProvider) {
  integrationErrors(first: 10, provider: $provider) {
    totalCount
    edges { node { id provider operation status vendorCode message credentialSource
      durationMs requestId createdAt } }
  }
}"""
HEALTH = """
{ integrationHealth { provider status credentialSource breakerState consecutiveFailures
  recentFailures lastError latencyMs } }"""


@pytest.fixture
def settings(store: Store) -> Settings:
    # The sandbox runs on a loopback port other than PUBLIC_URL's, so to the outbound
    # guard it is a private address like any other: the operator allows loopback here.
    return make_settings(database_url=store.url, outbound_allowed_hosts=["127.0.0.1/32"])


def resend_input(key: str, base: str) -> dict:
    return {"input": {"provider": "RESEND", "secrets": {"apiKey": key, "baseUrl": base}}}


async def test_resend_key_checked_on_save_and_failures_logged(client, owner, live_server, app):
    try:
        await _key_checks_and_error_log(client, owner, live_server)
    finally:
        await app.state.services.providers.aclose()


async def _key_checks_and_error_log(client, owner, live_server):
    sandbox = f"{live_server}/sandbox/resend"
    good = "re_" + uuid.uuid4().hex
    body = await gql(client, SET_TENANT, resend_input(good, sandbox), owner.token)
    assert "errors" not in body, body
    assert body["data"]["setTenantCredential"]["verified"] is True

    # The vendor refuses a key: BAD_USER_INPUT naming the field; the stored key stays.
    bad = "re_invalid_" + uuid.uuid4().hex
    body = await gql(client, SET_TENANT, resend_input(bad, sandbox), owner.token)
    assert error_codes(body) == ["BAD_USER_INPUT"], body
    assert "secrets.apiKey" in body["errors"][0]["extensions"]["details"]
    listed = await gql(client, TENANT_LIST, token=owner.token)
    assert [e["node"]["lastFour"] for e in listed["data"]["tenantCredentials"]["edges"]] == [
        good[-4:]
    ]
    # A key check that succeeded (404 on the probe id) left no error row.
    empty = await gql(client, ERRORS, token=owner.token)
    assert empty["data"]["integrationErrors"]["totalCount"] == 1  # the refused key
    refused = empty["data"]["integrationErrors"]["edges"][0]["node"]
    assert refused["status"] == 403 and refused["vendorCode"] == "invalid_api_key"

    # The vendor is down: the key is stored unverified and the failure is in the log.
    async with httpx.AsyncClient() as raw:
        fault = await raw.post(f"{sandbox}/_sandbox/faults", json={"status": 503, "count": -1})
        assert fault.status_code < 300, fault.text
        try:
            other = "re_" + uuid.uuid4().hex
            body = await gql(client, SET_TENANT, resend_input(other, sandbox), owner.token)
        finally:
            await raw.delete(f"{sandbox}/_sandbox/faults")
    assert "errors" not in body, body
    assert body["data"]["setTenantCredential"]["verified"] is False

    log = await gql(client, ERRORS, {"provider": "RESEND"}, owner.token)
    node = log["data"]["integrationErrors"]["edges"][0]["node"]  # newest first
    assert node["provider"] == "RESEND" and node["operation"] == "verify_credential"
    assert node["status"] == 503 and node["credentialSource"] == "TENANT"
    assert node["requestId"] and node["durationMs"] > 0
    assert other not in node["message"]
    assert await IntegrationError.filter(tenant_id=tenant_id_of(owner)).count() == 2

    # Health reflects it, without calling the vendor.
    health = await gql(client, HEALTH, token=owner.token)
    by_provider = {h["provider"]: h for h in health["data"]["integrationHealth"]}
    # the providers with a client only
    assert set(by_provider) == {
        "OPENAI",
        "RESEND",
        "SENDGRID",
        "ROSSUM",
        "STRIPE",
        "TWILIO",
        "NOTION",
    }
    resend = by_provider["RESEND"]
    assert resend["credentialSource"] == "TENANT"
    assert resend["status"] in {"DEGRADED", "DOWN"}
    assert resend["consecutiveFailures"] >= 1 and "503" in (resend["lastError"] or "")
    assert by_provider["OPENAI"] == {
        **by_provider["OPENAI"],
        "status": "SANDBOX",
        "credentialSource": "SANDBOX",
    }

    ready = (await client.get("/health/ready")).json()
    assert set(ready["providers"]) == {
        "openai", "resend", "sendgrid", "rossum", "stripe", "twilio", "notion",
    }  # fmt: skip
    assert ready["providers"]["openai"]["status"] == "sandbox"
    # The failures were the tenant's own key's: the shared (sandbox) view is untouched.
    assert ready["providers"]["resend"]["status"] == "sandbox"


async def test_integration_errors_roles_and_tenants(client, owner, settings):
    await IntegrationError.create(
        tenant_id=tenant_id_of(owner),
        provider="openai",
        operation="chat",
        status=500,
        vendor_code="server_error",
        message="boom",
    )
    manager, _ = await member_token(settings, owner, "MANAGER")
    support, _ = await member_token(settings, owner, "SUPPORT")
    accounting, _ = await member_token(settings, owner, "ACCOUNTING")
    ok = await gql(client, ERRORS, token=manager)
    assert ok["data"]["integrationErrors"]["totalCount"] == 1
    for token in (support, accounting):
        assert error_codes(await gql(client, ERRORS, token=token)) == ["FORBIDDEN"]
        assert error_codes(await gql(client, HEALTH, token=token)) == ["FORBIDDEN"]
    stranger = await register(client, org="Initech")
    other = await gql(client, ERRORS, token=stranger.token)
    assert other["data"]["integrationErrors"]["totalCount"] == 0
    filtered = await gql(client, ERRORS, {"provider": "RESEND"}, owner.token)
    assert filtered["data"]["integrationErrors"]["totalCount"] == 0
    gid = ok["data"]["integrationErrors"]["edges"][0]["node"]["id"]
    node = await gql(
        client, "query($id: ID!) { node(id: $id) { id } }", {"id": gid}, stranger.token
    )
    assert node["data"]["node"] is None


async def test_unconfigured_without_sandbox(store, owner):
    from resolvers.integrations import ProviderStatus, integration_health
    from tests.conftest import make_settings
    from tests.credentials.test_credentials import ctx_for, user_id_of

    settings = make_settings(database_url=store.url, sandbox_enabled=False)
    ctx = ctx_for(settings, tenant_id_of(owner), user_id_of(owner), "OWNER")
    reports = {r.provider.value: r for r in await integration_health(ctx, ["openai", "paypal"])}
    assert set(reports) == {"openai"}  # no client for paypal: not listed
    assert reports["openai"].status is ProviderStatus.UNCONFIGURED
    assert reports["openai"].source is None


async def test_sendgrid_key_checked_on_save(client, owner, live_server, app):
    sandbox = f"{live_server}/sandbox/sendgrid"

    def sendgrid_input(key: str) -> dict:
        secrets = {"apiKey": key, "fromEmail": "mail@acme.test", "baseUrl": sandbox}
        return {"input": {"provider": "SENDGRID", "secrets": secrets}}

    try:
        body = await gql(client, SET_TENANT, sendgrid_input("SG." + uuid.uuid4().hex), owner.token)
        assert "errors" not in body, body
        assert body["data"]["setTenantCredential"]["verified"] is True
        for refused in ("SG.invalid." + uuid.uuid4().hex, "SG.restricted." + uuid.uuid4().hex):
            body = await gql(client, SET_TENANT, sendgrid_input(refused), owner.token)
            assert error_codes(body) == ["BAD_USER_INPUT"], body
            assert "secrets.apiKey" in body["errors"][0]["extensions"]["details"]
    finally:
        await app.state.services.providers.aclose()

"""Provider credentials: set/remove/list over GraphQL, the resolution chain, roles, tenancy."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from strawberry import relay

from gateway.app import create_app
from kit.errors import UpstreamUnavailable
from kit.roles import Role
from kit.security import Principal, hash_password, issue_access_token
from kit.settings import Settings
from models.accounts import User
from models.credentials import Credential
from models.members import Membership
from resolvers.context import Context, Services
from resolvers.credentials import CredentialSource, resolve_credential
from tests.conftest import Account, error_codes, gql, make_settings, register

SET_TENANT = """
mutation($input: SetCredentialInput!) {
  setTenantCredential(input: $input) {
    verified
    credential { id provider scope isSet lastFour fields updatedAt setBy { email } }
  }
}"""
SET_MINE = """
mutation($input: SetCredentialInput!) {
  setMyCredential(input: $input) { verified credential { id provider scope lastFour } }
}"""
REMOVE_TENANT = """
mutation($input: RemoveCredentialInput!) {
  removeTenantCredential(input: $input) { provider removed }
}
"""
REMOVE_MINE = """
mutation($input: RemoveCredentialInput!) { removeMyCredential(input: $input) { provider removed } }
"""
TENANT_LIST = """
{ tenantCredentials(first: 20) { totalCount edges { node { id provider scope lastFour fields
  setBy { email } } } } }"""
MY_LIST = "{ myCredentials { edges { node { id provider scope lastFour fields } } } }"


def tenant_id_of(account: Account) -> int:
    return int(relay.GlobalID.from_id(account.org_id).node_id)


def user_id_of(account: Account) -> int:
    return int(relay.GlobalID.from_id(account.user_id).node_id)


async def member_token(settings: Settings, account: Account, role: str) -> tuple[str, int]:
    """A new user with `role` in `account`'s organization, and an access token for them."""
    user = await User.create(
        email=f"{role.lower()}-{uuid.uuid4().hex[:8]}@example.com",
        name=role.title(),
        password_hash=hash_password("correct horse battery staple"),
    )
    tenant_id = tenant_id_of(account)
    await Membership.create(tenant_id=tenant_id, user_id=user.id, role=role)
    token, _ = issue_access_token(settings, Principal(user.id, tenant_id, Role(role)))
    return token, user.id


def ctx_for(settings: Settings, tenant_id: int, user_id: int | None, role: str) -> Context:
    from kit.ratelimit import RateLimiter

    services = Services(settings=settings, limiter=RateLimiter(""))
    return Context(
        services=services,
        request_id="test",
        principal=Principal(user_id, tenant_id, Role(role)),
    )


def secrets(key: str, **more: Any) -> dict[str, Any]:
    return {"apiKey": key, **more}


async def test_set_list_replace_remove_tenant_credential(client, owner):
    key = "sk-test-" + uuid.uuid4().hex
    body = await gql(
        client,
        SET_TENANT,
        {"input": {"provider": "OPENAI", "secrets": secrets(key, organization="org-1")}},
        owner.token,
    )
    assert "errors" not in body, body
    cred = body["data"]["setTenantCredential"]["credential"]
    assert cred["provider"] == "OPENAI" and cred["scope"] == "TENANT" and cred["isSet"]
    assert cred["lastFour"] == key[-4:]
    assert cred["fields"] == ["apiKey", "organization"]
    assert cred["setBy"]["email"] == owner.email
    assert body["data"]["setTenantCredential"]["verified"] is False  # no cheap check for openai

    # Stored encrypted: the row holds neither the key nor any long piece of it.
    row = await Credential.get(tenant_id=tenant_id_of(owner), provider="openai", slot="tenant")
    assert key not in row.ciphertext and key[8:24] not in row.ciphertext

    # Setting again replaces (one row per provider and scope).
    key2 = "sk-test-" + uuid.uuid4().hex
    body = await gql(
        client, SET_TENANT, {"input": {"provider": "OPENAI", "secrets": secrets(key2)}}, owner.token
    )
    assert body["data"]["setTenantCredential"]["credential"]["id"] == cred["id"]
    listed = await gql(client, TENANT_LIST, token=owner.token)
    nodes = [e["node"] for e in listed["data"]["tenantCredentials"]["edges"]]
    assert [(n["provider"], n["lastFour"], n["fields"]) for n in nodes] == [
        ("OPENAI", key2[-4:], ["apiKey"])
    ]

    # node(id:) reaches it for the organization's managers.
    node = await gql(
        client,
        "query($id: ID!) { node(id: $id) { ... on ProviderCredential { provider lastFour } } }",
        {"id": cred["id"]},
        owner.token,
    )
    assert node["data"]["node"] == {"provider": "OPENAI", "lastFour": key2[-4:]}

    removed = await gql(client, REMOVE_TENANT, {"input": {"provider": "OPENAI"}}, owner.token)
    assert removed["data"]["removeTenantCredential"] == {"provider": "OPENAI", "removed": True}
    again = await gql(client, REMOVE_TENANT, {"input": {"provider": "OPENAI"}}, owner.token)
    assert error_codes(again) == ["NOT_FOUND"]
    listed = await gql(client, TENANT_LIST, token=owner.token)
    assert listed["data"]["tenantCredentials"]["totalCount"] == 0


async def test_bad_input_names_the_field_and_stores_nothing(client, owner):
    cases = [
        ({"provider": "OPENAI", "secrets": {}}, "secrets.apiKey"),
        ({"provider": "OPENAI", "secrets": {"apiKey": "sk-x", "colour": "red"}}, "secrets.colour"),
        ({"provider": "PAYPAL", "secrets": {"clientSecret": "t" * 20}}, "secrets.clientId"),
        ({"provider": "TWILIO", "secrets": {"authToken": "t" * 20}}, "secrets.accountSid"),
        (
            {
                "provider": "TWILIO",
                "secrets": {
                    "accountSid": "AC" + "0" * 32,
                    "authToken": "t" * 20,
                    "phoneNumber": "+1 555",
                },
            },
            "secrets.phoneNumber",
        ),
        (
            {
                "provider": "TWILIO",
                "secrets": {
                    "accountSid": "AC" + "0" * 32,
                    "apiKeySid": "SK" + "0" * 32,
                    "phoneNumber": "+14155550123",
                },
            },
            "secrets.apiKeySecret",
        ),
        ({"provider": "SMTP", "secrets": {"host": "mail", "port": "99999"}}, "secrets.port"),
        (
            {"provider": "OPENAI", "secrets": {"apiKey": "sk-abc", "baseUrl": "ftp://x"}},
            "secrets.baseUrl",
        ),
        ({"provider": "OPENAI", "secrets": {"apiKey": {"nested": 1}}}, "secrets.apiKey"),
        ({"provider": "OPENAI", "secrets": "sk-plain-string"}, "secrets"),
    ]
    for payload, field in cases:
        body = await gql(client, SET_TENANT, {"input": payload}, owner.token)
        assert error_codes(body) == ["BAD_USER_INPUT"], (payload, body)
        assert field in body["errors"][0]["extensions"]["details"], body
    body = await gql(
        client, SET_TENANT, {"input": {"provider": "NOPE", "secrets": {}}}, owner.token
    )
    assert error_codes(body) == ["BAD_USER_INPUT"]
    assert await Credential.filter(tenant_id=tenant_id_of(owner)).count() == 0


async def test_permissions_by_role(client, owner, settings):
    read_only, _ = await member_token(settings, owner, "READ_ONLY")
    support, _ = await member_token(settings, owner, "SUPPORT")
    manager, _ = await member_token(settings, owner, "MANAGER")
    payload = {"input": {"provider": "OPENAI", "secrets": secrets("sk-" + "a" * 30)}}

    for token in (read_only, support):
        assert error_codes(await gql(client, SET_TENANT, payload, token)) == ["FORBIDDEN"]
        assert error_codes(await gql(client, TENANT_LIST, token=token)) == ["FORBIDDEN"]
    assert error_codes(await gql(client, SET_MINE, payload, read_only)) == ["FORBIDDEN"]
    assert error_codes(await gql(client, MY_LIST, token=read_only)) == ["FORBIDDEN"]
    assert error_codes(await gql(client, SET_TENANT, payload)) == ["UNAUTHENTICATED"]

    mine = await gql(client, SET_MINE, payload, support)
    assert "errors" not in mine, mine
    assert mine["data"]["setMyCredential"]["credential"]["scope"] == "USER"
    listed = await gql(client, MY_LIST, token=support)
    assert [e["node"]["provider"] for e in listed["data"]["myCredentials"]["edges"]] == ["OPENAI"]

    # A member's own key is theirs alone: not in the organization's list, not in other
    # members' lists, not reachable by node(id:) for the owner.
    assert (await gql(client, TENANT_LIST, token=manager))["data"]["tenantCredentials"][
        "totalCount"
    ] == 0
    other = await gql(client, MY_LIST, token=owner.token)
    assert other["data"]["myCredentials"]["edges"] == []
    node = await gql(
        client,
        "query($id: ID!) { node(id: $id) { id } }",
        {"id": mine["data"]["setMyCredential"]["credential"]["id"]},
        owner.token,
    )
    assert node["data"]["node"] is None

    ok = await gql(client, SET_TENANT, payload, manager)
    assert "errors" not in ok, ok
    assert (await gql(client, REMOVE_MINE, {"input": {"provider": "OPENAI"}}, support))["data"][
        "removeMyCredential"
    ]["removed"]


async def test_foreign_tenant_isolation(client, owner):
    other = await register(client, org="Globex")
    key = "sk-" + uuid.uuid4().hex
    body = await gql(
        client, SET_TENANT, {"input": {"provider": "OPENAI", "secrets": secrets(key)}}, owner.token
    )
    gid = body["data"]["setTenantCredential"]["credential"]["id"]
    listed = await gql(client, TENANT_LIST, token=other.token)
    assert listed["data"]["tenantCredentials"]["totalCount"] == 0
    node = await gql(client, "query($id: ID!) { node(id: $id) { id } }", {"id": gid}, other.token)
    assert node["data"]["node"] is None
    removed = await gql(client, REMOVE_TENANT, {"input": {"provider": "OPENAI"}}, other.token)
    assert error_codes(removed) == ["NOT_FOUND"]
    assert await Credential.filter(tenant_id=tenant_id_of(owner)).count() == 1


async def test_resolution_chain_user_tenant_system_sandbox(client, owner, store):
    settings = make_settings(database_url=store.url, openai_api_key="sk-system-" + "s" * 20)
    app = create_app(settings, configure_logs=False)
    transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 5555))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        support, support_id = await member_token(settings, owner, "SUPPORT")
        tenant_id = tenant_id_of(owner)

        async def source(provider: str, user_id: int | None = support_id) -> Any:
            got = await resolve_credential(
                ctx_for(settings, tenant_id, user_id, "SUPPORT"), provider
            )
            return got.source, got.secrets, got.base_url

        # Nothing stored: the system key for openai, the sandbox for resend; IMAP has no
        # emulator and no key here, so nothing.
        assert (await source("openai"))[:2] == (
            CredentialSource.SYSTEM,
            {"api_key": "sk-system-" + "s" * 20},
        )
        src, _, base = await source("resend")
        assert src is CredentialSource.SANDBOX and base == f"{settings.base_url}/sandbox/resend"
        with pytest.raises(UpstreamUnavailable):
            await source("imap")  # no emulator (a real IMAP server is the tests'), no key

        tenant_key = "sk-tenant-" + "t" * 20
        await gql(
            c,
            SET_TENANT,
            {"input": {"provider": "OPENAI", "secrets": secrets(tenant_key)}},
            owner.token,
        )
        assert (await source("openai"))[:2] == (CredentialSource.TENANT, {"api_key": tenant_key})

        user_key = "sk-user-" + "u" * 20
        body = await gql(
            c,
            SET_MINE,
            {
                "input": {
                    "provider": "OPENAI",
                    "secrets": secrets(user_key, baseUrl="https://llm.example.com/v1"),
                }
            },
            support,
        )
        assert "errors" not in body, body
        src, values, base = await source("openai")
        assert src is CredentialSource.USER and values["api_key"] == user_key
        assert base == "https://llm.example.com/v1"
        # Another member of the tenant gets the tenant's key, not the support member's own.
        assert (await source("openai", user_id=user_id_of(owner)))[0] is CredentialSource.TENANT

        await gql(c, REMOVE_MINE, {"input": {"provider": "OPENAI"}}, support)
        assert (await source("openai"))[0] is CredentialSource.TENANT
        await gql(c, REMOVE_TENANT, {"input": {"provider": "OPENAI"}}, owner.token)
        assert (await source("openai"))[0] is CredentialSource.SYSTEM


async def test_without_sandbox_an_unconfigured_provider_is_upstream_unavailable(owner, store):
    settings = make_settings(database_url=store.url, sandbox_enabled=False)
    ctx = ctx_for(settings, tenant_id_of(owner), user_id_of(owner), "OWNER")
    with pytest.raises(UpstreamUnavailable) as info:
        await resolve_credential(ctx, "zoom")
    assert info.value.extensions["provider"] == "zoom"
    assert "not configured" in info.value.message


async def test_resolution_is_cached_per_request(owner, store):
    settings = make_settings(database_url=store.url)
    ctx = ctx_for(settings, tenant_id_of(owner), user_id_of(owner), "OWNER")
    first = await resolve_credential(ctx, "resend")
    assert await resolve_credential(ctx, "resend") is first
    other_request = ctx_for(settings, tenant_id_of(owner), user_id_of(owner), "OWNER")
    assert await resolve_credential(other_request, "resend") is not first


async def test_base_urls_go_through_the_outbound_guard(client, owner, settings, app):
    """A SUPPORT user's own OpenAI base URL on loopback (the key would be sent to it as
    bearer) is refused when saved, however it is written; a credential stored before the
    guard existed is refused when used, before anything is dialled; the gateway's own
    sandbox stays usable."""
    import json

    from kit.vault import vault_for
    from models.credentials import TENANT_SLOT

    support, _ = await member_token(settings, owner, "SUPPORT")
    for base in (
        "http://127.0.0.1:9/v1",
        "http://\u2460\u2461\u2466.\u24ea.\u24ea.\u2460:9/v1",
        "http://127\u30020\u30020\u30021:9/v1",
        "http://[::ffff:169.254.169.254]/v1",
        "http://evil.example@127.0.0.1/v1",
        "http://localhost:9/v1",
        f"{settings.base_url}/sandbox/../graphql",
    ):
        body = await gql(
            client, SET_MINE, {"input": {"provider": "OPENAI", "secrets": secrets(
                "sk-mine-" + uuid.uuid4().hex, baseUrl=base)}}, support,
        )  # fmt: skip
        assert error_codes(body) == ["BAD_USER_INPUT"], (base, body)
        assert "secrets.baseUrl" in body["errors"][0]["extensions"]["details"], body
    assert await Credential.filter(tenant_id=tenant_id_of(owner)).count() == 0

    # A row saved before the guard: refused at use time, nothing dialled.
    values = {"api_key": "sk-old-" + uuid.uuid4().hex, "base_url": "http://127.0.0.1:9/v1"}
    await Credential.create(
        tenant_id=tenant_id_of(owner), provider="openai", slot=TENANT_SLOT,
        ciphertext=vault_for(settings.vault_keys).encrypt(json.dumps(values)),
        field_names="api_key,base_url",
    )  # fmt: skip
    used = await gql(client, "{ aiModels { name } }", token=owner.token)
    assert error_codes(used) == ["BAD_USER_INPUT"], used
    assert "loopback" in used["errors"][0]["message"]
    registry = app.state.services.providers
    assert (await registry.health(["openai"]))["openai"].consecutive_failures == 0

    # The gateway's own sandbox (PUBLIC_URL/sandbox/...) is the operator's: accepted.
    own_sandbox = f"{settings.base_url}/sandbox/openai/v1"
    ok = await gql(
        client, SET_MINE, {"input": {"provider": "OPENAI", "secrets": secrets(
            "sk-mine-" + uuid.uuid4().hex, baseUrl=own_sandbox)}}, support,
    )  # fmt: skip
    assert "errors" not in ok, ok

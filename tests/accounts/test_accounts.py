"""Registration, login, sessions and the viewer."""

from __future__ import annotations

import uuid

from tests.conftest import STRONG_PASSWORD, error_codes, gql, register

ME = "{ me { role isApiKey user { email } organization { name } memberships { role } } }"
LOGIN = "mutation($i: LoginInput!) { login(input: $i) { accessToken refreshToken role } }"
REFRESH = (
    "mutation($i: RefreshTokenInput!) { refreshToken(input: $i) { accessToken refreshToken } }"
)


async def test_register_then_me(client):
    acct = await register(client, org="Globex")
    body = await gql(client, ME, token=acct.token)
    assert body["data"]["me"]["role"] == "OWNER"
    assert body["data"]["me"]["user"]["email"] == acct.email
    assert body["data"]["me"]["organization"]["name"] == "Globex"


async def test_me_requires_authentication(client):
    body = await gql(client, ME)
    assert error_codes(body) == ["UNAUTHENTICATED"]
    assert body["errors"][0]["extensions"]["requestId"]


async def test_duplicate_registration_conflicts(client):
    acct = await register(client)
    body = await gql(
        client,
        """mutation($i: RegisterOrganizationInput!) {
        registerOrganization(input: $i) { accessToken } }""",
        {"i": {"organizationName": "Again", "email": acct.email, "password": STRONG_PASSWORD}},
    )
    assert error_codes(body) == ["CONFLICT"]


async def test_weak_password_is_bad_input_with_details(client):
    body = await gql(
        client,
        """mutation($i: RegisterOrganizationInput!) {
        registerOrganization(input: $i) { accessToken } }""",
        {
            "i": {
                "organizationName": "Weak",
                "email": f"{uuid.uuid4().hex}@x.io",
                "password": "short",
            }
        },
    )
    assert error_codes(body) == ["BAD_USER_INPUT"]
    assert "password" in body["errors"][0]["extensions"]["details"]


async def test_login_and_wrong_password(client):
    acct = await register(client)
    ok = await gql(client, LOGIN, {"i": {"email": acct.email.upper(), "password": STRONG_PASSWORD}})
    assert ok["data"]["login"]["role"] == "OWNER"
    bad = await gql(client, LOGIN, {"i": {"email": acct.email, "password": "wrong password!!"}})
    assert error_codes(bad) == ["UNAUTHENTICATED"]


async def test_refresh_rotates_and_reuse_revokes_family(client):
    acct = await register(client)
    first = await gql(client, REFRESH, {"i": {"refreshToken": acct.refresh}})
    new_refresh = first["data"]["refreshToken"]["refreshToken"]
    assert new_refresh != acct.refresh
    # Replaying the spent token is theft: the whole family dies, the new token too.
    replay = await gql(client, REFRESH, {"i": {"refreshToken": acct.refresh}})
    assert error_codes(replay) == ["UNAUTHENTICATED"]
    assert replay["errors"][0]["extensions"]["reason"] == "REFRESH_TOKEN_REUSED"
    after = await gql(client, REFRESH, {"i": {"refreshToken": new_refresh}})
    assert error_codes(after) == ["UNAUTHENTICATED"]


async def test_logout_revokes_refresh(client):
    acct = await register(client)
    out = await gql(client, "mutation { logout { ok } }", token=acct.token)
    assert out["data"]["logout"]["ok"] is True
    again = await gql(client, REFRESH, {"i": {"refreshToken": acct.refresh}})
    assert error_codes(again) == ["UNAUTHENTICATED"]

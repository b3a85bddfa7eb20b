"""Every bad credential is UNAUTHENTICATED (HTTP 401) with the request id, on public
fields too, and nothing stored changes."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import jwt
import pytest

from kit.roles import Role
from kit.security import Principal, issue_access_token
from tests.conftest import error_codes, gql, register
from tests.factories import app_with, client_for, store_counts

ME = "{ me { role user { email } organization { name } } }"
PUBLIC = "{ serverInfo { version } }"


def principal_of(settings, account) -> Principal:
    from strawberry import relay

    return Principal(
        user_id=int(relay.GlobalID.from_id(account.user_id).node_id),
        tenant_id=int(relay.GlobalID.from_id(account.org_id).node_id),
        role=Role.OWNER,
        session_family="f" * 32,
    )


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def unb64(part: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def claims_of(settings, principal) -> dict:
    now = int(time.time())
    return {
        "iss": settings.jwt_issuer,
        "sub": str(principal.user_id),
        "tid": principal.tenant_id,
        "role": "OWNER",
        "iat": now,
        "exp": now + 600,
        "typ": "access",
    }


async def assert_unauthenticated(client, header: str, reason: str | None = None) -> None:
    before = await store_counts()
    for query in (ME, PUBLIC):
        response = await client.post(
            "/graphql", json={"query": query}, headers={"Authorization": header}
        )
        assert response.status_code == 401, (header, response.text)
        body = response.json()
        assert error_codes(body) == ["UNAUTHENTICATED"], body
        extensions = body["errors"][0]["extensions"]
        assert extensions["requestId"] == response.headers["x-request-id"]
        if reason:
            assert extensions["reason"] == reason
        assert "data" not in body
    assert await store_counts() == before


async def test_missing_token_is_unauthenticated_on_protected_fields(client):
    body = await gql(client, ME)
    assert error_codes(body) == ["UNAUTHENTICATED"]
    assert body["errors"][0]["extensions"]["requestId"]
    assert "errors" not in await gql(client, PUBLIC)


async def test_valid_token_works(client, owner):
    body = await gql(client, ME, token=owner.token)
    assert body["data"]["me"]["user"]["email"] == owner.email


async def test_expired_token(client, settings, owner):
    expired_settings = settings.model_copy(update={"access_token_ttl_seconds": -60})
    token, exp = issue_access_token(expired_settings, principal_of(settings, owner))
    assert exp < time.time()
    await assert_unauthenticated(client, f"Bearer {token}", reason="TOKEN_EXPIRED")


async def test_tampered_payload(client, settings, owner):
    other = await register(client, org="Victim")
    header, payload, signature = owner.token.split(".")
    claims = unb64(payload)
    claims["tid"] = principal_of(settings, other).tenant_id  # jump to another tenant
    await assert_unauthenticated(client, f"Bearer {header}.{b64(claims)}.{signature}")
    claims = unb64(payload)
    claims["role"] = "OWNER" if claims["role"] != "OWNER" else "MANAGER"
    await assert_unauthenticated(client, f"Bearer {header}.{b64(claims)}.{signature}")


async def test_alg_none(client, settings, owner):
    kid = settings.signing_keys[0][0]
    claims = claims_of(settings, principal_of(settings, owner))
    token = f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{b64(claims)}."
    await assert_unauthenticated(client, f"Bearer {token}")
    token = jwt.encode(claims, None, algorithm="none", headers={"kid": kid})
    await assert_unauthenticated(client, f"Bearer {token}")


async def test_other_algorithms_are_refused(client, settings, owner):
    kid, secret = settings.signing_keys[0]
    claims = claims_of(settings, principal_of(settings, owner))
    token = jwt.encode(claims, secret, algorithm="HS512", headers={"kid": kid})
    await assert_unauthenticated(client, f"Bearer {token}")


async def test_signed_with_a_wrong_key(client, settings, owner):
    kid = settings.signing_keys[0][0]
    claims = claims_of(settings, principal_of(settings, owner))
    token = jwt.encode(claims, "not-the-key-" * 4, algorithm="HS256", headers={"kid": kid})
    await assert_unauthenticated(client, f"Bearer {token}")


async def test_unknown_kid(client, settings, owner):
    secret = settings.signing_keys[0][1]
    claims = claims_of(settings, principal_of(settings, owner))
    token = jwt.encode(claims, secret, algorithm="HS256", headers={"kid": "nope"})
    await assert_unauthenticated(client, f"Bearer {token}")
    token = jwt.encode(claims, secret, algorithm="HS256")  # no kid at all
    await assert_unauthenticated(client, f"Bearer {token}")


async def test_wrong_issuer_and_type(client, settings, owner):
    kid, secret = settings.signing_keys[0]
    claims = claims_of(settings, principal_of(settings, owner))
    wrong_iss = jwt.encode({**claims, "iss": "evil"}, secret, "HS256", headers={"kid": kid})
    await assert_unauthenticated(client, f"Bearer {wrong_iss}")
    wrong_typ = jwt.encode({**claims, "typ": "refresh"}, secret, "HS256", headers={"kid": kid})
    await assert_unauthenticated(client, f"Bearer {wrong_typ}")
    no_role = {k: v for k, v in claims.items() if k != "role"}
    await assert_unauthenticated(
        client, f"Bearer {jwt.encode(no_role, secret, 'HS256', headers={'kid': kid})}"
    )
    bad_role = jwt.encode({**claims, "role": "GOD"}, secret, "HS256", headers={"kid": kid})
    await assert_unauthenticated(client, f"Bearer {bad_role}")


async def test_refresh_token_is_not_an_access_token(client, owner):
    assert owner.refresh.startswith("sbr_")
    await assert_unauthenticated(client, f"Bearer {owner.refresh}")


async def test_unknown_api_key(client):
    await assert_unauthenticated(client, "Bearer sbk_" + "x" * 43)


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer    ",
        "Basic dXNlcjpwYXNz",
        "Token abc",
        "bearer not.a.jwt",
        "Bearer a.b.c",
        "Bearer " + "A" * 5000,
        "Bearer eyJhbGciOiJIUzI1NiJ9.%%%.@@@",
        "garbage",
    ],
)
async def test_garbage_authorization_header(client, header):
    await assert_unauthenticated(client, header)


async def test_non_ascii_authorization_header(client):
    response = await client.post(
        "/graphql",
        json={"query": PUBLIC},
        headers=[(b"authorization", "Bearer ünïcødé".encode("latin-1"))],
    )
    assert response.status_code == 401
    assert error_codes(response.json()) == ["UNAUTHENTICATED"]


async def test_rotated_out_key_still_verifies_until_removed(client, settings, owner):
    """JWT_SIGNING_KEYS rotation: the first key signs, every listed key verifies."""
    old = settings.jwt_signing_keys[0]
    principal = principal_of(settings, owner)
    token, _ = issue_access_token(settings, principal)
    rotated = app_with(settings, jwt_signing_keys=["k2:" + "n" * 40, old])
    async with client_for(rotated) as c:
        body = await gql(c, ME, token=token)
        assert body["data"]["me"]["user"]["email"] == owner.email
    retired = app_with(settings, jwt_signing_keys=["k2:" + "n" * 40])
    async with client_for(retired) as c:
        await assert_unauthenticated(c, f"Bearer {token}")


async def test_a_verified_token_stops_working_when_it_expires(client, settings, owner):
    # The middleware keeps verified tokens until their expiry, never past it.
    short = settings.model_copy(update={"access_token_ttl_seconds": 2})
    token, expires_at = issue_access_token(short, principal_of(settings, owner))
    body = await gql(client, ME, token=token)  # verified, now cached
    assert body["data"]["me"]["user"]["email"] == owner.email
    await asyncio.sleep(max(0.0, expires_at - time.time()) + 0.1)
    await assert_unauthenticated(client, f"Bearer {token}")

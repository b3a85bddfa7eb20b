"""Sign-in with Google and GitHub, driven over HTTP against the emulators: new and linked
users, unverified emails, state, browser and PKCE checks, one-time codes, unlinking."""

from __future__ import annotations

import uuid
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest

from models.accounts import User
from models.identity import LinkedAccount, OAuthFlow
from tests.conftest import STRONG_PASSWORD, error_codes, gql, register
from tests.identity.conftest import Site

EXCHANGE = """mutation($code: String!) {
  exchangeLoginCode(input: {code: $code}) { accessToken refreshToken role user { id email } } }"""
LINKED = "{ linkedAccounts { id provider email lastUsedAt } }"
UNLINK = """mutation($id: ID!) { unlinkAccount(input: {id: $id}) { linkedAccount { id } } }"""
LOGIN = """mutation($e: String!, $p: String!) { login(input: {email: $e, password: $p}) {
  accessToken } }"""


def email() -> str:
    return f"person-{uuid.uuid4().hex[:10]}@example.com"


async def exchange(site: Site, code: str) -> dict:
    return await gql(site.browser, EXCHANGE, {"code": code})


@pytest.mark.parametrize("provider", ["google", "github"])
async def test_a_new_person_gets_an_account_and_an_organization(site: Site, provider: str) -> None:
    address = email()
    back = await site.sign_in(provider, address)
    assert set(back) == {"code"}, back
    body = await exchange(site, back["code"])
    assert "errors" not in body, body
    signed_in = body["data"]["exchangeLoginCode"]
    assert signed_in["user"]["email"] == address and signed_in["role"] == "OWNER"
    user = await User.get(email=address)
    assert user.email_verified_at is not None and user.password_hash == ""
    linked = await gql(site.browser, LINKED, token=signed_in["accessToken"])
    assert [a["provider"] for a in linked["data"]["linkedAccounts"]] == [provider.upper()]
    # The code works once.
    again = await exchange(site, back["code"])
    assert error_codes(again) == ["UNAUTHENTICATED"]
    # No password was set, so none signs in.
    refused = await gql(site.browser, LOGIN, {"e": address, "p": ""})
    assert error_codes(refused) == ["UNAUTHENTICATED"]
    # The same person again is the same user, through the link.
    second = await exchange(site, (await site.sign_in(provider, address))["code"])
    assert second["data"]["exchangeLoginCode"]["user"]["id"] == signed_in["user"]["id"]
    assert await User.filter(email=address).count() == 1


@pytest.mark.parametrize("provider", ["google", "github"])
async def test_an_existing_account_is_linked_by_a_verified_email_only(
    site: Site, provider: str
) -> None:
    owner = await register(site.browser)
    await site.person(provider, owner.email, email_verified=False)
    back = await site.sign_in(provider, owner.email)
    assert back == {"error": "OAUTH_EMAIL_UNVERIFIED"}
    assert await LinkedAccount.filter(email=owner.email).count() == 0

    await site.person(provider, owner.email, email_verified=True)
    back = await site.sign_in(provider, owner.email)
    signed_in = (await exchange(site, back["code"]))["data"]["exchangeLoginCode"]
    assert signed_in["user"]["id"] == owner.user_id
    accounts = (await gql(site.browser, LINKED, token=owner.token))["data"]["linkedAccounts"]
    assert [a["email"] for a in accounts] == [owner.email]


async def test_an_unverified_email_makes_no_new_account(site: Site) -> None:
    address = email()
    await site.person("github", address, email_verified=False)
    assert await site.sign_in("github", address) == {"error": "OAUTH_EMAIL_UNVERIFIED"}
    assert not await User.filter(email=address).exists()


async def test_state_browser_and_replay_are_checked(site: Site) -> None:
    callback = await site.at_provider(await site.start("google", email()))
    parts = urlsplit(callback)
    query = dict(parse_qsl(parts.query))
    forged = f"{parts.scheme}://{parts.netloc}{parts.path}?" + urlencode(
        {**query, "state": query["state"][:-2] + "xx"}
    )
    assert await site.back(forged) == {"error": "OAUTH_STATE_INVALID"}
    # Another browser (no cookie from the start) cannot finish this sign-in...
    async with httpx.AsyncClient(base_url=site.url) as other:
        answer = await other.get(callback)
        assert "error=OAUTH_STATE_INVALID" in answer.headers["location"]
    # ...and that attempt used the state up: the right browser cannot either now.
    assert await site.back(callback) == {"error": "OAUTH_STATE_INVALID"}

    callback = await site.at_provider(await site.start("google", email()))
    first = await site.back(callback)
    assert "code" in first
    # The browser came back from the provider, and the cookie went with it.
    assert await site.back(callback) == {"error": "OAUTH_STATE_INVALID"}


async def test_a_wrong_pkce_verifier_is_refused_by_the_provider(site: Site) -> None:
    callback = await site.at_provider(await site.start("github", email()))
    state = dict(parse_qsl(urlsplit(callback).query))["state"]
    from kit.security import hash_token

    await OAuthFlow.filter(state_hash=hash_token(state)).update(verifier="x" * 64)
    assert await site.back(callback) == {"error": "OAUTH_CODE_REFUSED"}


async def test_denied_at_the_provider_and_provider_down(site: Site) -> None:
    denied = email()
    await site.person("google", denied, deny=True)
    assert await site.sign_in("google", denied) == {"error": "OAUTH_DENIED"}

    fault = {"status": 503, "count": -1, "path": "/token"}
    await site.browser.post("/sandbox/google/_sandbox/faults", json=fault)
    try:
        back = await site.sign_in("google", email())
    finally:
        await site.browser.delete("/sandbox/google/_sandbox/faults")
    assert back == {"error": "OAUTH_PROVIDER_UNAVAILABLE"}


async def test_unknown_provider_and_a_bad_code(site: Site) -> None:
    answer = await site.browser.get("/auth/facebook/start")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "OAUTH_PROVIDER_UNAVAILABLE"
    for code in ["", "slc_" + "x" * 40, "\x00" * 50, "y" * 100_000]:
        assert error_codes(await exchange(site, code)) in (
            ["UNAUTHENTICATED"],
            ["BAD_USER_INPUT"],
            ["PAYLOAD_TOO_LARGE"],
        )


async def test_unlinking_never_removes_the_last_way_in(site: Site) -> None:
    address = email()
    token = (await exchange(site, (await site.sign_in("google", address))["code"]))["data"][
        "exchangeLoginCode"
    ]["accessToken"]
    accounts = (await gql(site.browser, LINKED, token=token))["data"]["linkedAccounts"]
    refused = await gql(site.browser, UNLINK, {"id": accounts[0]["id"]}, token=token)
    assert error_codes(refused) == ["CONFLICT"]
    # A second linked account makes the first removable.
    await exchange(site, (await site.sign_in("github", address))["code"])
    accounts = (await gql(site.browser, LINKED, token=token))["data"]["linkedAccounts"]
    assert len(accounts) == 2
    removed = await gql(site.browser, UNLINK, {"id": accounts[0]["id"]}, token=token)
    assert "errors" not in removed, removed
    last = await gql(site.browser, UNLINK, {"id": accounts[1]["id"]}, token=token)
    assert error_codes(last) == ["CONFLICT"]

    # Someone else's linked account is not found, and a password user may unlink freely.
    owner = await register(site.browser)
    foreign = await gql(site.browser, UNLINK, {"id": accounts[1]["id"]}, token=owner.token)
    assert error_codes(foreign) == ["NOT_FOUND"]
    await site.person("google", owner.email)
    await exchange(site, (await site.sign_in("google", owner.email))["code"])
    mine = (await gql(site.browser, LINKED, token=owner.token))["data"]["linkedAccounts"]
    ok = await gql(site.browser, UNLINK, {"id": mine[0]["id"]}, token=owner.token)
    assert "errors" not in ok, ok
    still = await gql(site.browser, LOGIN, {"e": owner.email, "p": STRONG_PASSWORD})
    assert "errors" not in still

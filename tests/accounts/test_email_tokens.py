"""Email verification and password reset end to end (tokens read from recorded mail), and
login throttling per account and per address."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from gateway.app import create_app
from kit.security import hash_token
from models.accounts import EmailToken
from models.mail import OutboundEmail
from tests.conftest import STRONG_PASSWORD, Store, error_codes, gql, make_settings, register
from tests.members.test_members import ACCEPT, INVITE, last_token, new_email

ME = "{ me { user { email emailVerified } } }"
VERIFY = "mutation($i: EmailTokenInput!) { verifyEmail(input: $i) { email emailVerified } }"
REQUEST_VERIFICATION = "mutation { requestEmailVerification { ok } }"
REQUEST_RESET = """mutation($i: RequestPasswordResetInput!) {
  requestPasswordReset(input: $i) { ok } }"""
RESET = "mutation($i: ResetPasswordInput!) { resetPassword(input: $i) { ok } }"
LOGIN = "mutation($i: LoginInput!) { login(input: $i) { accessToken refreshToken role } }"
REFRESH = """mutation($i: RefreshTokenInput!) {
  refreshToken(input: $i) { accessToken refreshToken } }"""
NEW_PASSWORD = "a different long passphrase"


def app_with(store: Store, **overrides: str) -> Any:
    return create_app(make_settings(database_url=store.url, **overrides), configure_logs=False)


@asynccontextmanager
async def client_for(app: Any, ip: str) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client calling `app` from address `ip`."""
    transport = httpx.ASGITransport(app=app, client=(ip, 5555))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


async def expire(token: str) -> None:
    await EmailToken.filter(token_hash=hash_token(token)).update(
        expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    )


# Email verification ------------------------------------------------------------------


async def test_registration_mails_a_verification_token(client, owner):
    me = await gql(client, ME, token=owner.token)
    assert me["data"]["me"]["user"]["emailVerified"] is False
    token = await last_token(owner.email, "verify_email")
    # Only a hash of the token is stored.
    assert await EmailToken.filter(token_hash=hash_token(token)).exists()
    assert not await EmailToken.filter(token_hash=token).exists()

    body = await gql(client, VERIFY, {"i": {"token": token}})
    assert body["data"]["verifyEmail"] == {"email": owner.email, "emailVerified": True}
    me = await gql(client, ME, token=owner.token)
    assert me["data"]["me"]["user"]["emailVerified"] is True
    # Single use.
    again = await gql(client, VERIFY, {"i": {"token": token}})
    assert error_codes(again) == ["BAD_USER_INPUT"]
    assert "token" in again["errors"][0]["extensions"]["details"]
    # Verified accounts get no more verification mail.
    before = await OutboundEmail.filter(recipient=owner.email, kind="verify_email").count()
    ok = await gql(client, REQUEST_VERIFICATION, token=owner.token)
    assert ok["data"]["requestEmailVerification"]["ok"] is True
    assert await OutboundEmail.filter(recipient=owner.email, kind="verify_email").count() == before


async def test_verification_token_resent_and_expired(client, owner):
    first = await last_token(owner.email, "verify_email")
    resent = await gql(client, REQUEST_VERIFICATION, token=owner.token)
    assert resent["data"]["requestEmailVerification"]["ok"] is True
    second = await last_token(owner.email, "verify_email")
    assert second != first
    await expire(second)
    expired = await gql(client, VERIFY, {"i": {"token": second}})
    assert error_codes(expired) == ["BAD_USER_INPUT"]
    me = await gql(client, ME, token=owner.token)
    assert me["data"]["me"]["user"]["emailVerified"] is False
    # The earlier, unexpired token still works.
    ok = await gql(client, VERIFY, {"i": {"token": first}})
    assert ok["data"]["verifyEmail"]["emailVerified"] is True
    unknown = await gql(client, VERIFY, {"i": {"token": "not-a-token"}})
    assert error_codes(unknown) == ["BAD_USER_INPUT"]


# Password reset ------------------------------------------------------------------------


async def test_password_reset_flow_revokes_sessions(client, owner):
    body = await gql(client, REQUEST_RESET, {"i": {"email": owner.email.upper()}})
    assert body["data"]["requestPasswordReset"]["ok"] is True
    token = await last_token(owner.email, "reset_password")

    weak = await gql(client, RESET, {"i": {"token": token, "newPassword": "short"}})
    assert error_codes(weak) == ["BAD_USER_INPUT"]
    assert "password" in weak["errors"][0]["extensions"]["details"]
    # The weak attempt did not spend the token, and nothing changed yet.
    still = await gql(client, REFRESH, {"i": {"refreshToken": owner.refresh}})
    assert "errors" not in still, still
    live_refresh = still["data"]["refreshToken"]["refreshToken"]

    done = await gql(client, RESET, {"i": {"token": token, "newPassword": NEW_PASSWORD}})
    assert done["data"]["resetPassword"]["ok"] is True
    # Every session ended: the refresh token that was live before the reset is refused.
    after = await gql(client, REFRESH, {"i": {"refreshToken": live_refresh}})
    assert error_codes(after) == ["UNAUTHENTICATED"]
    assert after["errors"][0]["extensions"].get("reason") != "REFRESH_TOKEN_REUSED"
    old = await gql(client, LOGIN, {"i": {"email": owner.email, "password": STRONG_PASSWORD}})
    assert error_codes(old) == ["UNAUTHENTICATED"]
    new = await gql(client, LOGIN, {"i": {"email": owner.email, "password": NEW_PASSWORD}})
    assert new["data"]["login"]["role"] == "OWNER"
    # Single use.
    reused = await gql(
        client, RESET, {"i": {"token": token, "newPassword": "yet another passphrase"}}
    )
    assert error_codes(reused) == ["BAD_USER_INPUT"]


async def test_expired_reset_token_is_refused(client, owner):
    await gql(client, REQUEST_RESET, {"i": {"email": owner.email}})
    token = await last_token(owner.email, "reset_password")
    await expire(token)
    body = await gql(client, RESET, {"i": {"token": token, "newPassword": NEW_PASSWORD}})
    assert error_codes(body) == ["BAD_USER_INPUT"]
    assert body["errors"][0]["extensions"]["details"] == {"token": "is invalid, used or expired"}
    login = await gql(client, LOGIN, {"i": {"email": owner.email, "password": STRONG_PASSWORD}})
    assert "errors" not in login


async def test_reset_request_for_unknown_email_looks_the_same(client, owner):
    unknown = new_email("nobody")
    known = await gql(client, REQUEST_RESET, {"i": {"email": owner.email}})
    other = await gql(client, REQUEST_RESET, {"i": {"email": unknown}})
    for body in (known, other):
        body.pop("_status")
    assert known == other
    assert known["data"] == {"requestPasswordReset": {"ok": True}}
    assert await OutboundEmail.filter(recipient=owner.email, kind="reset_password").count() == 1
    assert not await OutboundEmail.filter(recipient=unknown).exists()


# Login throttling -----------------------------------------------------------------------


async def test_login_throttled_per_account(store):
    app = app_with(store, login_attempts_per_account="3/minute")
    async with client_for(app, "10.9.0.1") as c:
        acct = await register(c)
        for _ in range(3):
            wrong = await gql(c, LOGIN, {"i": {"email": acct.email, "password": "wrong guess!!"}})
            assert error_codes(wrong) == ["UNAUTHENTICATED"]
        # The fourth attempt is refused before the password is even checked: right or wrong.
        limited = await gql(c, LOGIN, {"i": {"email": acct.email, "password": STRONG_PASSWORD}})
        assert error_codes(limited) == ["RATE_LIMITED"]
        assert limited["errors"][0]["extensions"]["retryAfter"] >= 1
        # Case does not dodge the budget; other accounts keep theirs.
        upper = await gql(c, LOGIN, {"i": {"email": acct.email.upper(), "password": "x"}})
        assert error_codes(upper) == ["RATE_LIMITED"]
        other = await register(c)
        ok = await gql(c, LOGIN, {"i": {"email": other.email, "password": STRONG_PASSWORD}})
        assert "errors" not in ok, ok
        # Unknown accounts are throttled the same way (no hint that they do not exist).
        ghost = new_email("ghost")
        codes = [
            error_codes(await gql(c, LOGIN, {"i": {"email": ghost, "password": "x"}}))
            for _ in range(4)
        ]
        assert codes == [["UNAUTHENTICATED"]] * 3 + [["RATE_LIMITED"]]


async def test_login_throttled_per_address(store):
    app = app_with(store, login_attempts_per_address="3/minute")
    async with client_for(app, "10.9.0.2") as c:
        acct = await register(c)  # registration has its own budget
        for _ in range(3):
            wrong = await gql(c, LOGIN, {"i": {"email": new_email("spray"), "password": "x"}})
            assert error_codes(wrong) == ["UNAUTHENTICATED"]
        # Spraying many accounts from one address hits the address's budget.
        limited = await gql(c, LOGIN, {"i": {"email": acct.email, "password": STRONG_PASSWORD}})
        assert error_codes(limited) == ["RATE_LIMITED"]
        assert limited["errors"][0]["extensions"]["retryAfter"] >= 1
    # Another address keeps its own budget in the same process.
    async with client_for(app, "10.9.0.3") as c:
        ok = await gql(c, LOGIN, {"i": {"email": acct.email, "password": STRONG_PASSWORD}})
        assert "errors" not in ok, ok


async def test_invitation_password_guesses_share_the_login_budget(store):
    app = app_with(store, login_attempts_per_account="3/minute")
    async with client_for(app, "10.9.0.4") as c:
        host = await register(c, org="Host")
        guest = await register(c, org="Guest")
        invited = await gql(
            c, INVITE, {"i": {"email": guest.email, "role": "SUPPORT"}}, token=host.token
        )
        assert "errors" not in invited, invited
        token = await last_token(guest.email)
        for _ in range(3):
            wrong = await gql(c, ACCEPT, {"i": {"token": token, "password": "a wrong guess"}})
            assert error_codes(wrong) == ["UNAUTHENTICATED"]
        limited = await gql(c, ACCEPT, {"i": {"token": token, "password": STRONG_PASSWORD}})
        assert error_codes(limited) == ["RATE_LIMITED"]
        login = await gql(c, LOGIN, {"i": {"email": guest.email, "password": STRONG_PASSWORD}})
        assert error_codes(login) == ["RATE_LIMITED"]
        # Signed in as the invited account, no password is needed, so no budget is spent.
        ok = await gql(c, ACCEPT, {"i": {"token": token}}, token=guest.token)
        assert ok["data"]["acceptInvitation"]["role"] == "SUPPORT"

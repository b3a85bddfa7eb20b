"""Connected accounts, driven over HTTP against the emulators: Google Calendar's offline
grant (code flow with PKCE to a refresh token), Zoom's server-to-server app; the vault;
one renewal for many concurrent callers, in one process and across two; a revoked grant
shown as needing reconnection; disconnecting revokes."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from gateway.app import create_app
from kit.vault import vault_for
from models.identity import ConnectedAccount, OAuthFlow
from resolvers.identity import connections
from tests.conftest import Account, error_codes, gql, make_settings, register
from tests.identity.conftest import FRONT_END, Site

CONNECT = """mutation($s: ConnectScope!) { connectGoogleCalendar(input: {scope: $s}) {
  authorizationUrl } }"""
CONNECT_ZOOM = """mutation($i: ConnectZoomInput!) { connectZoom(input: $i) {
  connectedAccount { id provider scope status email } } }"""
ACCOUNTS = """{ connectedAccounts { id provider scope status email scopes lastError
  accessExpiresAt } }"""
DISCONNECT = """mutation($id: ID!) { disconnectAccount(input: {id: $id}) {
  connectedAccount { id } } }"""
HEALTH = """{ integrationHealth { provider status } }"""
INVITE = """mutation($e: String!, $r: Role!) { inviteMember(input: {email: $e, role: $r}) {
  invitation { id } } }"""


async def connect_calendar(site: Site, owner: Account, scope: str = "USER") -> dict[str, str]:
    started = await gql(site.browser, CONNECT, {"s": scope}, owner.token)
    assert "errors" not in started, started
    url = started["data"]["connectGoogleCalendar"]["authorizationUrl"]
    query = dict(parse_qsl(urlsplit(url).query))
    assert query["access_type"] == "offline" and query["prompt"] == "consent"
    assert "https://www.googleapis.com/auth/calendar" in query["scope"].split()
    assert query["code_challenge_method"] == "S256" and query["login_hint"] == owner.email
    at_google = await site.browser.get(url)
    assert at_google.status_code == 302, at_google.text
    back = await site.browser.get(at_google.headers["location"])
    assert back.status_code == 302, back.text
    location = back.headers["location"]
    assert location.startswith(f"{FRONT_END}/connections/callback#"), location
    return dict(parse_qsl(urlsplit(location).fragment))


async def accounts(site: Site, owner: Account) -> list[dict[str, Any]]:
    body = await gql(site.browser, ACCOUNTS, token=owner.token)
    assert "errors" not in body, body
    return list(body["data"]["connectedAccounts"])


async def refreshes(site: Site) -> int:
    got = await site.browser.get(
        "/sandbox/google_calendar/_sandbox/requests", params={"path": "/token"}
    )
    return sum("grant_type=refresh_token" in str(r["body"]) for r in got.json()["requests"])


def services(site: Site) -> Any:
    return site.app.state.services


async def expire(account_id: int) -> None:
    """The stored access token is past its time (as an hour later)."""
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    await ConnectedAccount.filter(id=account_id).update(access_expires_at=past)


async def the_row(owner: Account) -> ConnectedAccount:
    [row] = await ConnectedAccount.filter(email=owner.email)
    return row


async def test_a_member_connects_their_calendar_and_the_grant_is_in_the_vault(site: Site) -> None:
    owner = await register(site.browser)
    assert await connect_calendar(site, owner) == {"connected": "GOOGLE_CALENDAR"}
    [account] = await accounts(site, owner)
    assert account["provider"] == "GOOGLE_CALENDAR" and account["scope"] == "USER"
    assert account["status"] == "CONNECTED" and account["email"] == owner.email
    assert "https://www.googleapis.com/auth/calendar" in account["scopes"]
    row = await the_row(owner)
    vault = vault_for(site.app.state.services.settings.vault_keys)
    # Both tokens are vault tokens, never the provider's text.
    assert vault.decrypt(row.refresh_token).startswith("1//")
    assert vault.decrypt(row.access_token).startswith("ya29.")
    assert "1//" not in row.refresh_token and "ya29." not in row.access_token
    # The state worked once.
    flow = await OAuthFlow.filter(user_id=row.user_id, provider="google_calendar").first()
    assert flow is not None and flow.used_at is not None


async def test_fifty_concurrent_callers_renew_once(site: Site) -> None:
    owner = await register(site.browser)
    await connect_calendar(site, owner)
    row = await the_row(owner)
    await expire(row.id)
    before = await refreshes(site)
    tokens = await asyncio.gather(
        *(connections.access_token(services(site), row.id) for _ in range(50))
    )
    assert len(set(tokens)) == 1
    assert await refreshes(site) == before + 1
    fresh = await ConnectedAccount.get(id=row.id)
    assert fresh.access_expires_at > dt.datetime.now(dt.UTC) + dt.timedelta(minutes=30)
    assert fresh.version > row.version and fresh.renewing_until is None


async def test_two_processes_renew_once_between_them(site: Site, store: Any) -> None:
    """Another gateway process (its own Services: its own locks) on the same store: the
    row decides, and the loser reads the winner's token."""
    owner = await register(site.browser)
    await connect_calendar(site, owner)
    row = await the_row(owner)
    other = create_app(
        make_settings(
            database_url=store.url,
            public_url=site.url,
            vault_keys=services(site).settings.vault_keys,
        ),
        configure_logs=False,
    )
    try:
        await expire(row.id)
        before = await refreshes(site)
        tokens = await asyncio.gather(
            *(
                connections.access_token(services(site) if i % 2 else other.state.services, row.id)
                for i in range(40)
            )
        )
        assert len(set(tokens)) == 1
        assert await refreshes(site) == before + 1
    finally:
        await other.state.services.providers.aclose()


async def test_a_renewer_that_died_holds_the_row_only_until_its_lease_ends(site: Site) -> None:
    """Another process took the row to renew it and never wrote back (it crashed): callers
    wait for its lease, then one of them renews."""
    owner = await register(site.browser)
    await connect_calendar(site, owner)
    row = await the_row(owner)
    await expire(row.id)
    held = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=0.5)
    await ConnectedAccount.filter(id=row.id).update(version=row.version + 1, renewing_until=held)
    before = await refreshes(site)
    tokens = await asyncio.gather(
        *(connections.access_token(services(site), row.id) for _ in range(5))
    )
    assert len(set(tokens)) == 1
    assert await refreshes(site) == before + 1
    assert dt.datetime.now(dt.UTC) >= held  # nobody renewed under the other's lease


async def test_a_refused_token_is_renewed_once_unless_already_renewed(site: Site) -> None:
    owner = await register(site.browser)
    await connect_calendar(site, owner)
    row = await the_row(owner)
    first = await connections.access_token(services(site), row.id)
    before = await refreshes(site)
    # Both callers were refused with the same token: one renewal serves both.
    a, b = await asyncio.gather(
        connections.access_token(services(site), row.id, stale=first),
        connections.access_token(services(site), row.id, stale=first),
    )
    assert a == b != first
    assert await refreshes(site) == before + 1


async def test_a_revoked_grant_needs_reconnection(site: Site) -> None:
    owner = await register(site.browser)
    await connect_calendar(site, owner)
    row = await the_row(owner)
    revoked = await site.browser.post(
        "/sandbox/google_calendar/_sandbox/revoke", json={"email": owner.email}
    )
    assert revoked.json()["revoked"] == 1
    await expire(row.id)
    with pytest.raises(connections.ConnectionRequired) as caught:
        await connections.access_token(services(site), row.id)
    assert caught.value.extensions["reason"] == "NEEDS_RECONNECTION"
    [account] = await accounts(site, owner)
    assert account["status"] == "NEEDS_RECONNECTION" and "invalid_grant" in account["lastError"]
    health = await gql(site.browser, HEALTH, token=owner.token)
    statuses = {p["provider"]: p["status"] for p in health["data"]["integrationHealth"]}
    assert statuses["GOOGLE_CALENDAR"] == "NEEDS_RECONNECTION"
    assert (await ConnectedAccount.get(id=row.id)).access_token == ""
    # Connecting again mends it.
    assert await connect_calendar(site, owner) == {"connected": "GOOGLE_CALENDAR"}
    [account] = await accounts(site, owner)
    assert account["status"] == "CONNECTED" and account["lastError"] is None
    health = await gql(site.browser, HEALTH, token=owner.token)
    statuses = {p["provider"]: p["status"] for p in health["data"]["integrationHealth"]}
    assert statuses["GOOGLE_CALENDAR"] == "SANDBOX"


async def test_disconnecting_revokes_the_grant(site: Site) -> None:
    owner = await register(site.browser)
    await connect_calendar(site, owner)
    [account] = await accounts(site, owner)
    row = await the_row(owner)
    refresh = vault_for(services(site).settings.vault_keys).decrypt(row.refresh_token)
    gone = await gql(site.browser, DISCONNECT, {"id": account["id"]}, owner.token)
    assert "errors" not in gone, gone
    assert await accounts(site, owner) == []
    sandbox = services(site).sandboxes["google_calendar"]
    assert sandbox.refresh[refresh].revoked


async def test_the_organizations_calendar_and_who_may_use_what(site: Site) -> None:
    owner = await register(site.browser)
    other_org = await register(site.browser)
    # Only an OWNER connects the organization's calendar.
    assert await connect_calendar(site, owner, "TENANT") == {"connected": "GOOGLE_CALENDAR"}
    [tenant_account] = await accounts(site, owner)
    assert tenant_account["scope"] == "TENANT"
    # Another organization sees none of it, and cannot disconnect it.
    assert await accounts(site, other_org) == []
    foreign = await gql(site.browser, DISCONNECT, {"id": tenant_account["id"]}, other_org.token)
    assert error_codes(foreign) == ["NOT_FOUND"]
    # A state used twice, or forged, connects nothing.
    started = await gql(site.browser, CONNECT, {"s": "USER"}, owner.token)
    url = started["data"]["connectGoogleCalendar"]["authorizationUrl"]
    callback = (await site.browser.get(url)).headers["location"]
    assert (
        (await site.browser.get(callback))
        .headers["location"]
        .endswith("#connected=GOOGLE_CALENDAR")
    )
    again = await site.browser.get(callback)
    assert again.headers["location"].endswith("#error=OAUTH_STATE_INVALID")


async def test_zoom_connects_with_the_organizations_app(site: Site) -> None:
    owner = await register(site.browser)
    refused = await gql(
        site.browser,
        CONNECT_ZOOM,
        {"i": {**zoom_app(site), "clientSecret": "invalid-secret-1234"}},
        owner.token,
    )
    assert error_codes(refused) == ["BAD_USER_INPUT"], refused
    body = await gql(
        site.browser,
        CONNECT_ZOOM,
        {"i": zoom_app(site)},
        owner.token,
    )
    assert "errors" not in body, body
    account = body["data"]["connectZoom"]["connectedAccount"]
    assert (account["provider"], account["scope"], account["status"]) == (
        "ZOOM",
        "TENANT",
        "CONNECTED",
    )
    assert account["email"] == "host@acct1.zoom.test"
    row = await ConnectedAccount.get(tenant_id=(await the_tenant(owner)), provider="zoom")
    # The app withdrawn at Zoom: the next renewal marks the account.
    await site.browser.post("/sandbox/zoom/_sandbox/revoke", json={"client_id": "cid"})
    await expire(row.id)
    with pytest.raises(connections.ConnectionRequired):
        await connections.access_token(services(site), row.id)
    [shown] = [a for a in await accounts(site, owner) if a["provider"] == "ZOOM"]
    assert shown["status"] == "NEEDS_RECONNECTION"
    gone = await gql(site.browser, DISCONNECT, {"id": shown["id"]}, owner.token)
    assert "errors" not in gone, gone
    assert not await ConnectedAccount.filter(id=row.id).exists()


def zoom_app(site: Site) -> dict[str, str]:
    return {
        "accountId": "acct1",
        "clientId": "cid",
        "clientSecret": "zoom-secret-1234",
        "baseUrl": f"{site.url}/sandbox/zoom",
    }


async def the_tenant(owner: Account) -> int:
    from schema.relay import decode_id

    return decode_id(owner.org_id)

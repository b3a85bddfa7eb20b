"""An organization's own OpenID Connect provider (the Google emulator plays it): set up by
its OWNER through the outbound guard, people joining through it with the default role,
and, when required, members' other ways in refused."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import STRONG_PASSWORD, error_codes, gql, register
from tests.identity.conftest import Site
from tests.identity.test_sign_in import EXCHANGE, LOGIN

CONFIGURE = """mutation($i: ConfigureSingleSignOnInput!) {
  configureSingleSignOn(input: $i) { singleSignOn { issuer clientId required defaultRole
    signInPath callbackUrl } } }"""
READ = "{ singleSignOn { issuer required signInPath } }"
SWITCH = """mutation($id: ID!) { switchTenant(input: {organizationId: $id}) { accessToken } }"""
LOGIN_TO = """mutation($e: String!, $p: String!, $o: ID!) {
  login(input: {email: $e, password: $p, organizationId: $o}) { accessToken role } }"""


def settings_for(site: Site, **more: object) -> dict[str, object]:
    return {
        "issuer": f"{site.url}/sandbox/google",
        "clientId": "acme-sso",
        "clientSecret": "s3cret-" + uuid.uuid4().hex,
        "required": False,
        "defaultRole": "SUPPORT",
        **more,
    }


async def sso_sign_in(site: Site, path: str, address: str) -> dict[str, str]:
    started = await site.browser.get(path, params={"login_hint": address})
    assert started.status_code == 302, started.text
    return await site.back(await site.at_provider(started.headers["location"]))


async def test_people_join_through_the_organizations_provider(site: Site) -> None:
    owner = await register(site.browser, org="Acme SSO")
    saved = await gql(site.browser, CONFIGURE, {"i": settings_for(site)}, token=owner.token)
    assert "errors" not in saved, saved
    sso = saved["data"]["configureSingleSignOn"]["singleSignOn"]
    assert sso["callbackUrl"] == f"{site.url}/auth/sso/callback"
    assert "clientSecret" not in sso

    address = f"joiner-{uuid.uuid4().hex[:8]}@example.com"
    back = await sso_sign_in(site, sso["signInPath"], address)
    joined = (await gql(site.browser, EXCHANGE, {"code": back["code"]}))["data"]
    assert joined["exchangeLoginCode"]["role"] == "SUPPORT"
    # Joined with SUPPORT: managing single sign-on is the OWNER's.
    token = joined["exchangeLoginCode"]["accessToken"]
    refused = await gql(site.browser, CONFIGURE, {"i": settings_for(site)}, token=token)
    assert error_codes(refused) == ["FORBIDDEN"]
    assert error_codes(await gql(site.browser, READ, token=token)) == ["FORBIDDEN"]


async def test_required_sso_refuses_members_other_ways_in(site: Site) -> None:
    owner = await register(site.browser, org="Strict")
    saved = await gql(
        site.browser, CONFIGURE, {"i": settings_for(site, required=True)}, token=owner.token
    )
    path = saved["data"]["configureSingleSignOn"]["singleSignOn"]["signInPath"]
    # A person with a password account of their own joins through the provider.
    member = await register(site.browser, org="Own")
    await site.person("google", member.email)
    back = await sso_sign_in(site, path, member.email)
    assert "code" in back, back
    session = (await gql(site.browser, EXCHANGE, {"code": back["code"]}))["data"]
    assert session["exchangeLoginCode"]["user"]["id"] == member.user_id
    # Their password opens their own organization, not the strict one.
    own = await gql(site.browser, LOGIN, {"e": member.email, "p": STRONG_PASSWORD})
    assert "errors" not in own, own
    strict = await gql(
        site.browser, LOGIN_TO, {"e": member.email, "p": STRONG_PASSWORD, "o": owner.org_id}
    )
    assert error_codes(strict) == ["SSO_REQUIRED"]
    switched = await gql(site.browser, SWITCH, {"id": owner.org_id}, token=member.token)
    assert error_codes(switched) == ["SSO_REQUIRED"]
    # The OWNER keeps the password way in (when the provider is down, say).
    mine = await gql(site.browser, LOGIN, {"e": owner.email, "p": STRONG_PASSWORD})
    assert "errors" not in mine


@pytest.mark.parametrize(
    ("issuer", "field"),
    [
        ("http://169.254.169.254/latest", "issuer"),  # cloud metadata
        ("http://10.0.0.7", "issuer"),
        ("file:///etc/passwd", "issuer"),
        ("", "issuer"),
    ],
)
async def test_an_issuer_inside_the_network_or_not_a_url_is_refused(
    site: Site, issuer: str, field: str
) -> None:
    owner = await register(site.browser)
    body = await gql(
        site.browser, CONFIGURE, {"i": settings_for(site, issuer=issuer)}, token=owner.token
    )
    assert error_codes(body) == ["BAD_USER_INPUT"], body
    assert field in body["errors"][0]["extensions"]["details"]
    assert (await gql(site.browser, READ, token=owner.token))["data"]["singleSignOn"] is None


async def test_not_an_openid_provider_and_an_owner_default_role(site: Site) -> None:
    owner = await register(site.browser)
    plain = await gql(
        site.browser,
        CONFIGURE,
        {"i": settings_for(site, issuer=f"{site.url}/health")},
        token=owner.token,
    )
    assert error_codes(plain) == ["BAD_USER_INPUT"]
    owner_role = await gql(
        site.browser, CONFIGURE, {"i": settings_for(site, defaultRole="OWNER")}, token=owner.token
    )
    assert error_codes(owner_role) == ["BAD_USER_INPUT"]
    unknown = await site.browser.get("/auth/sso/no-such-org/start")
    assert unknown.status_code == 404

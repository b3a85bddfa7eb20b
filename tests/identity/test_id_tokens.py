"""The ID token's checks (providers/oauth.py, with authlib) against the Google emulator's
published keys: only a token the issuer signed, for this client, with this sign-in's
nonce, not expired, signs anybody in."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from providers.oauth import SignInRefused, _verified_claims, oidc_discovery
from providers.sandbox.google import _signing_key
from resolvers.upstream import provider_registry
from tests.identity.conftest import Site

CLIENT = "switchboard-sandbox"
NONCE = "n-0S6_WzA2Mj"


def token(issuer: str, key: Any = None, kid: str | None = None, **changes: Any) -> str:
    own_key, own_kid = _signing_key()
    now = int(time.time())
    claims = {
        "iss": issuer,
        "aud": CLIENT,
        "sub": "1234567890",
        "email": "a@example.com",
        "email_verified": True,
        "nonce": NONCE,
        "iat": now,
        "exp": now + 600,
        **changes,
    }
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key or own_key, algorithm="RS256", headers={"kid": kid or own_kid})


@pytest.mark.parametrize(
    "case",
    ["other key", "other audience", "other nonce", "no nonce", "expired", "other issuer", "none"],
)
async def test_a_token_the_issuer_did_not_make_for_this_sign_in_is_refused(
    site: Site, case: str
) -> None:
    http = provider_registry(site.app.state.services).http("google")
    issuer = f"{site.url}/sandbox/google"
    document = await oidc_discovery(http, issuer)
    good = token(issuer)
    claims = await _verified_claims(http, document, good, CLIENT, NONCE)
    assert claims["sub"] == "1234567890"

    bad = {
        "other key": lambda: token(
            issuer, key=rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ),
        "other audience": lambda: token(issuer, aud="someone-else"),
        "other nonce": lambda: token(issuer, nonce="replayed"),
        "no nonce": lambda: token(issuer, nonce=None),
        "expired": lambda: token(issuer, exp=int(time.time()) - 3600, iat=int(time.time()) - 7200),
        "other issuer": lambda: token("https://accounts.example.org"),
        "none": lambda: jwt.encode({"iss": issuer, "aud": CLIENT, "nonce": NONCE}, None, "none"),
    }[case]()
    with pytest.raises(SignInRefused) as refused:
        await _verified_claims(http, document, bad, CLIENT, NONCE)
    assert refused.value.code == "OAUTH_ID_TOKEN_INVALID"

"""Sign-in with an outside account: Google (OpenID Connect) and GitHub (OAuth 2.0), both
as the authorization code flow with PKCE, over the shared provider layer.

authlib supplies the protocol's parts: the random state, nonce and verifier, the S256
challenge, and the ID token's checks (signature against the issuer's published keys,
issuer, audience, expiry, nonce: `authlib.oidc.core.CodeIDToken`). GitHub has no ID token:
the identity is its user and the verified primary email from its emails API.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from authlib.common.security import generate_token
from authlib.jose import JsonWebKey, jwt
from authlib.jose.errors import JoseError
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import CodeIDToken
from joserfc.errors import JoseError as RfcJoseError  # what authlib.jose raises now

from providers.errors import ProviderError
from providers.http import ProviderConfig, ProviderHTTP, Timeouts
from providers.retry import RetryPolicy

GOOGLE = ProviderConfig(
    name="google",
    timeouts=Timeouts(connect=5.0, read=10.0, total=15.0),
    retry=RetryPolicy(max_attempts=3, base=0.3, cap=2.0, budget=10.0),
)
GITHUB = ProviderConfig(
    name="github",
    timeouts=Timeouts(connect=5.0, read=10.0, total=15.0),
    retry=RetryPolicy(max_attempts=3, base=0.3, cap=2.0, budget=10.0),
)
_DISCOVERY_SECONDS = 3600.0
_discovered: dict[str, tuple[float, dict[str, Any]]] = {}
_keys: dict[str, tuple[float, Any]] = {}


class SignInRefused(Exception):
    """The provider's answer does not sign anybody in: `code` says why (a bad or reused
    code, an ID token that fails its checks, no verified email)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Identity:
    provider: str
    subject: str  # the provider's stable id for the person
    email: str
    email_verified: bool
    name: str


@dataclass(frozen=True)
class Secrets:
    """What one sign-in attempt keeps on the gateway's side until the callback."""

    state: str
    verifier: str
    nonce: str

    @classmethod
    def new(cls) -> Secrets:
        return cls(state=generate_token(43), verifier=generate_token(64), nonce=generate_token(32))

    @property
    def challenge(self) -> str:
        return str(create_s256_code_challenge(self.verifier))


def _form(values: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    return urlencode(values), {"Content-Type": "application/x-www-form-urlencoded"}


def _refused(err: ProviderError) -> SignInRefused:
    return SignInRefused("OAUTH_CODE_REFUSED", f"The provider refused the sign-in: {err}")


# Google ------------------------------------------------------------------------------


async def google_discovery(http: ProviderHTTP, issuer: str) -> dict[str, Any]:
    """The issuer's OpenID configuration (cached for an hour per process)."""
    cached = _discovered.get(issuer)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    url = f"{issuer.rstrip('/')}/.well-known/openid-configuration"
    answer = await http.request("GET", url, operation="oidc.discovery")
    document = answer.json()
    if not isinstance(document, dict) or document.get("issuer") != issuer.rstrip("/"):
        raise ProviderError(http.config.name, "oidc.discovery", message="issuer mismatch")
    _discovered[issuer] = (time.monotonic() + _DISCOVERY_SECONDS, document)
    return document


async def _jwks(http: ProviderHTTP, uri: str, *, refresh: bool = False) -> Any:
    cached = _keys.get(uri)
    if cached is not None and cached[0] > time.monotonic() and not refresh:
        return cached[1]
    answer = await http.request("GET", uri, operation="oidc.keys")
    keys = JsonWebKey.import_key_set(answer.json())
    _keys[uri] = (time.monotonic() + _DISCOVERY_SECONDS, keys)
    return keys


async def google_authorize_url(
    http: ProviderHTTP,
    *,
    issuer: str,
    client_id: str,
    redirect_uri: str,
    secrets: Secrets,
    login_hint: str | None = None,
) -> str:
    document = await google_discovery(http, issuer)
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": "openid email profile",
        "state": secrets.state,
        "nonce": secrets.nonce,
        "code_challenge": secrets.challenge,
        "code_challenge_method": "S256",
        "prompt": "select_account",
    }
    if login_hint:
        params["login_hint"] = login_hint
    return f"{document['authorization_endpoint']}?{urlencode(params)}"


async def google_identity(
    http: ProviderHTTP,
    *,
    issuer: str,
    client_id: str,
    client_secret: str,
    code: str,
    redirect_uri: str,
    secrets: Secrets,
) -> Identity:
    """Redeem the code (with the PKCE verifier) and check the ID token it brings."""
    document = await google_discovery(http, issuer)
    body, headers = _form(
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": client_id,
            "client_secret": client_secret,
            "code_verifier": secrets.verifier,
        }
    )
    try:
        answer = await http.request(
            "POST", document["token_endpoint"], operation="oauth.token", data=body, headers=headers
        )
    except ProviderError as err:
        if err.status is not None and 400 <= err.status < 500:
            raise _refused(err) from None
        raise
    id_token = (answer.json() or {}).get("id_token")
    if not isinstance(id_token, str):
        raise SignInRefused("OAUTH_ID_TOKEN_INVALID", "The provider sent no ID token.")
    claims = await _verified_claims(http, document, id_token, client_id, secrets.nonce)
    email = str(claims.get("email") or "").strip().lower()
    if not email:
        raise SignInRefused("OAUTH_EMAIL_MISSING", "The provider shared no email address.")
    return Identity(
        provider="google",
        subject=str(claims["sub"]),
        email=email,
        email_verified=claims.get("email_verified") is True,
        name=str(claims.get("name") or ""),
    )


async def _verified_claims(
    http: ProviderHTTP, document: dict[str, Any], id_token: str, client_id: str, nonce: str
) -> Any:
    options = {
        "iss": {"essential": True, "value": document["issuer"]},
        "sub": {"essential": True},
        "nonce": {"essential": True},
    }
    params = {"nonce": nonce, "client_id": client_id}
    for refresh in (False, True):  # a key rotated since the cache filled: fetch once more
        keys = await _jwks(http, document["jwks_uri"], refresh=refresh)
        try:
            claims = jwt.decode(
                id_token,
                keys,
                claims_cls=CodeIDToken,
                claims_options=options,
                claims_params=params,
            )
            claims.validate(leeway=60)
            return claims
        except ValueError:  # authlib: no key with the token's kid
            continue
        except (JoseError, RfcJoseError, json.JSONDecodeError) as exc:
            raise SignInRefused("OAUTH_ID_TOKEN_INVALID", f"The ID token failed: {exc}") from None
    raise SignInRefused("OAUTH_ID_TOKEN_INVALID", "The ID token's key is not the issuer's.")


# GitHub ------------------------------------------------------------------------------


def github_authorize_url(
    *, base_url: str, client_id: str, redirect_uri: str, secrets: Secrets, login: str | None
) -> str:
    params = {
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": "read:user user:email",
        "state": secrets.state,
        "code_challenge": secrets.challenge,
        "code_challenge_method": "S256",
        "allow_signup": "true",
    }
    if login:
        params["login"] = login
    return f"{base_url.rstrip('/')}/login/oauth/authorize?{urlencode(params)}"


async def github_identity(
    http: ProviderHTTP,
    *,
    base_url: str,
    api_url: str,
    client_id: str,
    client_secret: str,
    code: str,
    redirect_uri: str,
    secrets: Secrets,
) -> Identity:
    body, headers = _form(
        {
            "client_id": client_id,
            "client_secret": client_secret,
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": secrets.verifier,
        }
    )
    try:
        answer = await http.request(
            "POST",
            f"{base_url.rstrip('/')}/login/oauth/access_token",
            operation="oauth.token",
            data=body,
            headers={**headers, "Accept": "application/json"},
        )
    except ProviderError as err:
        if err.status is not None and 400 <= err.status < 500:
            raise _refused(err) from None
        raise
    token = (answer.json() or {}).get("access_token")
    if not isinstance(token, str) or not token:
        # GitHub answers a bad code with 200 and {"error": "bad_verification_code"}.
        raise SignInRefused("OAUTH_CODE_REFUSED", "GitHub refused the sign-in code.")
    auth = {"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json"}
    api = api_url.rstrip("/")
    user = (await http.request("GET", f"{api}/user", operation="user", headers=auth)).json()
    emails = (
        await http.request("GET", f"{api}/user/emails", operation="user.emails", headers=auth)
    ).json()
    primary = next(
        (e for e in emails or [] if isinstance(e, dict) and e.get("primary")),
        None,
    )
    if primary is None or not primary.get("email"):
        raise SignInRefused("OAUTH_EMAIL_MISSING", "GitHub shared no primary email address.")
    return Identity(
        provider="github",
        subject=str(user["id"]),
        email=str(primary["email"]).strip().lower(),
        email_verified=primary.get("verified") is True,
        name=str(user.get("name") or user.get("login") or ""),
    )

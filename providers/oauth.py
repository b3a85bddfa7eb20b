"""Sign-in with an outside account: Google (OpenID Connect) and GitHub (OAuth 2.0), both
as the authorization code flow with PKCE, over the shared provider layer; and the OAuth
parts of connected accounts (an API reached with a renewable access token): offline
grants with a refresh token, renewal, revocation, and `OAuthApiClient`, the base of a
vendor client whose calls carry an access token from a `TokenSource` (renewed once and
the call made again when the vendor answers 401).

authlib supplies the protocol's parts: the random state, nonce and verifier and the S256
challenge; its JOSE library, joserfc (which authlib's own `authlib.jose` now defers to),
the ID token's checks: signature against the issuer's published keys, issuer, audience,
authorized party, expiry, nonce. GitHub has no ID token: the identity is its user and the
verified primary email from its emails API.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlencode

from authlib.common.security import generate_token
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from providers.errors import ProviderError
from providers.http import (
    ErrorParser,
    ProviderConfig,
    ProviderHTTP,
    ProviderResponse,
    Timeouts,
    default_error_parser,
)
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


async def _redeem(
    http: ProviderHTTP, url: str, form: Mapping[str, str], *, guard: bool
) -> ProviderResponse:
    """POST the code to the token endpoint; a 4xx (a bad, used or stolen code, a wrong
    verifier) refuses the sign-in, other failures are the provider's."""
    try:
        return await http.request(
            "POST",
            url,
            operation="oauth.token",
            data=urlencode(form),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
            },
            guard_url=guard,
        )
    except ProviderError as err:
        if err.status is not None and 400 <= err.status < 500:
            raise SignInRefused(
                "OAUTH_CODE_REFUSED", f"The provider refused the sign-in: {err}"
            ) from None
        raise


# Google, and any OpenID Connect issuer ---------------------------------------------


async def oidc_discovery(http: ProviderHTTP, issuer: str, *, guard: bool = False) -> dict[str, Any]:
    """The issuer's OpenID configuration (cached for an hour per process). `guard`: the
    issuer was set by a tenant (single sign-on), so every URL goes through the outbound
    address guard."""
    cached = _discovered.get(issuer)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    url = f"{issuer.rstrip('/')}/.well-known/openid-configuration"
    answer = await http.request("GET", url, operation="oidc.discovery", guard_url=guard)
    document = answer.json()
    if not isinstance(document, dict) or document.get("issuer") != issuer.rstrip("/"):
        raise ProviderError(http.config.name, "oidc.discovery", message="issuer mismatch")
    for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        if not isinstance(document.get(name), str):
            raise ProviderError(http.config.name, "oidc.discovery", message=f"no {name}")
    _discovered[issuer] = (time.monotonic() + _DISCOVERY_SECONDS, document)
    return document


async def _jwks(http: ProviderHTTP, uri: str, *, refresh: bool = False, guard: bool) -> Any:
    cached = _keys.get(uri)
    if cached is not None and cached[0] > time.monotonic() and not refresh:
        return cached[1]
    answer = await http.request("GET", uri, operation="oidc.keys", guard_url=guard)
    try:
        keys = KeySet.import_key_set(answer.json())
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise ProviderError(http.config.name, "oidc.keys", message=f"bad key set: {exc}") from None
    _keys[uri] = (time.monotonic() + _DISCOVERY_SECONDS, keys)
    return keys


async def oidc_authorize_url(
    http: ProviderHTTP,
    *,
    issuer: str,
    client_id: str,
    redirect_uri: str,
    secrets: Secrets,
    login_hint: str | None = None,
    prompt: str | None = None,
    guard: bool = False,
    scope: str = "openid email profile",
    extra: Mapping[str, str] | None = None,
) -> str:
    """The issuer's authorization URL for this attempt; `extra`: more parameters (Google's
    `access_type=offline` for a refresh token, `include_granted_scopes`)."""
    document = await oidc_discovery(http, issuer, guard=guard)
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": scope,
        "state": secrets.state,
        "nonce": secrets.nonce,
        "code_challenge": secrets.challenge,
        "code_challenge_method": "S256",
    }
    if prompt:
        params["prompt"] = prompt
    if login_hint:
        params["login_hint"] = login_hint
    params.update(extra or {})
    return f"{document['authorization_endpoint']}?{urlencode(params)}"


async def oidc_identity(
    http: ProviderHTTP,
    *,
    issuer: str,
    client_id: str,
    client_secret: str,
    code: str,
    redirect_uri: str,
    secrets: Secrets,
    guard: bool = False,
    provider: str = "google",
) -> Identity:
    """Redeem the code (with the PKCE verifier) and check the ID token it brings: Google,
    or (`provider`, `guard`) an organization's own OpenID Connect issuer."""
    identity, _tokens = await oidc_grant(
        http,
        issuer=issuer,
        client_id=client_id,
        client_secret=client_secret,
        code=code,
        redirect_uri=redirect_uri,
        secrets=secrets,
        guard=guard,
        provider=provider,
    )
    return identity


async def oidc_grant(
    http: ProviderHTTP,
    *,
    issuer: str,
    client_id: str,
    client_secret: str,
    code: str,
    redirect_uri: str,
    secrets: Secrets,
    guard: bool = False,
    provider: str = "google",
) -> tuple[Identity, Tokens]:
    """`oidc_identity`, and the tokens the code was redeemed for (a connected account
    keeps them: the refresh token of an offline grant, the first access token)."""
    document = await oidc_discovery(http, issuer, guard=guard)
    answer = await _redeem(
        http,
        document["token_endpoint"],
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": client_id,
            "client_secret": client_secret,
            "code_verifier": secrets.verifier,
        },
        guard=guard,
    )
    body = answer.json() or {}
    id_token = body.get("id_token")
    if not isinstance(id_token, str):
        raise SignInRefused("OAUTH_ID_TOKEN_INVALID", "The provider sent no ID token.")
    claims = await _verified_claims(http, document, id_token, client_id, secrets.nonce, guard)
    email = str(claims.get("email") or "").strip().lower()
    if not email:
        raise SignInRefused("OAUTH_EMAIL_MISSING", "The provider shared no email address.")
    identity = Identity(
        provider=provider,
        subject=str(claims["sub"]),
        email=email,
        email_verified=claims.get("email_verified") is True,
        name=str(claims.get("name") or ""),
    )
    try:
        tokens = Tokens.of(body)
    except ValueError:
        raise SignInRefused("OAUTH_CODE_REFUSED", "The provider sent no access token.") from None
    return identity, tokens


async def _verified_claims(
    http: ProviderHTTP,
    document: dict[str, Any],
    id_token: str,
    client_id: str,
    nonce: str,
    guard: bool = False,
) -> Any:
    registry = jwt.JWTClaimsRegistry(
        leeway=60,
        iss={"essential": True, "value": document["issuer"]},
        aud={"essential": True, "value": client_id},
        sub={"essential": True},
        exp={"essential": True},
        nonce={"essential": True, "value": nonce},
    )
    for refresh in (False, True):  # a key rotated since the cache filled: fetch once more
        keys = await _jwks(http, document["jwks_uri"], refresh=refresh, guard=guard)
        try:
            token = jwt.decode(id_token, keys, algorithms=["RS256", "ES256"])
            registry.validate(token.claims)
        except InvalidKeyIdError:
            continue
        except (JoseError, ValueError) as exc:
            raise SignInRefused("OAUTH_ID_TOKEN_INVALID", f"The ID token failed: {exc}") from None
        claims = token.claims
        audience = claims.get("aud")
        if isinstance(audience, list) and len(audience) > 1 and claims.get("azp") != client_id:
            raise SignInRefused("OAUTH_ID_TOKEN_INVALID", "The ID token is for another client.")
        return claims
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
    answer = await _redeem(
        http,
        f"{base_url.rstrip('/')}/login/oauth/access_token",
        {
            "client_id": client_id,
            "client_secret": client_secret,
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": secrets.verifier,
        },
        guard=False,
    )
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


# Connected accounts: tokens, renewal, revocation ----------------------------------------


@dataclass(frozen=True)
class Tokens:
    """What a token endpoint answered (never printed: the secrets are out of `repr`)."""

    access_token: str = field(repr=False)
    expires_in: int  # seconds
    refresh_token: str | None = field(default=None, repr=False)
    scope: str = ""

    @classmethod
    def of(cls, body: Any) -> Tokens:
        """From a token endpoint's JSON answer; ValueError when it carries no token."""
        if not isinstance(body, dict):
            raise ValueError("not a token answer")
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise ValueError("no access token")
        try:
            expires = int(body.get("expires_in") or 3600)
        except (TypeError, ValueError):
            expires = 3600
        refresh = body.get("refresh_token")
        return cls(
            access_token=token,
            expires_in=max(0, min(expires, 366 * 86400)),
            refresh_token=refresh if isinstance(refresh, str) and refresh else None,
            scope=str(body.get("scope") or ""),
        )


class GrantRevoked(Exception):
    """The token endpoint refused the grant itself (a refresh token revoked or expired, an
    app's credentials withdrawn): no retry helps; a person has to connect again."""

    def __init__(self, provider: str, code: str, message: str) -> None:
        super().__init__(message)
        self.provider = provider
        self.code = code


# The OAuth error codes that mean "this grant is gone" (RFC 6749 5.2), as opposed to a
# call that failed: the refresh token, or the app's own credentials (Zoom's
# server-to-server apps), are no longer accepted.
REVOKED_CODES = frozenset({"invalid_grant", "invalid_client", "unauthorized_client"})


def revoked(err: ProviderError) -> bool:
    return err.status in (400, 401) and (err.vendor_code or "") in REVOKED_CODES


async def token_request(
    http: ProviderHTTP,
    url: str,
    form: Mapping[str, str],
    *,
    operation: str = "oauth.refresh",
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
    guard: bool = False,
    credential: str | None = None,
) -> Tokens:
    """One renewal at a token endpoint. A renewal may be repeated safely (it makes a new
    access token, nothing else), so it carries an idempotency key and the layer retries
    it; a refused grant raises GrantRevoked, other failures ProviderError."""
    try:
        answer = await http.request(
            "POST",
            url,
            operation=operation,
            data=urlencode(dict(form)),
            params=params,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
                **(headers or {}),
            },
            idempotency_key=generate_token(24),
            guard_url=guard,
            credential=credential,
            own_credential=credential is not None,
        )
    except ProviderError as err:
        if revoked(err):
            raise GrantRevoked(http.name, err.vendor_code or "invalid_grant", str(err)) from None
        raise
    try:
        return Tokens.of(answer.json())
    except ValueError:
        raise ProviderError(http.name, operation, message="no access token") from None


async def refresh_tokens(
    http: ProviderHTTP,
    token_endpoint: str,
    *,
    client_id: str,
    client_secret: str,
    refresh_token: str,
    guard: bool = False,
) -> Tokens:
    """A new access token for an offline grant (`grant_type=refresh_token`)."""
    return await token_request(
        http,
        token_endpoint,
        {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": client_id,
            "client_secret": client_secret,
        },
        guard=guard,
        credential=f"{client_id}:{refresh_token}",
    )


async def revoke_token(
    http: ProviderHTTP,
    url: str,
    token: str,
    *,
    headers: Mapping[str, str] | None = None,
    guard: bool = False,
) -> None:
    """Withdraw a token (RFC 7009: `token=` form-encoded). A token the provider no longer
    knows is as good as revoked."""
    try:
        await http.request(
            "POST",
            url,
            operation="oauth.revoke",
            data=urlencode({"token": token}),
            headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {})},
            idempotency_key=generate_token(24),
            guard_url=guard,
        )
    except ProviderError as err:
        if err.status == 400 or revoked(err):
            return
        raise


class TokenSource(Protocol):
    """Where an `OAuthApiClient` gets its access token (the gateway's connected account)."""

    @property
    def key(self) -> str:
        """Stable per account: its breaker and rate budget (never a token)."""
        ...

    async def token(self) -> str:
        """A live access token (renewed first when it is about to expire)."""
        ...

    async def renewed(self, stale: str) -> str:
        """A new access token, the vendor having refused `stale` (unless another caller
        already renewed it since: then that one)."""
        ...


class OAuthApiClient:
    """One connected account's view of a vendor API. Cheap to build per call; the session
    (`http`) is shared. Every call carries the account's access token; a 401 renews it
    once (single flight, `TokenSource.renewed`) and the call is made again."""

    API_URL = ""
    parse_error: ErrorParser = staticmethod(default_error_parser)

    def __init__(
        self,
        http: ProviderHTTP,
        tokens: TokenSource,
        *,
        base_url: str | None = None,
        labels: Mapping[str, str] | None = None,
        guard_url: bool = False,
    ) -> None:
        self.http = http
        self.tokens = tokens
        self.base_url = (base_url or self.API_URL).rstrip("/")
        self.labels = dict(labels or {})
        self.guard_url = guard_url

    def __repr__(self) -> str:  # never a token
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    async def call(
        self,
        method: str,
        path: str,
        operation: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        idempotency_key: str | None = None,
        timeouts: Timeouts | None = None,
    ) -> ProviderResponse:
        token = await self.tokens.token()
        for attempt in (1, 2):
            try:
                return await self.http.request(
                    method,
                    f"{self.base_url}{path}",
                    operation=operation,
                    credential=self.tokens.key,
                    own_credential=True,
                    headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                    params=params,
                    json=json,
                    idempotency_key=idempotency_key,
                    timeouts=timeouts,
                    parse_error=self.parse_error,
                    labels=self.labels,
                    guard_url=self.guard_url,
                )
            except ProviderError as err:
                if err.status != 401 or attempt == 2:
                    raise
                token = await self.tokens.renewed(token)  # expired or withdrawn mid-way
        raise AssertionError("unreachable")
